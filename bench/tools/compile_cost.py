"""What compiling and exporting FADE costs on this machine: ``python -m bench.tools.compile_cost``.

For each channel count: the wall time of the first ``torch.compile(FADE(C), fullgraph=True)``
(``--backend``, default inductor)
forward + backward (the compile), then the median time per forward + backward of the eager
module and of the compiled one (``bench.measure.cpu_latency``'s stopping rule, on whatever
device is asked for), and, with ``--export``, the wall time of a dynamo ONNX export of the
module (``torch.onnx.export(..., dynamo=True)``; needs the ``[export]`` extra). Every number is
printed with the torch version, device and thread count it was taken with; docs/DEPLOY.md
quotes them. On CPU the module runs the ``torch`` backend.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

import fade_triton as ft
from bench.measure import cpu_latency


def fwd_bwd(module, en, de, grad):
    """One forward + backward of ``module`` with fresh gradients."""
    def step():
        for t in (en, de, *module.parameters()):
            t.grad = None
        module(en, de).backward(grad)
    return step


def measure(channels: int, batch: int, size: int, export: bool, backend: str = "inductor") -> dict:
    """Compile time, eager and compiled ms per forward + backward, and optionally ONNX export time."""
    torch.manual_seed(0)
    module = ft.FADE(channels)
    en = torch.randn(batch, channels, 2 * size, 2 * size, requires_grad=True)
    de = torch.randn(batch, channels, size, size, requires_grad=True)
    grad = torch.randn_like(en)
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend=backend)
    t0 = time.perf_counter()
    fwd_bwd(compiled, en, de, grad)()
    row = {"compile_s": time.perf_counter() - t0,
           "eager_ms": cpu_latency(fwd_bwd(module, en, de, grad))["ms_median"],
           "compiled_ms": cpu_latency(fwd_bwd(compiled, en, de, grad))["ms_median"]}
    if export:
        with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
            t0 = time.perf_counter()
            torch.onnx.export(module.eval(), (en.detach(), de.detach()), str(Path(tmp) / "fade.onnx"),
                              dynamo=True, opset_version=18)
            row["onnx_export_s"] = time.perf_counter() - t0
    return row


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.tools.compile_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, nargs="+", default=[64, 512])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=16, help="decoder H = W (upsampled x2)")
    p.add_argument("--export", action="store_true", help="also time a dynamo ONNX export (the [export] extra)")
    p.add_argument("--backend", default="inductor", help="torch.compile backend (aot_eager: no code generation)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU ({os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at the start); FADE E=64 K=5, B={args.batch}, {args.size}^2 -> {2 * args.size}^2, "
          "float32")
    for c in args.channels:
        row = measure(c, args.batch, args.size, args.export, args.backend)
        print(f"C={c}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items())
              + f" (load average {os.getloadavg()[0]:.1f} at the end)", flush=True)


if __name__ == "__main__":
    main()
