"""Host time per call: ``python -m bench.tools.host_time``.

Runs the ``triton`` path's public calls (``FADE`` / ``FADELite`` forward, and forward +
backward) on CPU tensors with every Triton launch replaced by a no-op
(``fade_triton.testing.recorded_launches(run=False)``) and the launchers set up as on an sm_90
GPU (``fade_triton.testing.simulated_gpu``), and reports the median wall time per call: everything the package does on the
host (argument checks, backend choice, the prepared-weight cache, the operator dispatch,
allocations, launch configuration) except the kernels themselves and Triton's own launcher
(binding the arguments and the driver call, which need a GPU to measure). Shapes are small
so that allocating the outputs costs little; the host work does not depend on them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

import fade_triton as ft
from fade_triton.testing import recorded_launches, simulated_gpu


def per_call_us(fn, repeats: int) -> float:
    for _ in range(20):  # warm-up: first-call caches (weights, dispatch)
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(times)


def measure(repeats: int = 500) -> list[tuple[str, float, int]]:
    """(label, median µs per call, kernel launches per call)."""
    rows = []
    en, de = torch.randn(2, 64, 16, 16), torch.randn(2, 64, 8, 8)
    with simulated_gpu(90), recorded_launches(run=False) as launches:
        for cls in (ft.FADE, ft.FADELite):
            model = cls(64, backend="triton")
            with torch.no_grad():
                launches.clear()
                model(en, de)
                n = len(launches)
                rows.append((f"{cls.__name__} forward", per_call_us(lambda: model(en, de), repeats), n))
            en_g, de_g = en.clone().requires_grad_(), de.clone().requires_grad_()
            grad = torch.randn_like(en)

            def step():
                model(en_g, de_g).backward(grad)
                en_g.grad = de_g.grad = None
                model.zero_grad(set_to_none=True)

            launches.clear()
            step()
            n = len(launches)
            rows.append((f"{cls.__name__} forward+backward", per_call_us(step, repeats // 5), n))
    return rows


def main(argv=None):
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("bench.tools.host_time measures the compiled path's host work: unset TRITON_INTERPRET")
    parser = argparse.ArgumentParser(prog="python -m bench.tools.host_time", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=500, help="timed forward calls (default 500)")
    args = parser.parse_args(argv)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown CPU") if os.path.exists("/proc/cpuinfo") else "unknown CPU"
    print(f"host time per call, kernels replaced by no-ops; {os.cpu_count()} cores ({cpu}), "
          f"torch {torch.__version__}, python {sys.version.split()[0]}")
    for label, us, n in measure(args.repeats):
        print(f"  {label:28s} {us:8.1f} µs   ({n} kernel launches)")


if __name__ == "__main__":
    main()
