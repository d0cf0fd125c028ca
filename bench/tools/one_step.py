"""One call of each op on one backend, checked, for tools that watch a whole process:
compute-sanitizer (memcheck, racecheck, initcheck, synccheck) and Nsight Compute (ncu).

    python -m bench.tools.one_step                                # small shapes, every op, fwd+bwd
    python -m bench.tools.one_step --shape headline --ops fade --dtype bfloat16   # what ncu profiles
    python -m bench.tools.one_step --backend mmcv --ops carafe --groups 1 4      # mmcv's CARAFE

Ops: those of ``bench.cases.OPS`` (``fade``, ``fade_lite``, and ``carafe`` once per ``--groups``,
softmax-normalised masks). Each is run ``--repeat`` times (forward, or forward and backward),
then its output and gradients are compared with the ``torch`` backend on the same inputs; a
mismatch or a non-finite value exits with status 1, so a run under a sanitizer that corrupts
memory fails here too. Outputs and gradients start as NaN (``--poison``, the default) wherever
the op allocates with ``torch.empty``, so an element no kernel writes is seen.
``bench/tools/gpu_session.sh sanitize|ncu`` runs it under the tools. On CPU it runs the Triton
kernels in Triton's interpreter (set ``TRITON_INTERPRET=1``): a dry run of the same script.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import replace

import torch

from fade_triton.testing import nan_filled_empty

from ..cases import HEADLINE, OPS, Case, make_inputs
from ..check import compare, evaluate, output_grad
from ..providers import build

SHAPES = {  # (batch, channels, decoder size): small for the sanitizers, headline for ncu
    "small": Case("fade", 2, 16, 8, embed=16),
    "headline": Case("fade", **HEADLINE),
}


def run_op(case: Case, backend: str, device: torch.device, repeat: int, poison: bool):
    """(the backend's results, the torch path's) on the same inputs and weights."""
    grad = output_grad(case, device) if case.mode == "fwd+bwd" else None
    results = []
    for b in (backend, "torch"):
        module, fn = build(b, case, device)
        inputs = make_inputs(case, device, grad is not None)
        with nan_filled_empty() if poison and b == backend else contextlib.nullcontext():
            for _ in range(repeat if b == backend else 1):
                got = evaluate(module, fn, inputs, OPS[case.op].names, grad)
        results.append(got)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tools.one_step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=SHAPES, default="small")
    parser.add_argument("--ops", nargs="+", choices=list(OPS), default=list(OPS))
    parser.add_argument("--groups", nargs="+", type=int, default=[1, 4], help="carafe's mask groups (default 1 4)")
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
    base = replace(SHAPES[args.shape], dtype=args.dtype, layout=args.layout, mode=args.mode)
    cases = [replace(base, op=op, groups=g) for op in args.ops for g in (args.groups if op == "carafe" else [1])]
    for case in cases:
        op = case.op + (f"_g{case.groups}" if case.op == "carafe" else "")
        got, ref = run_op(case, args.backend, device, args.repeat, args.poison)
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
