"""One call of each op on one backend, checked, for tools that watch a whole process:
compute-sanitizer (memcheck, racecheck, initcheck, synccheck) and Nsight Compute (ncu).

    python -m bench.one_step                                  # small shapes, every op, fwd+bwd
    python -m bench.one_step --shape headline --ops fade --dtype bfloat16     # what ncu profiles
    python -m bench.one_step --backend mmcv --ops carafe_g1 carafe_g4         # mmcv's CARAFE

Ops: ``fade``, ``fade_lite`` (the modules) and ``carafe_g1`` / ``carafe_g4`` (standalone CARAFE,
groups 1 and 4, softmax-normalised masks). Each is run ``--repeat`` times (forward, or forward
and backward), then its output and gradients are compared with the ``torch`` backend on the
same inputs; a mismatch or a non-finite value exits with status 1, so a run under a sanitizer
that corrupts memory fails here too. Outputs and gradients start as NaN (``--poison``, the
default) wherever the op allocates with ``torch.empty``, so an element no kernel writes is seen.
``bench/gpu_session.sh sanitize|ncu`` runs it under the tools. On CPU it runs the Triton
kernels in Triton's interpreter (set ``TRITON_INTERPRET=1``): a dry run of the same script.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import replace

import torch

import fade_triton as ft
from fade_triton.profiling import nan_filled_empty

from .aot import HEADLINE
from .cases import Case
from .check import compare, evaluate, output_grad
from .providers import build, make_inputs

SHAPES = {  # (batch, channels, decoder size): small for the sanitizers, headline for ncu
    "small": Case("fade", 2, 16, 8, embed=16),
    "headline": Case("fade", **HEADLINE),
}
OPS = ("fade", "fade_lite", "carafe_g1", "carafe_g4")


def carafe_problem(case: Case, groups: int, device: torch.device):
    """``(features, masks, grad)`` for standalone CARAFE at the case's shape: K = case.kernel,
    masks softmax-normalised per group, as a kernel generator would give them."""
    dtype, k2, hi = getattr(torch, case.dtype), case.kernel ** 2, case.size * case.scale
    gen = torch.Generator(device).manual_seed(3)
    x = torch.randn(case.batch, case.channels, case.size, case.size, generator=gen, device=device, dtype=dtype)
    logits = torch.randn(case.batch, groups, k2, hi, hi, generator=gen, device=device, dtype=torch.float32)
    masks = logits.softmax(2).reshape(case.batch, groups * k2, hi, hi).to(dtype)
    grad = torch.randn(case.batch, case.channels, hi, hi, generator=gen, device=device, dtype=dtype)
    if case.layout == "channels_last":
        x, masks, grad = (t.to(memory_format=torch.channels_last) for t in (x, masks, grad))
    return x, masks, grad


def run_carafe(case: Case, groups: int, backend: str, device: torch.device, repeat: int, poison: bool):
    x, masks, grad = carafe_problem(case, groups, device)

    def call(b):
        feats, m = x.detach().requires_grad_(), masks.detach().requires_grad_()
        out = ft.carafe(feats, m, case.kernel, groups, case.scale, backend=b)
        if case.mode == "fwd":
            return {"out": out.detach()}
        out.backward(grad)
        return {"out": out.detach(), "grad features": feats.grad, "grad masks": m.grad}

    with nan_filled_empty() if poison else contextlib.nullcontext():
        for _ in range(repeat):
            got = call(backend)
    return got, call("torch")


def run_module(case: Case, backend: str, device: torch.device, repeat: int, poison: bool):
    grad = output_grad(case, device) if case.mode == "fwd+bwd" else None
    results = []
    for b in (backend, "torch"):
        module, fn = build(b, case, device)
        torch.manual_seed(1)
        en, de = make_inputs(case, device, grad is not None)
        with nan_filled_empty() if poison and b == backend else contextlib.nullcontext():
            for _ in range(repeat if b == backend else 1):
                got = evaluate(module, fn, en, de, grad)
        results.append(got)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.one_step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=SHAPES, default="small")
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    parser.add_argument("--backend", default="triton", choices=("triton", "torch", "naive", "mmcv"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--layout", default="nchw", choices=("nchw", "channels_last"))
    parser.add_argument("--mode", default="fwd+bwd", choices=("fwd", "fwd+bwd"))
    parser.add_argument("--repeat", type=int, default=1, help="calls per op before the check (default 1)")
    parser.add_argument("--no-poison", dest="poison", action="store_false",
                        help="leave torch.empty alone (poisoning adds a fill kernel per allocation)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    failed = 0
    for op in args.ops:
        base = replace(SHAPES[args.shape], dtype=args.dtype, layout=args.layout, mode=args.mode)
        if op.startswith("carafe"):
            case = replace(base, op="carafe")
            got, ref = run_carafe(case, int(op.removeprefix("carafe_g")), args.backend, device, args.repeat,
                                  args.poison)
        else:
            case = replace(base, op=op)
            got, ref = run_module(case, args.backend, device, args.repeat, args.poison)
        if device.type == "cuda":
            torch.cuda.synchronize()
        row = compare(got, ref, args.dtype)
        status = row.get("status", "ok")
        failed += status != "ok"
        grad_err = row.get("grad_rel_err_vs_torch")
        print(f"{op:10s} {args.backend} {case.label()}: {status}; rel. error vs torch: output "
              f"{row['rel_err_vs_torch']:.1e}" + (f", worst gradient {grad_err:.1e}" if grad_err is not None else "")
              + (f" ({row['reason']})" if status != "ok" else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
