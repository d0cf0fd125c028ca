"""The console summary of a run: one block per case, one line per provider, then what every
column means, what was skipped and why, and where the files went."""
from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

from .cases import Case
from .measure import threads_note
from .providers import DISPLAY

HEADER = (f"  {'provider':22s} {'ms':>9s} {'p20-p80 ms':>17s} {'others':>6s} {'wall ms':>9s} {'GB/s':>7s} "
          f"{'peak MiB':>9s} {'x floor':>8s} {'GFLOP':>8s} {'params':>8s}")


def column_notes(env: dict) -> list[tuple[str, str]]:
    """(column, what it means) for every column of the table."""
    gpu = env["device_type"] == "cuda"
    clock = ("device time (triton do_bench: CUDA events, L2 flushed before each call)" if gpu else
             "wall clock of back-to-back calls (CPU: there is no separate device clock)")
    return [
        ("ms", f"median time per call: {clock}"),
        ("p20-p80 ms", "20th-80th percentiles of the same runs (the spread drawn on the plots)"),
        ("others", "share of the machine's CPU that other processes used while it was timed; '!': more "
                   "than the cores left spare by PyTorch's threads plus 25%, so the timing is suspect (taken "
                   "again at the end, the calmer kept; still suspect: hollow markers, hatched speed-ups)"),
        ("wall ms", "mean wall-clock time per call of back-to-back calls on one input set, no cache flushes: "
                    "what a user's loop sees"
                    + (" (host overhead included)" if gpu else "; on CPU the same runs as ms")),
        ("GB/s", "the roofline's bytes (each input read once, each output written once) / ms"),
        ("peak MiB", "peak memory allocated during the call above the inputs (output and gradients included)"),
        ("x floor", "ms / roofline floor; floor = max(bytes / copy bandwidth, FLOPs / matmul rate in the dtype, "
                    f"float32 at {env['fp32_precision'].upper()}); 1 = at the floor. GB/s and x floor are left out "
                    "for bilinear and the other upsamplers (DySample, CARAFEPack): they are not FADE"),
        ("GFLOP", "forward GFLOP of one call (in fwd+bwd cases too) as torch.utils.flop_counter counts them: "
                  "convolutions and the reassembly (the FLOP formulas of fade_triton's operators), no "
                  "elementwise work; mmcv's compiled CARAFE is invisible to it (its reassembly counts 0), bilinear "
                  "counts 0 and DySample its 1x1 convolutions only (grid_sample is elementwise)"),
        ("params", "parameters of the provider's module (0 for bilinear, which has none)"),
    ]


def _cell(row, key, fmt, width):
    return f"{row[key]:{width}{fmt}}" if row.get(key) is not None else f"{'-':>{width}s}"


def print_summary(rows, env, skipped, out_dir: Path, written):
    threads = f" | {threads_note(env['threads'])}" if env["device_type"] == "cpu" else ""
    print(f"\n{env['device']}{threads} | torch {env['torch']} | triton {env['triton']} | "
          f"float32 at {env['fp32_precision'].upper()} | {env['date_utc']}")
    if env["device_type"] != "cuda":
        print("No CUDA device: CPU timings of the CPU-capable providers; they say nothing about GPU speed.")
    print(HEADER)
    label = None
    for r in rows:
        if r["status"] == "skipped":
            continue
        case = Case(**{f.name: r[f.name] for f in dataclasses.fields(Case)}).label()
        if case != label:
            print(case)
            label = case
        name = DISPLAY[r["provider"]]
        if r["status"] != "ok":
            print(f"  {name:22s} {r['status']}: {r['reason']}")
            continue
        if "ms_median" not in r:  # a memory-only run
            print(f"  {name:22s} {'-':>9s} {'-':>17s} {'-':>6s} {'-':>9s} {'-':>7s} {r['peak_bytes'] / 2**20:9.2f} "
                  f"{'-':>8s} {_cell(r, 'gflops', '.4f', 8)} {_cell(r, 'params', 'd', 8)}")
            continue
        spread = f"{r['ms_p20']:.3f}-{r['ms_p80']:.3f}"
        others = f"{r['others_cpu']:.0%}{'!' if r.get('contended') else ''}" if r.get("others_cpu") is not None else "-"
        print(f"  {name:22s} {r['ms_median']:9.3f} {spread:>17s} {others:>6s} {r['wall_ms']:9.3f} "
              f"{_cell(r, 'gb_per_s', '.2f', 7)} {r['peak_bytes'] / 2**20:9.2f} {_cell(r, 'x_floor', '.1f', 8)} "
              f"{_cell(r, 'gflops', '.4f', 8)} {_cell(r, 'params', 'd', 8)}")
    print("Columns:")
    for name, text in column_notes(env):
        print(textwrap.fill(text, 100, initial_indent=f"  {name:12s}", subsequent_indent=" " * 14))
    busy = sum(1 for r in rows if r.get("contended"))
    if busy:
        hint = " On a shared machine, --threads 1 is far less disturbed." if env["device_type"] == "cpu" else ""
        print(textwrap.fill(f"{busy} timings stayed contended (marked !) after being taken again: other processes "
                            f"took CPU they needed.{hint}", 100))
    for (provider, reason), n in sorted(skipped.items()):
        print(textwrap.fill(f"skipped {DISPLAY[provider]} ({n} cases): {reason}", 100, subsequent_indent="    "))
    where = Path(out_dir).resolve()
    if where.is_relative_to(Path.cwd()):
        where = where.relative_to(Path.cwd())
    print(f"wrote to {where}/: results.csv, env.json" + "".join(f", {p.name}" for p in written))
