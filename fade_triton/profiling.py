"""Memory measurement for memory-profiling experiments (used by bench/, notebooks/, tests/):
``peak_memory`` and ``memory_timeline``.

``peak_memory(fn, device)`` runs ``fn()`` once and returns the peak number of bytes allocated
*during* the call above what was allocated before it (so the inputs do not count; the output
does, while it is alive).

- CUDA: ``torch.cuda.reset_peak_memory_stats`` and ``max_memory_allocated`` minus the
  allocation before the call (the caching allocator's own view, exact per tensor).
- CPU: the PyTorch profiler's allocation records (``profile_memory=True``): every CPU
  allocation and free made through PyTorch's allocator, in order; the running sum's
  maximum is the peak. Memory that bypasses PyTorch's allocator (numpy buffers in Triton's
  interpreter, Python objects) is not seen. The profiler's own messages on the C-level stderr
  are hidden (shown only if the measurement fails); ``quiet=False`` lets them through.

``memory_timeline(fn, device)`` runs ``fn()`` once under the profiler and returns every
allocation and free on ``device`` in order, with the live bytes after each (above what was
allocated before the call): where the peak happens, not only its height.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable

import torch


def peak_memory(fn: Callable[[], object], device: torch.device | str = "cpu", quiet: bool = True) -> int:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    return max([0] + [event["live_bytes"] for event in memory_timeline(fn, device, quiet)])


def memory_timeline(fn: Callable[[], object], device: torch.device | str = "cpu", quiet: bool = True) -> list[dict]:
    """Every allocation (``bytes`` > 0) and free (< 0) on ``device`` during one ``fn()``, in order:
    dicts with ``time_ms`` (since the first event), ``bytes`` and ``live_bytes`` (the running
    sum: bytes allocated during the call and still alive). From the PyTorch profiler's memory
    records (``profile_memory=True``; CUDA events too where the profiler sees the GPU)."""
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    kind = torch.autograd.DeviceType.CUDA if device.type == "cuda" else torch.autograd.DeviceType.CPU
    with captured_stderr() if quiet else contextlib.nullcontext():
        with profile(activities=activities, profile_memory=True) as prof:
            fn()
    records = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.device_type() == kind]
    records.sort(key=lambda e: e.start_ns())
    timeline, live = [], 0
    for e in records:
        live += e.nbytes()
        timeline.append({"time_ms": (e.start_ns() - records[0].start_ns()) / 1e6, "bytes": e.nbytes(),
                         "live_bytes": live})
    return timeline


@contextlib.contextmanager
def captured_stderr():
    """Send file descriptor 2 (C/C++ code writes there too) to a temporary file for the block;
    replay what was written to the real stderr only if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            tmp.seek(0)
            sys.stderr.write(tmp.read().decode(errors="replace"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
