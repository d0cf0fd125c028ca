"""Tools for tests, the compile report and profiling: one launch recorder, a simulated GPU target,
NaN-poisoned allocations and the relative error the checks use.

- ``recorded_launches(run=True)``: every Triton kernel launch inside the block, as ``Launch``
  records (kernel, arguments, grid); with ``run=False`` nothing is executed.
- ``simulated_gpu(arch)``: inside the block the ``triton`` backend accepts CPU tensors and the
  launchers pick tiles and precision as for a GPU of compute capability ``arch`` (90: H100/H200).
  With ``recorded_launches(run=False)`` this gives the launches a GPU would see, on a CPU
  (``python -m bench.tools.aot`` compiles them; ``bench.tools.host_time`` times the host work).
- ``nan_filled_empty()``: every float ``torch.empty`` / ``empty_like`` starts as NaN, so an output
  element no kernel writes fails any comparison.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from .ops import helpers
from .ops.helpers import Target


@dataclass
class Launch:
    """One ``kernel[grid](*args, **kwargs)``; ``labels``: what the recorder's caller says of it."""

    kernel: object
    args: tuple
    kwargs: dict
    grid: tuple
    labels: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.kernel.fn.__name__


@contextlib.contextmanager
def recorded_launches(run: bool = True, labels: dict | None = None, keep_args: bool = False) -> Iterator[list[Launch]]:
    """Within the block, every Triton kernel launch is appended to the yielded list (grid resolved
    if it was a callable). With ``run=False`` the kernels are not executed (their outputs keep
    whatever ``torch.empty`` gave): the host work of a call alone, or the launches to compile.
    ``keep_args``: keep each launch's arguments (what compiling it needs); off by default, since
    holding the tensors changes what the call does (autograd copies a gradient it does not own
    alone). Works for compiled kernels and under Triton's interpreter."""
    from triton.runtime.jit import JITFunction

    classes = [JITFunction]
    if os.environ.get("TRITON_INTERPRET") == "1":
        from triton.runtime.interpreter import InterpretedFunction

        classes.append(InterpretedFunction)
    launches: list[Launch] = []
    originals = {cls: cls.run for cls in classes}

    def recorder(original):
        def record(self, *args, grid, warmup=False, **kwargs):
            launches.append(Launch(self, args if keep_args else (), kwargs if keep_args else {},
                                   tuple(grid(kwargs) if callable(grid) else grid), dict(labels or {})))
            return original(self, *args, grid=grid, warmup=warmup, **kwargs) if run else None
        return record

    for cls in classes:
        cls.run = recorder(originals[cls])
    try:
        yield launches
    finally:
        for cls, original in originals.items():
            cls.run = original


@contextlib.contextmanager
def simulated_gpu(arch: int = 90) -> Iterator[Target]:
    """Launch as if CPU tensors were on a GPU of compute capability ``arch`` (see the module's
    docstring): tiles for that GPU, float32 dots at PyTorch's convolution precision."""
    saved, helpers.SIMULATED_TARGET = helpers.SIMULATED_TARGET, Target(arch, interpreter=False)
    try:
        yield helpers.SIMULATED_TARGET
    finally:
        helpers.SIMULATED_TARGET = saved


@contextlib.contextmanager
def nan_filled_empty() -> Iterator[None]:
    """Within the block, every float tensor made by ``torch.empty`` / ``torch.empty_like``
    starts as NaN (one fill per allocation), so an output element a kernel forgets to write
    fails any comparison. Restores both functions on exit."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def nan(t):
        return t.fill_(float("nan")) if t.is_floating_point() else t

    torch.empty = lambda *a, **k: nan(real_empty(*a, **k))
    torch.empty_like = lambda *a, **k: nan(real_empty_like(*a, **k))
    try:
        yield
    finally:
        torch.empty, torch.empty_like = real_empty, real_empty_like


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``||out - ref|| / ||ref||`` in float64 (on ``out``'s device); a non-finite ``out`` gives inf."""
    out = out.detach().double()
    ref = ref.detach().double().to(out.device)
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()
