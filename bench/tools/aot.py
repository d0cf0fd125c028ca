"""Compile report: what every Triton kernel the package launches compiles to, without a GPU.

``python -m bench.tools.aot`` runs the public API (every op of ``bench.cases.OPS``: ``FADE``,
``FADELite``, ``carafe`` with 4 groups; forward, and forward+backward) on CPU tensors at the
headline case (``bench.cases.HEADLINE``: B=8, C=256, E=64, K=5, scale 2, de 64x64 -> en 128x128)
with every Triton launch *recorded instead of run* (``fade_triton.testing.recorded_launches``
under ``simulated_gpu``), so the list of kernels is whatever the code launches, never a
hand-kept list. Each distinct launch is
compiled ahead of time for sm_90 (H100/H200) and sm_80 (A100) with the ptxas bundled in
the triton wheel, and the report gives per kernel: registers, spill stores/loads, stack,
shared memory, warps, tensor-core instructions (wgmma / mma in the PTX), the global loads by
width, the grid, and the occupancy those imply (H100 for sm_90, A100 for sm_80); and the speed
model's estimate (``sass_model``: issue floor, DRAM time, latency-aware time, load pipelining).

Writes ``compile_report.csv`` (``--out``, default ``bench/results/aot-<date>/``) and prints a
table. Exits non-zero when a kernel fails to compile, spills (stack or spill bytes > 0) or has
a 32-bit multiply of a size or stride that can pass 2**31 (``i32_index_muls``, ``BOUNDED_ARGS``).
Triton's compile cache keeps reruns fast; ptxas -v runs on the cached PTX.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import torch

from fade_triton.testing import Launch, recorded_launches, simulated_gpu

from ..cases import HEADLINE, OPS, Case, make_inputs
# (SMs, registers per SM, shared memory per SM in bytes, max warps per SM, max blocks per SM)
GPUS = {90: ("H100", 132, 65536, 228 * 1024, 64, 32), 80: ("A100", 108, 65536, 164 * 1024, 64, 32)}
FIELDS = ["kernel", "op", "mode", "dtype", "layout", "arch", "config", "grid", "programs", "regs", "spill_stores",
          "spill_loads", "stack", "smem", "warps", "tensor_core", "global_loads", "i32_index_muls", "occupancy", "gpu",
          "status"]
# the speed model's columns (bench/tools/sass_model.py), after the compile report's own
MODEL_FIELDS = ["warp_instructions", "issue_floor_us", "dram_us", "latency_us", "estimate_us", "bound", "pipelining"]



_DEF = re.compile(r"^\s*(%[\w.]+)(?::(\d+))?\s*=\s*([\w.]+)(.*)$")
_ARG = re.compile(r"%([A-Za-z_]\w*): i32\b")
# Arguments whose 32-bit products are bounded by a host-side check, per kernel: sizes and strides
# of the weights (packed: 9 x C x KP, checked < 2**31 elements by ``ops.fade.fold.pack_weights``
# and ``ops.conv3x3.conv3x3_weight_grad``), channel counts, a row chunk's or strip's height (its start is a
# row index < H), the window radius R = K // 2 (a neighbour's row or column times s is an
# output coordinate, < OH or OW), and the output gradient's row and column strides in the feature
# gradient (K * s times either < 2**31, checked by ``ops.reassemble_bwd.reassemble_bwd``). Every other size or stride argument may reach 2**31 in a product.
BOUNDED_ARGS = {
    "conv3x3_kernel": {"stride_wt", "stride_wi", "stride_wo", "stride_tb"},
    "conv3x3_weight_grad_kernel": {"C", "N"},
    "unfold_weight_grad_kernel": {"C", "E", "K2", "stride_wk_k", "stride_wk_e", "stride_wk_t"},
    "reassemble_fwd_kernel": {"C_GROUP", "GROUPS", "SPLITS", "C_SPLIT", "R"},
    "reassemble_fwd_dot_kernel": {"C_GROUP", "GROUPS", "SPLITS", "C_SPLIT"},
    "reassemble_bwd_dot_kernel": {"C_GROUP", "GROUPS"},
    "reassemble_bwd_feat_dot_kernel": {"C_GROUP", "GROUPS", "STRIP"},
    "reassemble_bwd_kernel": {"C_GROUP", "GROUPS", "R"},
    "reassemble_bwd_feat_kernel": {"C_GROUP", "GROUPS", "SPLITS", "C_SPLIT", "R", "stride_dh", "stride_dw", "stride_mc"},
}
_BOUNDING = {"arith.divsi", "arith.divui", "arith.remsi", "arith.remui", "arith.extsi", "arith.extui",
             "arith.cmpi", "tt.get_program_id"}


def i32_index_muls(ttgir: str, kernel: str = "") -> list:
    """The 32-bit multiplies in a kernel's TTGIR that involve a size or stride argument (an i32
    kernel argument, or a 32-bit value computed from one), as source locations: the products
    that can pass 2**31 and wrap. A value stops counting as derived once it is widened to 64
    bits or is a quotient, remainder or comparison (bounded by what it divides: program
    indices, tile positions). The kernels compute every such product in 64 bits, so the report
    requires none."""
    bounded = BOUNDED_ARGS.get(kernel, set())
    header = re.search(r"tt\.func public @\w+\((.*?)\) attributes", ttgir, re.S) or re.search(r"tt\.func public @\w+\((.*)", ttgir)
    tainted = {"%" + name for name in _ARG.findall(header.group(1)) if name not in bounded}
    locs = dict(re.findall(r"^(#loc\d+) = loc\((\"[^\"]*\":\d+:\d+)\)", ttgir, re.M))
    found = []
    for line in ttgir.splitlines():
        m = _DEF.match(line)
        if not m:
            continue
        result, _, op, rest = m.groups()
        operands = set(re.findall(r"%[\w.]+", rest.split(" : ")[0].split(" loc(")[0]))
        rtype = rest.rsplit(" : ", 1)[-1] if " : " in rest else ""
        hit = bool(operands & tainted)
        is_i32 = bool(re.search(r"(?:\bi32\b|xi32[,>])", rtype)) and "i64" not in rtype
        if hit and op == "arith.muli" and is_i32:
            loc = re.search(r"loc\((#loc\d+)\)\s*$", line)
            found.append(locs.get(loc.group(1), line.strip()[:120]) if loc else line.strip()[:120])
        if hit and is_i32 and op not in _BOUNDING:
            tainted.add(result)
    return found


def launch_key(launch: Launch):
    """What makes two launches compile to the same code: kernel, configuration, argument kinds."""
    cfg = sorted((k, str(v)) for k, v in launch.kwargs.items())
    spec = tuple((type(a).__name__, getattr(a, "dtype", None), _divisibility(a)) for a in launch.args)
    return (launch.name, tuple(cfg), spec)


def _divisibility(a):
    """What Triton specializes an argument on: 1, divisible by 16, or neither (tensors: aligned)."""
    if isinstance(a, torch.Tensor):
        return "ptr"
    if isinstance(a, bool) or not isinstance(a, int):
        return repr(a)
    return "1" if a == 1 else ("16" if a % 16 == 0 else "n")


def record_headline(ops, modes, dtypes, layouts, arch: int = 90) -> list[Launch]:
    """Run the public API at the headline case and return every launch it makes (not run), as
    on a GPU of compute capability ``arch``."""
    launches: list[Launch] = []
    for op in ops:
        for dtype in dtypes:
            for layout in layouts:
                for mode in modes:
                    case = Case(op, dtype=dtype, layout=layout, mode=mode, groups=4 if op == "carafe" else 1,
                                **HEADLINE)
                    labels = dict(op=op, mode=mode, dtype=dtype, layout=layout, arch=arch)
                    with simulated_gpu(arch), recorded_launches(run=False, labels=labels, keep_args=True) as recorded:
                        _call(case)
                    launches += recorded
    return launches


def _call(case: Case):
    grad = case.mode == "fwd+bwd"
    inputs = make_inputs(replace(case, dtype="float32"), "cpu", False)  # random values: cheap in float32
    inputs = [t.to(getattr(torch, case.dtype)).requires_grad_(grad) for t in inputs]
    module = OPS[case.op].build(case).to(getattr(torch, case.dtype))
    module.backend = "triton"
    with torch.set_grad_enabled(grad):
        out = module(*inputs)
        if grad:
            out.backward(torch.empty_like(out))


def compile_launch(launch: Launch, arch: int, keep_model: bool = False) -> dict:
    """Compile one launch for sm_<arch>; resource usage from ``ptxas -v`` on its PTX, and the
    speed model's estimate (``sass_model``; ``keep_model``: keep its inputs in ``_model``)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    from . import sass_model

    kernel = launch.kernel
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    kwargs = {"debug": False, **launch.kwargs}
    bound, spec, opts = binder(*launch.args, **kwargs)
    options, sig, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, spec, opts)
    compiled = triton.compile(ASTSource(kernel, sig, constexprs, attrs), target=target, options=options.__dict__)
    ptx = compiled.asm["ptx"]
    narrow = i32_index_muls(compiled.asm["ttgir"], launch.name)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.ptx"
        path.write_text(ptx)
        gpu_arch = f"sm_{arch}a" if arch == 90 else f"sm_{arch}"
        # the flags Triton's own build passes (triton/backends/nvidia/compiler.py, make_cubin)
        flags = ["-lineinfo", "-v", "--regAllocOptLevel=2", f"--gpu-name={gpu_arch}"]
        log = subprocess.run([get_ptxas(arch).path, *flags, str(path), "-o", os.devnull],
                             capture_output=True, text=True, check=True).stderr
    regs = int(re.findall(r"Used (\d+) registers", log)[-1])
    stack, st, ld = map(int, re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                                        log)[-1])
    loads = re.findall(r"ld\.global(?:\.[a-z]+)*?\.((?:v\d\.)?[bfsu]\d+)", ptx)
    widths = {w: loads.count(w) for w in sorted(set(loads))}
    smem = compiled.metadata.shared
    warps = compiled.metadata.num_warps
    tc = [f"{name} {len(re.findall(pattern, ptx))}" for name, pattern in (("wgmma", r"wgmma\.mma_async"),
                                                                          ("mma", r"\bmma\.sync"))]
    tc = ", ".join(t for t in tc if not t.endswith(" 0")) or "none"
    name, sms, regs_sm, smem_sm, warps_sm, blocks_sm = GPUS[arch]
    warp_regs = -(-regs * 32 // 256) * 256
    blocks = min(blocks_sm, warps_sm // warps, regs_sm // (warp_regs * warps),
                 smem_sm // smem if smem else blocks_sm)
    programs = launch.grid[0] * (launch.grid[1] if len(launch.grid) > 1 else 1) * (launch.grid[2] if len(launch.grid) > 2 else 1)
    config = " ".join(f"{k}={v}" for k, v in launch.kwargs.items() if k.isupper() or k in ("num_warps", "num_stages"))
    try:  # the estimate is extra: a failure of the model leaves the compile report as it was
        model = sass_model.estimate_compiled(launch, compiled, blocks, arch, keep=keep_model)
    except Exception as err:  # noqa: BLE001
        model = {"bound": f"model failed: {type(err).__name__}: {err}"[:200]}
    return dict(launch.labels, **model, kernel=launch.name, arch=f"sm_{arch}", config=config, grid="x".join(map(str, launch.grid)),
                programs=programs, regs=regs, spill_stores=st, spill_loads=ld, stack=stack, smem=smem, warps=warps,
                tensor_core=tc, global_loads=" ".join(f"{n}x{w}" for w, n in widths.items()),
                occupancy=f"{blocks * warps}/{warps_sm} warps ({100 * blocks * warps / warps_sm:.0f}%), "
                          f"{programs / (blocks * sms):.1f} waves",
                i32_index_muls=len(narrow), gpu=name,
                status="SPILLS" if stack or st or ld else (f"I32_INDEX at {sorted(set(narrow))}" if narrow else "ok"))


_TASKS: list = []  # (launch, arch), filled before the worker processes fork


def _compile_task(index):
    launch, arch = _TASKS[index]
    try:
        return compile_launch(launch, arch)
    except Exception as err:  # a failed compile is a row of the report, and a failure of the run
        return dict(launch.labels, kernel=launch.name, arch=f"sm_{arch}", status=f"FAILED: "
                    f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}")


def report(ops, modes, dtypes, layouts, archs, jobs=2):
    """Record, deduplicate, compile; returns the report rows (one per launch x arch)."""
    unique: dict = {}
    for arch in archs:  # the launchers pick tiles per compute capability
        for launch in record_headline(ops, modes, dtypes, layouts, arch):
            unique.setdefault((arch, launch_key(launch)), launch)
    _TASKS[:] = [(launch, launch.labels["arch"]) for launch in unique.values()]
    if jobs > 1:  # forked workers inherit the recorded launches (kernels and tensors do not pickle)
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            rows = list(pool.map(_compile_task, range(len(_TASKS))))
    else:
        rows = [_compile_task(i) for i in range(len(_TASKS))]
    return sorted(rows, key=lambda r: (r["arch"], r["kernel"], r["op"], r["mode"], r["dtype"], r["layout"]))


def print_rows(rows):
    cols = [("kernel", 30), ("op", 9), ("dtype", 8), ("layout", 13), ("arch", 5), ("regs", 4), ("spill_stores", 5),
            ("spill_loads", 5), ("stack", 5), ("smem", 6), ("tensor_core", 14), ("occupancy", 30), ("status", 6)]
    print(" ".join(f"{name[:w]:>{w}}" if name in ("regs", "spill_stores", "spill_loads", "stack", "smem")
                   else f"{name[:w]:{w}}" for name, w in cols))
    for r in rows:
        print(" ".join(f"{str(r.get(name, '')):>{w}}" if name in ("regs", "spill_stores", "spill_loads", "stack", "smem")
                       else f"{str(r.get(name, ''))[:w]:{w}}" if name != "status" else str(r.get(name, ""))
                       for name, w in cols))


def summary_for_results() -> Path | None:
    """The newest committed compile report (``bench/results/aot-*/compile_report.csv``), which
    ``python -m bench`` copies beside its timings; None if there is none."""
    reports = sorted((Path(__file__).parent.parent / "results").glob("aot-*/compile_report.csv"))
    return reports[-1] if reports else None


def main(argv=None):
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("bench.tools.aot compiles kernels: unset TRITON_INTERPRET")
    # FP contraction on, as Triton <= 3.9 defaults to and as the package runs (silences 3.9's notice)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    parser = argparse.ArgumentParser(prog="python -m bench.tools.aot", formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description=__doc__)
    parser.add_argument("--ops", nargs="+", default=list(OPS), choices=list(OPS),
                        help="ops to record (default: all; carafe with 4 mask groups)")
    parser.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"],
                        help="forward only, or forward and backward (default: both)")
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float16", "float32"],
                        choices=["bfloat16", "float16", "float32"], help="input dtypes (default: all three)")
    parser.add_argument("--layouts", nargs="+", default=["nchw", "channels_last"], choices=["nchw", "channels_last"],
                        help="memory layouts of en and de (default: both)")
    parser.add_argument("--arch", nargs="+", type=int, default=[90, 80], choices=sorted(GPUS),
                        help="compute capabilities to compile for (default: 90 80)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compile processes")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for compile_report.csv (default: bench/results/aot-<date>/)")
    args = parser.parse_args(argv)
    rows = report(args.ops, args.modes, args.dtypes, args.layouts, args.arch, args.jobs)
    out = args.out or Path("bench/results") / f"aot-{dt.date.today().isoformat()}"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "compile_report.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS + MODEL_FIELDS)
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in FIELDS + MODEL_FIELDS} for r in rows)
    print_rows(rows)
    bad = [r for r in rows if r["status"] != "ok"]
    import triton

    print(f"\n{len(rows)} compiles (triton {triton.__version__}, torch {torch.__version__}); wrote {out / 'compile_report.csv'}")
    if bad:
        print(f"{len(bad)} failed or spilled", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
