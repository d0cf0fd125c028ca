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
    assert kernels == {"conv3x3_kernel", "reassemble_fwd_kernel"}, kernels
    # every dtype x layout compiled (identical launches of FADE and FADE-Lite are compiled once)
    assert {(r["dtype"], r["layout"]) for r in rows} == {(d, l) for d in ("bfloat16", "float32")
                                                         for l in ("nchw", "channels_last")}
    bad = [(r["kernel"], r["op"], r["dtype"], r["layout"], r["status"]) for r in rows if r["status"] != "ok"]
    assert not bad and done.returncode == 0, (bad, done.stderr[-2000:])
    assert all(int(r["spill_stores"]) == int(r["stack"]) == 0 for r in rows)
