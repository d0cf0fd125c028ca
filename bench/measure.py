"""Latency, wall clock, peak memory and machine rates.

Latency (``ms_*``): on GPU ``triton.testing.do_bench`` (CUDA events, L2 flushed before every
call, warm-up excluded), cycling through enough input sets to exceed the L2 cache; on CPU a
wall clock over back-to-back calls after one warm-up call, repeated until the p20-p80 spread
is small (see ``cpu_latency``). Wall clock per call (``wall_ms``): back-to-back calls on one
input set, no flushes, one synchronisation at the end: what a user's loop sees. On CPU it is
the same clock as the latency (the mean of the same runs).
Peak memory above the inputs: ``fade_triton.profiling.peak_memory`` (quiet: the CPU profiler's
C-level messages are shown only if the measurement fails). Forward FLOPs: what
``torch.utils.flop_counter.FlopCounterMode`` counts in one forward call (``forward_flops``).
Contention: whether other processes took CPU a timing needed (``other_processes_load``,
``contended``).
"""
from __future__ import annotations

import contextlib
import os
import statistics
import time

import torch


L2_BYTES = 100 * 2**20  # inputs rotated until they exceed this (H100/H200 L2 is 50 MiB)
COPY_BYTES = {"cuda": 1 << 30, "cpu": 1 << 27}  # the copy that measures the bandwidth
MATMUL_N = {"cuda": 8192, "cpu": 1024}  # the square matmul that measures the FLOP rate
CONTENTION_MARGIN = 0.25  # see other_processes_load: with every core in use, others above 25% is contention
# CPU stopping rule: at least CPU_MIN_RUNS runs and CPU_MIN_SECONDS, then until the p20-p80
# spread is at most CPU_TARGET_SPREAD of the median, or CPU_MAX_SECONDS have passed (on a
# shared machine the spread may stay wide: more runs then keep a burst of load from moving
# the median, and the plots mark the ratios the spread cannot support).
CPU_MIN_RUNS, CPU_MIN_SECONDS, CPU_MAX_SECONDS, CPU_TARGET_SPREAD = 10, 0.25, 1.0, 0.10


def forward_flops(fn, inputs) -> int:
    """FLOPs of one ``fn(*inputs)`` under ``no_grad`` as ``FlopCounterMode`` counts them:
    convolutions and matrix products, fade_triton's operators by their formulas
    (``fade_triton.flops``); no elementwise work (bilinear interpolation counts 0)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*inputs)
    return counter.get_total_flops()


def timed_call(fn, input_sets, grad=None, params=()):
    """A no-argument callable that runs ``fn`` on the next input set each call: under
    ``no_grad`` when ``grad`` is None, else forward and ``backward(grad)`` after setting the
    gradients of the inputs and ``params`` to None, so no call accumulates into the last's."""
    state = {"i": 0}

    def call():
        inputs = input_sets[state["i"] % len(input_sets)]
        state["i"] += 1
        if grad is None:
            with torch.no_grad():
                return fn(*inputs)
        for t in (*inputs, *params):
            t.grad = None
        with torch.enable_grad():
            out = fn(*inputs)
            out.backward(grad)
        return out

    return call


