"""Peak-memory measurement for memory-profiling experiments (used by bench/, notebooks/, tests/).

``recorded_triton_launches()`` lists the Triton kernels a block launches (optionally without
running them); ``nan_filled_empty()`` makes ``torch.empty`` / ``empty_like`` return NaN so an
output element no kernel writes shows. ``peak_memory(fn, device)`` runs ``fn()`` once and returns the peak number of bytes allocated
*during* the call above what was allocated before it (so the inputs do not count; the output
does, while it is alive).

- CUDA: ``torch.cuda.reset_peak_memory_stats`` and ``max_memory_allocated`` minus the
  allocation before the call (the caching allocator's own view, exact per tensor).
- CPU: the PyTorch profiler's allocation records (``profile_memory=True``): every CPU
  allocation and free made through PyTorch's allocator, in order; the running sum's
  maximum is the peak. Memory that bypasses PyTorch's allocator (numpy buffers in Triton's
  interpreter, Python objects) is not seen.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import torch


def peak_memory(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = [e for e in prof.profiler.kineto_results.events()
               if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    records.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in records:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


@contextlib.contextmanager
def recorded_triton_launches(run: bool = True) -> Iterator[list]:
    """Within the block, every Triton kernel launch is appended to the yielded list as
    ``(kernel name, grid)``; with ``run=False`` the kernels are not executed (their outputs keep
    whatever ``torch.empty`` gave), which isolates the host work of a call. Works for compiled
    kernels and under Triton's interpreter."""
    from triton.runtime.jit import JITFunction

    classes = [JITFunction]
    if os.environ.get("TRITON_INTERPRET") == "1":
        from triton.runtime.interpreter import InterpretedFunction

        classes.append(InterpretedFunction)
    launches: list = []
    originals = {cls: cls.run for cls in classes}

    def recorder(original):
        def record(self, *args, grid, warmup=False, **kwargs):
            launches.append((self.fn.__name__, grid))
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
