"""Host time per call: ``python -m bench.tools.host_time``.

Runs the ``triton`` path's public calls (``FADE`` / ``FADELite`` forward, and forward +
backward) on CPU tensors with every Triton launch replaced by a no-op
(``fade_triton.testing.recorded_launches(run=False)``) and the launchers set up as on an sm_90
GPU (``fade_triton.testing.simulated_gpu``), and reports the median wall time per call:
everything the package does on the host (argument checks, backend choice, the prepared-weight
cache, the operator dispatch, allocations, launch configuration) except the kernels themselves
and Triton's own launcher (binding the arguments and the driver call, which need a GPU to
measure). Shapes are small so that allocating the outputs costs little; the host work does not
depend on them. Each row is timed call by call alternately with torch's floor for the same call
(``DoNothing``): the machine's speed drifts 2x from hour to hour, so runs compare by the ratio.
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


def per_call_us(fn, repeats: int, reference=None) -> tuple[float, float | None]:
    """Median µs per call of ``fn`` and, where given, of ``reference`` timed alternately with it
    (call by call, so that a machine whose speed drifts during the run moves both alike)."""
    for _ in range(20):  # warm-up: first-call caches (weights, dispatch)
        fn()
        if reference is not None:
            reference()
    times, ref_times = [], []
    for _ in range(repeats):
        if reference is not None:
            t0 = time.perf_counter()
            reference()
            ref_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(times), 1e6 * statistics.median(ref_times) if ref_times else None


class DoNothing(torch.autograd.Function):
    """torch's own share of a FADE call: an ``autograd.Function`` with the arity of the package's
    (``ops/fade/op.py``, ``FadeFunction``: 9 differentiable tensors, 5 more, 2 scalars; 3 outputs,
    2 of them saved and non-differentiable; 13 tensors saved), whose forward and backward only
    allocate what they return."""

    @staticmethod
    def forward(ctx, *args):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        out, a, b = torch.empty_like(tensors[0]), torch.empty(1), torch.empty(1)
        ctx.mark_non_differentiable(a, b)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*tensors[:11], a, b)
        return out, a, b

    @staticmethod
    def backward(ctx, dout, _a, _b):
        saved = ctx.saved_tensors
        return (*(torch.empty_like(t) for t in saved[:9]), *(None,) * 7)


def training_step(forward, en, de, model):
    """One forward+backward of ``forward(en, de)`` on leaf copies of the inputs, then the
    gradient resets a training step makes (the inputs' and ``model``'s)."""
    en_g, de_g = en.clone().requires_grad_(), de.clone().requires_grad_()
    grad = torch.randn_like(en)

    def step():
        forward(en_g, de_g).backward(grad)
        en_g.grad = de_g.grad = None
        model.zero_grad(set_to_none=True)

    return step


def do_nothing_call(model):
    """``(en, de) -> DoNothing.apply(...)[0]`` on ``model``'s first seven parameters and five
    more tensors: a FADE call's arity."""
    params = list(model.parameters())[:7]
    extras = [torch.empty(1) for _ in range(5)]
    return lambda en, de: DoNothing.apply(en, de, *params, *extras, 2, True)[0]


def torch_floor_step(en, de, model):
    """``training_step`` of ``DoNothing`` on FADE's inputs and the module's parameters: what torch
    takes before the package does anything (machines differ by 2x and more from hour to hour; the
    floor, timed in the same run, is the yardstick)."""
    return training_step(do_nothing_call(model), en, de, model)


def torch_floor_forward(en, de, model):
    """``DoNothing`` called as a forward without autograd (the rows' ``torch.no_grad``): torch's
    share of a FADE forward, an ``autograd.Function`` call of its arity allocating its output."""
    call = do_nothing_call(model)
    return lambda: call(en, de)


def measure(repeats: int = 500) -> list[tuple[str, float, int, float]]:
    """(label, median µs per call, kernel launches per call, torch's floor for the same call
    timed alternately with it)."""
    rows = []
    en, de = torch.randn(2, 64, 16, 16), torch.randn(2, 64, 8, 8)
    with simulated_gpu(90), recorded_launches(run=False) as launches:
        for cls in (ft.FADE, ft.FADELite):
            model = cls(64, backend="triton")
            with torch.no_grad():
                launches.clear()
                model(en, de)
                n = len(launches)
                us, floor = per_call_us(lambda: model(en, de), repeats, torch_floor_forward(en, de, model))
                rows.append((f"{cls.__name__} forward", us, n, floor))
            step = training_step(model, en, de, model)
            launches.clear()
            step()
            n = len(launches)
            us, floor = per_call_us(step, repeats // 5, torch_floor_step(en, de, model))
            rows.append((f"{cls.__name__} forward+backward", us, n, floor))
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
    for label, us, n, floor in measure(args.repeats):
        print(f"  {label:28s} {us:8.1f} µs   ({n:2d} kernel launches); torch's floor {floor:6.1f} µs, "
              f"{us - floor:6.1f} above it ({us / floor:.1f}x)")
    print("  torch's floor: a do-nothing autograd.Function of FADE's arity (forward: called without autograd; "
          "forward+backward: with the same gradient resets), timed call by call alternately with the row")


if __name__ == "__main__":
    main()
