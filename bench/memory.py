"""The memory-experiment kit: memory snapshots per provider and case, and the largest input
that fits a memory budget.

Snapshots (``python -m bench --snapshots``; on by default in the presets that compare
upsamplers), written to ``<out>/memory/``:

- CUDA: ``torch.cuda.memory._record_memory_history`` around one call, then ``_dump_snapshot``:
  a ``.pickle`` to drop into PyTorch's memory viewer (https://pytorch.org/memory_viz), with
  every allocation's stack;
- CPU: the profiler's memory timeline (``fade_triton.profiling.memory_timeline``): a ``.csv``
  of every allocation and free with the live bytes after it.

Budget (``python -m bench --budget 8GiB``): for each provider and case shape, the footprint of
one call (inputs, weights and output gradient, plus ``peak_memory`` above them) is measured at
three small decoder sizes, where it is safe. Every path here is linear in the pixels at a fixed
channel count once past small sizes' fixed costs, so the line through the two largest points,
``fixed + per_pixel * B*H*W``, gives the largest square decoder size (and the largest batch at
the case's size) under the budget. That size is then run and measured where the prediction fits
this machine (on CUDA with the allocator capped at the budget, so nothing allocates past it); each
measurement refines the line and the size, until the line agrees with the largest size measured
under the budget. Otherwise the row says why none was verified. ``budget_sweep.csv`` and
``memory_vs_resolution_budget_*.png`` hold the result.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import re
from pathlib import Path

import torch
from matplotlib.figure import Figure

from fade_triton.profiling import memory_timeline, peak_memory

from .cases import Case, make_inputs
from .providers import DISPLAY, build, skip_reason

SAFE_SIZES = (8, 16, 24)  # decoder sizes measured for the fit
UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
MACHINE_SHARE = 0.5  # verify on CPU only when the prediction is under this share of the memory available


def parse_bytes(text: str) -> int:
    """'8GiB', '512MiB', '2GB', '1000000' -> bytes."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(text))
    if not match or match.group(2).upper() not in UNITS:
        units = ", ".join(u for u in UNITS if u)
        raise ValueError(f"budget must be a number of bytes with an optional unit ({units}), "
                         f"got {text!r}")
    return int(float(match.group(1)) * UNITS[match.group(2).upper()])


def prepared_call(provider: str, case: Case, device: torch.device):
    """(call, resident bytes): one warmed-up call of the provider on the case (forward, or
    forward and backward), and the bytes its inputs, weights and output gradient hold."""
    from . import check, measure

    backward = case.mode == "fwd+bwd"
    module, fn = build(provider, case, device)
    inputs = make_inputs(case, device, backward)
    grad = check.output_grad(case, device) if backward else None
    params = list(module.parameters())
    call = measure.timed_call(fn, [inputs], grad, params)
    call()
    for t in (*inputs, *params):
        t.grad = None
    resident = sum(t.nbytes for t in (*inputs, *params, *([grad] if backward else [])))
    return call, resident


def write_snapshot(call, device: torch.device, stem: Path) -> Path:
    """A memory snapshot of one ``call()`` (see the module docstring); returns the file written."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        torch.cuda.memory._record_memory_history(max_entries=200_000)
        try:
            call()
            torch.cuda.synchronize(device)
            torch.cuda.memory._dump_snapshot(str(stem.with_suffix(".pickle")))
        finally:
            torch.cuda.memory._record_memory_history(enabled=None)
        return stem.with_suffix(".pickle")
    path = stem.with_suffix(".csv")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["time_ms", "bytes", "live_bytes"])
        writer.writeheader()
        writer.writerows(memory_timeline(call, device))
    return path


def snapshot_stem(out_dir: Path, case: Case, provider: str) -> Path:
    return out_dir / "memory" / re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{provider}_{case.label()}")


def footprint(provider: str, case: Case, device: torch.device) -> int:
    """Bytes one call holds at its peak: resident inputs, weights and output gradient plus the
    peak allocated during the call."""
    call, resident = prepared_call(provider, case, device)
    return resident + peak_memory(call, device)


def machine_bytes(device: torch.device) -> int:
    """What this machine can give a verification run: free GPU memory, or a share of the CPU
    memory available (/proc/meminfo)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    return int(available * MACHINE_SHARE)


def line_through(a: tuple, b: tuple) -> tuple[float, float]:
    """(fixed, slope) of the line through two (pixels, bytes) points."""
    slope = (b[1] - a[1]) / (b[0] - a[0])
    return a[1] - slope * a[0], slope


