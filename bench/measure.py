"""Latency, peak memory and machine rates.

Latency: on GPU ``triton.testing.do_bench`` (CUDA events, warm-up excluded, median and
20th/80th percentiles), cycling through enough input sets to exceed the L2 cache; on CPU a
wall clock over repeats (median, 20th/80th percentiles) after one warm-up call.
Peak memory above the inputs: ``fade_triton.profiling.peak_memory`` (CUDA allocator
statistics on GPU, the profiler's allocation records on CPU).
"""
from __future__ import annotations

import statistics
import time

import torch

L2_BYTES = 100 * 2**20  # inputs rotated until they exceed this (H100/H200 L2 is 50 MiB)


def rotating(fn, input_sets, grad=None):
    """A no-argument callable that runs ``fn`` on the next input set each call (and its
    backward with ``grad`` when given)."""
    state = {"i": 0}

    def call():
        en, de = input_sets[state["i"] % len(input_sets)]
        state["i"] += 1
        out = fn(en, de)
        if grad is not None:
            out.backward(grad)
        return out

    return call


def n_input_sets(bytes_per_set: int, device: torch.device) -> int:
    return 1 if device.type == "cpu" else max(1, min(8, -(-L2_BYTES // max(bytes_per_set, 1))))


def latency(call, device: torch.device, cpu_min_seconds: float = 0.3, cpu_max_repeats: int = 20):
    """(median, p20, p80) in milliseconds."""
    if device.type == "cuda":
        from triton.testing import do_bench

        med, p20, p80 = do_bench(call, warmup=25, rep=200, quantiles=[0.5, 0.2, 0.8])
        return med, p20, p80
    call()  # warm-up
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < cpu_min_seconds and len(times) < cpu_max_repeats):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=10, method="inclusive")
    return statistics.median(times), q[1], q[7]


def machine_rates(device: torch.device, dtype: torch.dtype) -> dict:
    """Measured copy bandwidth (bytes/s, read + write) and matmul rate (FLOP/s) in ``dtype``
    (float32 matmuls follow torch.backends.cuda.matmul.allow_tf32, as set by the caller)."""
    n_bytes = (1 << 30) if device.type == "cuda" else (1 << 27)
    src = torch.empty(n_bytes // 4, device=device).uniform_()
    dst = torch.empty_like(src)
    copy_ms = latency(lambda: dst.copy_(src), device)[0]
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    mm_ms = latency(lambda: a @ b, device)[0]
    return {"bandwidth": 2 * n_bytes / (copy_ms * 1e-3), "flop_rate": 2 * n**3 / (mm_ms * 1e-3),
            "bandwidth_method": f"copy of {n_bytes >> 20} MiB", "flop_rate_method": f"{n}x{n} matmul, {dtype}"}