def n_input_sets(bytes_per_set: int, device: torch.device) -> int:
    return 1 if device.type == "cpu" else max(1, min(8, -(-L2_BYTES // max(bytes_per_set, 1))))


def contended(row: dict) -> bool:
    """Timed while other processes took CPU this one needed (``other_processes_load``)."""
    return bool(row.get("contended"))


def threads_note(threads: int) -> str:
    return f"{threads} torch thread{'s' if threads != 1 else ''}"


def _busy_cpu_seconds() -> float | None:
    """CPU seconds every process on the machine has used since boot (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def other_processes_load(result: dict):
    """Sets ``result["others_cpu"]``, the share of the machine's CPU time that other processes
    used during the block (0 = none, 1 = every core; /proc/stat minus this process's CPU time),
    and ``result["contended"]`` (1 or 0): whether they took more than the cores PyTorch's
    threads leave spare plus CONTENTION_MARGIN of the machine, i.e. CPU this process needed.
    Nothing is set where /proc/stat is not readable."""
    busy, mine, wall = _busy_cpu_seconds(), time.process_time(), time.perf_counter()
    yield
    if busy is not None:
        cores = os.cpu_count() or 1
        others = (_busy_cpu_seconds() - busy) - (time.process_time() - mine)
        result["others_cpu"] = min(1.0, max(0.0, others / ((time.perf_counter() - wall) * cores)))
        spare = max(0, cores - torch.get_num_threads()) / cores
        result["contended"] = int(result["others_cpu"] > spare + CONTENTION_MARGIN)


def _quantiles(times_ms):
    if len(times_ms) < 2:
        return times_ms[0], times_ms[0], times_ms[0]
    q = statistics.quantiles(times_ms, n=10, method="inclusive")
    return statistics.median(times_ms), q[1], q[7]


def cpu_latency(call) -> dict:
    """Back-to-back wall-clock runs after one warm-up, by the CPU stopping rule above."""
    call()
    times, start, next_check = [], time.perf_counter(), CPU_MIN_RUNS
    while True:
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
        elapsed = time.perf_counter() - start
        if len(times) < next_check or elapsed < CPU_MIN_SECONDS:
            continue
        med, p20, p80 = _quantiles(times)
        if p80 - p20 <= CPU_TARGET_SPREAD * med or elapsed >= CPU_MAX_SECONDS:
            return {"ms_median": med, "ms_p20": p20, "ms_p80": p80, "runs": len(times),
                    "wall_ms": statistics.fmean(times)}
        next_check = len(times) + max(1, len(times) // 5)  # quantiles every 20% more runs


def gpu_wall_ms(call, device: torch.device, seconds: float = 0.1) -> float:
    """Mean wall-clock time per call of back-to-back calls, one synchronisation at the end."""
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    call()
    torch.cuda.synchronize(device)
    n = max(5, min(1000, int(seconds / max(time.perf_counter() - t0, 1e-6))))
    t0 = time.perf_counter()
    for _ in range(n):
        call()
    torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) * 1e3 / n


def latency(call, device: torch.device, back_to_back=None) -> dict:
    """``ms_median``, ``ms_p20``, ``ms_p80``, ``runs``, ``wall_ms`` (per call of
    ``back_to_back``, default ``call``) and ``others_cpu`` (see ``other_processes_load``)."""
    load = {}
    with other_processes_load(load):
        if device.type == "cuda":
            from triton.testing import do_bench

            times = do_bench(call, warmup=25, rep=200, return_mode="all")
            med, p20, p80 = _quantiles(times)
            result = {"ms_median": med, "ms_p20": p20, "ms_p80": p80, "runs": len(times),
                      "wall_ms": gpu_wall_ms(back_to_back or call, device)}
        else:
            result = cpu_latency(call)
    return {**result, **load}


@contextlib.contextmanager
def cuda_matmul_precision(precision: str):
    """Float32 CUDA matmuls in ``precision`` ("tf32" or "ieee") for the block, then restored.
    Uses the newer ``fp32_precision`` API where torch has it (mixing it with the legacy
    ``allow_tf32`` flag is an error in recent torch), else ``allow_tf32``."""
    matmul = torch.backends.cuda.matmul
    new_api = hasattr(matmul, "fp32_precision")
    old = matmul.fp32_precision if new_api else matmul.allow_tf32
    if new_api:
        matmul.fp32_precision = precision
    else:
        matmul.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        if new_api:
            matmul.fp32_precision = old
        else:
            matmul.allow_tf32 = old


def copy_bandwidth(device: torch.device) -> float:
    """Bytes/s (read + write) of a large copy."""
    n_bytes = COPY_BYTES[device.type]
    src = torch.empty(n_bytes // 4, device=device).uniform_()
    dst = torch.empty_like(src)
    return 2 * n_bytes / (latency(lambda: dst.copy_(src), device)["ms_median"] * 1e-3)


def matmul_rate(device: torch.device, dtype: torch.dtype, precision: str) -> float:
    """FLOP/s of a large square matmul in ``dtype``; float32 on CUDA in ``precision``."""
    n = MATMUL_N[device.type]
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    with cuda_matmul_precision(precision) if device.type == "cuda" else contextlib.nullcontext():
        ms = latency(lambda: a @ b, device)["ms_median"]
    return 2 * n**3 / (ms * 1e-3)


def machine_rates(device: torch.device, dtype: torch.dtype, precision: str) -> dict:
    """Measured copy bandwidth and matmul rate for the roofline floor; ``precision`` is the
    float32 precision the kernels run at (ignored for half dtypes and on CPU)."""
    n, used = MATMUL_N[device.type], precision if dtype == torch.float32 else "n/a"
    return {"bandwidth": copy_bandwidth(device), "flop_rate": matmul_rate(device, dtype, precision),
            "precision": used, "bandwidth_method": f"copy of {COPY_BYTES[device.type] >> 20} MiB",
            "flop_rate_method": f"{n}x{n} {str(dtype).removeprefix('torch.')} matmul"
                                + (f", {used.upper()}" if used != "n/a" else "")}
