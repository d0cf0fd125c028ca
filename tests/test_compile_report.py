"""The forward kernels compile for sm_90 (H100/H200) without spills, in bfloat16 and float32,
NCHW and channels_last, at the headline case: ``python -m bench.tools.aot`` (the compile report) on
the kernels the public API launches, run in a subprocess because the tests' own process runs
Triton's interpreter. Needs no GPU: the triton wheel bundles ptxas."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_forward_kernels_compile_for_sm90_without_spills(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "bench.tools.aot", "--ops", "fade", "fade_lite", "carafe", "--modes", "fwd",
           "--dtypes", "bfloat16", "float32", "--layouts", "nchw", "channels_last", "--arch", "90",
           "--out", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    rows = list(csv.DictReader(open(tmp_path / "compile_report.csv")))
    kernels = {r["kernel"] for r in rows}
    assert kernels == {"conv3x3_kernel", "reassemble_fwd_dot_kernel"}, kernels  # float32: TF32, as cuDNN
    # every dtype x layout compiled (identical launches of FADE and FADE-Lite are compiled once)
    assert {(r["dtype"], r["layout"]) for r in rows} == {(d, l) for d in ("bfloat16", "float32")
                                                         for l in ("nchw", "channels_last")}
    bad = [(r["kernel"], r["op"], r["dtype"], r["layout"], r["status"]) for r in rows if r["status"] != "ok"]
    assert not bad and done.returncode == 0, (bad, done.stderr[-2000:])
    assert all(int(r["spill_stores"]) == int(r["stack"]) == 0 for r in rows)
    assert all(int(r["i32_index_muls"]) == 0 for r in rows), [(r["kernel"], r["status"]) for r in rows]
    # the speed model's columns (bench/tools/sass_model.py) are filled for every launch
    assert all(float(r["estimate_us"]) >= max(float(r["issue_floor_us"]), float(r["dram_us"])) > 0 for r in rows), \
        [(r["kernel"], r["bound"]) for r in rows]


# the TTGIR shapes the counter reads (as triton 3.9 prints them), cut down to what matters
TTGIR = """
  tt.func public @k(%x_ptr: !tt.ptr<f32> loc("x_ptr"(#loc)), %H: i32 loc("H"(#loc)), %stride_mc: i32 loc("s"(#loc)),
                    %C: i32 loc("C"(#loc))) attributes {noinline = false} {
    %wide = arith.extsi %stride_mc : i32 to i64 loc(#loc1)
    %ok = arith.muli %wide, %c3_i64 : i64 loc(#loc2)
    %bad = arith.muli %stride_mc, %c3_i32 : i32 loc(#loc3)
    %splat = tt.splat %H : i32 -> tensor<128xi32, #blocked> loc(#loc4)
    %row = arith.addi %splat, %offs : tensor<128xi32, #blocked> loc(#loc5)
    %bad2 = arith.muli %row, %cst : tensor<128xi32, #blocked> loc(#loc6)
    %tile = arith.remsi %pid, %H : i32 loc(#loc7)
    %bounded = arith.muli %tile, %c64_i32 : i32 loc(#loc8)
    %chan = arith.muli %C, %c9_i32 : i32 loc(#loc9)
"""


def test_i32_index_multiplies_are_counted():
    """The compile report's counter: 32-bit products of a size or stride argument, also through
    splats and additions; none once widened to 64 bits, after a remainder, or of an argument
    bounded by a host-side check (``BOUNDED_ARGS``)."""
    from bench.tools.aot import BOUNDED_ARGS, i32_index_muls

    found = i32_index_muls(TTGIR)
    assert [f.split(" =")[0] for f in found] == ["%bad", "%bad2", "%chan"]
    BOUNDED_ARGS["test_kernel"] = {"C"}
    try:
        assert [f.split(" =")[0] for f in i32_index_muls(TTGIR, "test_kernel")] == ["%bad", "%bad2"]
    finally:
        del BOUNDED_ARGS["test_kernel"]