def largest_size(fixed: float, per_pixel: float, budget: int, batch: int) -> int:
    room = (budget - fixed) / per_pixel if per_pixel > 0 else 0
    return math.isqrt(int(room // batch)) if room > 0 else 0


def largest_that_fits(provider: str, case: Case, budget: int, device: torch.device, attempts: int = 4) -> dict:
    """One row of the budget sweep for ``provider`` at ``case``'s shape (its size is used only
    for the largest-batch column). The line through the two largest measured points predicts
    the largest size; that size is measured and becomes a point of the next line, until the
    line agrees with the largest size measured under the budget (small sizes carry fixed costs
    that do not scale, so the points nearest the limit predict best)."""
    points = {s: footprint(provider, dataclasses.replace(case, size=s), device) for s in SAFE_SIZES}
    row = {**case.row(), "provider": provider, "budget_bytes": budget, "safe_sizes": " ".join(map(str, SAFE_SIZES)),
           "safe_bytes": " ".join(map(str, points.values()))}
    best, why_not = None, f"no: still above the budget after {attempts} measurements"
    for _ in range(attempts):
        fixed, per_pixel = line_through(*[(case.batch * s * s, b) for s, b in sorted(points.items())[-2:]])
        size = largest_size(fixed, per_pixel, budget, case.batch)
        row.update(fixed_bytes=round(fixed), bytes_per_pixel=per_pixel,
                   max_batch=int((budget - fixed) / per_pixel // case.size ** 2) if per_pixel > 0 else 0)
        if size == 0 or (best is not None and size <= best[0]):
            why_not = "no: not even 1x1 fits the budget" if best is None else why_not
            break
        predicted = round(fixed + per_pixel * case.batch * size * size)
        if size not in points:
            if predicted > machine_bytes(device):
                why_not = "no: larger than this machine can give"
                break
            try:
                points[size] = within_budget(provider, dataclasses.replace(case, size=size), budget, device)
            except torch.OutOfMemoryError:
                why_not = "no: out of memory at the budget"
                break
        if points[size] <= budget:
            best = (size, predicted, points[size])
    if best is None:
        return {**row, "max_size": 0, "max_output_size": 0, "verified": why_not}
    size, predicted, measured = best
    return {**row, "max_size": size, "max_output_size": size * case.scale, "predicted_bytes": predicted,
            "measured_bytes": measured, "verified": "yes: fits"}


def within_budget(provider: str, case: Case, budget: int, device: torch.device) -> int:
    """``footprint`` of the case; on CUDA with the allocator capped at the budget (above what
    is allocated already), so nothing allocates past it."""
    if device.type != "cuda":
        return footprint(provider, case, device)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, (budget + torch.cuda.memory_allocated(device)) / total), device)
    try:
        return footprint(provider, case, device)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()


def budget_sweep(cases, providers, budget: int, device: torch.device, out_dir: Path) -> tuple[list[dict], list[Path]]:
    """The budget sweep over every distinct case shape (op, mode, dtype, layout, batch,
    channels) of ``cases`` and every provider that can run it; writes ``budget_sweep.csv`` and
    one plot per shape. Returns the rows and the files written."""
    seen, rows = set(), []
    for case in cases:
        key = (case.op, case.mode, case.dtype, case.layout, case.batch, case.channels, case.scale, case.kernel)
        if key in seen:
            continue
        seen.add(key)
        for provider in providers:
            if skip_reason(provider, dataclasses.replace(case, size=SAFE_SIZES[0]), device) is None:
                rows.append(largest_that_fits(provider, case, budget, device))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "budget_sweep.csv"
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return rows, [path] + plot_budget(rows, out_dir)


def plot_budget(rows: list[dict], out_dir: Path) -> list[Path]:
    """Footprint against output resolution per case shape: the measured safe sizes, the fitted
    line up to the budget, the budget line and each provider's largest size."""
    from .plots import COLORS

    written = []
    for key in dict.fromkeys((r["op"], r["mode"], r["dtype"], r["layout"], r["batch"], r["channels"]) for r in rows):
        group = [r for r in rows if (r["op"], r["mode"], r["dtype"], r["layout"], r["batch"], r["channels"]) == key]
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        ax = fig.add_subplot()
        budget = group[0]["budget_bytes"]
        top = max(r["max_output_size"] for r in group) * 1.3 + 1
        for r in group:
            color = COLORS.get(r["provider"], "k")
            safe = [int(s) * r["scale"] for s in r["safe_sizes"].split()]
            ax.scatter(safe, [int(b) / 2**20 for b in r["safe_bytes"].split()], color=color, zorder=3)
            xs = [top * i / 100 for i in range(1, 101)]
            ax.plot(xs, [(r["fixed_bytes"] + r["bytes_per_pixel"] * r["batch"] * (x / r["scale"]) ** 2) / 2**20
                         for x in xs], color=color, lw=1, label=f"{DISPLAY[r['provider']]}: up to "
                                                                f"{r['max_output_size']}\u00b2 ({r['verified']})")
            ax.axvline(r["max_output_size"], color=color, ls=":", lw=1)
            if "measured_bytes" in r:
                ax.scatter([r["max_output_size"]], [r["measured_bytes"] / 2**20], marker="*", s=80, color=color)
        ax.axhline(budget / 2**20, color="k", ls="--", label=f"budget {budget / 2**30:.3g} GiB")
        ax.set_xlabel("output resolution (square; decoder = output / scale)")
        ax.set_ylabel("memory held at the peak of one call (MiB)")
        ax.set_ylim(0, budget / 2**20 * 1.3)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        op, mode, dtype, layout, batch, channels = key
        ax.set_title(f"Largest input under the budget: {op} {mode} {dtype} {layout}, B={batch}, C={channels}\n"
                     "dots: measured at safe sizes; line: fitted; stars: measured at the limit", fontsize=8)
        path = out_dir / f"memory_vs_resolution_budget_{op}_{mode.replace('+', '_')}_{dtype}_{layout}.png"
        fig.savefig(path, dpi=120)
        written.append(path)
    return written
