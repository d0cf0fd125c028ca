"""Plots of a benchmark run, one file per (swept axis, dtype), one panel per (op, mode):
latency, peak memory and time over the roofline floor against the swept axis (resolution,
channels, batch, K, scale or E; NCHW solid, channels_last dashed) and speed-up over each
baseline with its p20-p80 range (one panel per layout). A memory-only run gets the memory
plots alone. ``figures`` yields them for a notebook; ``plot_all`` saves them;
``no_plot_reason`` says why a run has none."""
from __future__ import annotations

import textwrap
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: no GUI backend, and notebooks display these as they are
from matplotlib.lines import Line2D

from .cases import SWEEP_AXES
from .measure import contended, threads_note
from .providers import BASELINES, DISPLAY, OURS

COLORS = {"triton": "#d62728", "torch": "#1f77b4", "naive": "#7f7f7f", "naive_compiled": "#9467bd",
          "mmcv": "#2ca02c", "bilinear": "#bcbd22", "dysample": "#17becf", "dysample_dyscope": "#8c564b",
          "carafepack": "#ff7f0e", "carafepack_mmcv": "#e377c2"}
LAYOUT_STYLE = {"nchw": "-", "channels_last": "--"}
AXIS = {"size": "decoder \u2192 output resolution", "channels": "channels C", "batch": "batch B",
        "kernel": "reassembly kernel size K", "scale": "scale s", "embed": "embedding width E"}
SPREAD_LIMIT = 1.5  # a speed-up whose p20-p80 range spans more than this factor is not supported


def _tick(key, value, scale):
    return f"{value}\u00b2\u2192{value * scale}\u00b2" if key == "size" else str(value)


def _legend(ax, rows):
    handles = [Line2D([], [], color=COLORS[p], marker="o", ms=4, label=DISPLAY[p])
               for p in COLORS if any(r["provider"] == p for r in rows)]
    layouts = [lay for lay in LAYOUT_STYLE if any(r["layout"] == lay for r in rows)]
    if len(layouts) > 1:
        handles += [Line2D([], [], color="k", ls=LAYOUT_STYLE[lay], label=lay) for lay in layouts]
    if any(contended(r) for r in rows):
        handles.append(Line2D([], [], color="k", marker="o", mfc="white", ls="",
                              label="timed while other processes took CPU it needed"))
    ax.legend(handles=handles, fontsize=7)


def _lines(ax, rows, value, key="size", band=None):
    """One line per (provider, layout) of ``value(row)`` against ``row[key]``, log-log."""
    xs = sorted({r[key] for r in rows})
    for provider in COLORS:
        for layout, style in LAYOUT_STYLE.items():
            pr = sorted((r for r in rows if (r["provider"], r["layout"]) == (provider, layout)), key=lambda r: r[key])
            if not pr:
                continue
            x, y = [r[key] for r in pr], [value(r) for r in pr]
            ax.plot(x, y, color=COLORS[provider], ls=style)
            ax.scatter(x, y, s=18, zorder=3, color=[COLORS[provider] if not contended(r) else "white" for r in pr],
                       edgecolors=COLORS[provider])
            if band:
                lo, hi = zip(*(band(r) for r in pr))
                ax.fill_between(x, lo, hi, color=COLORS[provider], alpha=0.15, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([_tick(key, x, rows[0]["scale"]) for x in xs], fontsize=8)
    ax.set_xlabel(AXIS[key])
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, rows)


def speedup(base: dict, ours: dict) -> tuple[float, float, float]:
    """(median ratio, low, high): base/ours, the range from the p20/p80 of both timings."""
    return (base["ms_median"] / ours["ms_median"], base["ms_p20"] / ours["ms_p80"], base["ms_p80"] / ours["ms_p20"])


def supported(low: float, high: float, *rows: dict) -> bool:
    """Whether a speed-up range supports its ratio: not wider than SPREAD_LIMIT, and neither
    timing (``rows``) taken while other processes took CPU it needed."""
    return high / low <= SPREAD_LIMIT and not any(contended(r) for r in rows)


def _speedup_bars(ax, rows, key="size"):
    """Bars: each of our providers' speed-up over each baseline, per value of ``key``, with the
    p20-p80 range; a bar whose range is too wide to support its ratio is hatched and pale."""
    by = {(r["provider"], r[key]): r for r in rows}
    sizes = sorted({r[key] for r in rows})
    pairs = [(o, b) for o in OURS for b in BASELINES if any((o, s) in by and (b, s) in by for s in sizes)]
    width = 0.8 / max(len(pairs), 1)
    for i, (ours, base) in enumerate(pairs):
        label = f"{DISPLAY[ours]} vs {DISPLAY[base]}"
        for j, s in enumerate(sizes):
            if (ours, s) not in by or (base, s) not in by:
                continue
            ratio, lo, hi = speedup(by[(base, s)], by[(ours, s)])
            ok = supported(lo, hi, by[(base, s)], by[(ours, s)])
            ax.bar(j + i * width, ratio, width, color=COLORS[base], alpha=0.9 if ok else 0.3,
                   hatch=None if ok else "xx", edgecolor=COLORS[ours], lw=1.5, yerr=[[ratio - lo], [hi - ratio]],
                   capsize=3, label=label)
            label = None
            ax.annotate(f"{ratio:.1f}x" + ("" if ok else "?"), (j + i * width, hi), xytext=(0, 2),
                        textcoords="offset points", ha="center", fontsize=7)
    ax.axhline(1.0, color="k", lw=1)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.15)  # room for the labels above the error bars
    ax.set_xticks([j + width * (len(pairs) - 1) / 2 for j in range(len(sizes))])
    ax.set_xticklabels([_tick(key, s, rows[0]["scale"]) for s in sizes], fontsize=8)
    ax.set_xlabel(AXIS[key])
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")


def _panel_title(key):
    op, mode = key[0], key[1]
    name = {"fade": "FADE", "fade_lite": "FADE-Lite", "carafe": "CARAFE"}[op]
    return f"{name}, {mode}" + (f", {key[2]}" if len(key) > 2 else "")


def _figure(rows, title, draw, ylabel, by_layout=False):
    panels = {}
    for r in rows:
        panels.setdefault((r["op"], r["mode"]) + ((r["layout"],) if by_layout else ()), []).append(r)
    n = len(panels)
    cols = min(2, n)
    fig = Figure(figsize=(6.4 * cols, 4.4 * -(-n // cols) + 0.5))
    axes = fig.subplots(-(-n // cols), cols, squeeze=False)
    fig.suptitle(title, fontsize=11)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    order = {"nchw": 0, "channels_last": 1, "fwd": 0, "fwd+bwd": 1, "fade": 0, "fade_lite": 1, "carafe": 2}
    for ax, (key, pr) in zip(axes.flat, sorted(panels.items(), key=lambda kv: [order[k] for k in kv[0]])):
        draw(ax, pr)
        ax.set_title(_panel_title(key), fontsize=10)
        ax.set_ylabel(ylabel)
    fig.tight_layout()
    return fig


def _setting(rows, env, vary):
    """The second title line: everything fixed in the figure, and where it ran."""
    r = rows[0]
    size = f"decoder {r['size']}\u00b2" if vary == "scale" else f"{r['size']}\u00b2\u2192{r['size'] * r['scale']}\u00b2"
    fixed = {"size": size, "batch": f"B={r['batch']}", "channels": f"C={r['channels']}",
             "embed": f"E={r['embed']} (FADE)", "kernel": f"K={r['kernel']}"}
    precision = env.get("fp32_precision", "not recorded").upper()  # older runs did not record it
    dtype = f"float32 ({precision})" if r["dtype"] == "float32" else f"{r['dtype']} (float32 setting: {precision})"
    parts = [dtype] + [v for k, v in fixed.items() if k != vary]
    cpu = env.get("device_type") == "cpu" and "threads" in env
    device = env["device"] + (f", {threads_note(env['threads'])}" if cpu else "")
    return f"{device} \u00b7 " + ", ".join(parts) + f" \u00b7 torch {env['torch']}, triton {env['triton']}"


def _floor_note(env, dtype):
    rates = env.get("rates", {}).get(dtype)
    if not rates:
        return ""
    return (f"floor = max(bytes / {rates['bandwidth'] / 1e9:.1f} GB/s ({rates['bandwidth_method']}), "
            f"FLOPs / {rates['flop_rate'] / 1e12:.2f} TFLOP/s ({rates['flop_rate_method']}))")


def _draw_floor(ax, pr, key="size"):
    _lines(ax, pr, lambda r: r["x_floor"], key=key)
    ax.axhline(1.0, color="k", lw=1)
    bounds = {"bytes": "bytes (memory-bound)", "flops": "FLOPs (compute-bound)"}
    bound = " / ".join(bounds.get(b, b) for b in sorted({r.get("floor_bound", "?") for r in pr}))
    ax.set_xlabel(f"{AXIS[key]}; floor set by {bound}")


def _swept(ok):
    """(swept Case field, sweep name, its rows) for every sweep in ``ok`` with at least two values."""
    for key, sweep in SWEEP_AXES.items():
        rows = [r for r in ok if r["sweep"] == sweep]
        if len({r[key] for r in rows}) >= 2:
            yield key, sweep, rows


def figures(rows, env):
    """Yield ``(file name, figure)`` for every plot the run's rows support: for each dtype and
    swept axis, latency, memory, speed-up and time over the floor (those that need timings
    only where the run timed)."""
    ok = [r for r in rows if r["status"] == "ok"]
    for dtype in sorted({r["dtype"] for r in ok}):
        for key, sweep, swept in _swept([r for r in ok if r["dtype"] == dtype]):
            head = _setting(swept, env, key)
            name = f"{sweep}_{dtype}"  # the resolution plots keep their names: speedup_float32.png, ...
            lines = (lambda value, band=None, key=key: lambda ax, pr: _lines(ax, pr, value, key=key, band=band))
            timed = [r for r in swept if r.get("ms_median") is not None]
            if timed:
                yield f"latency_vs_{name}.png", _figure(
                    timed, f"Latency per call (median; band: p20\u2013p80)\n{head}",
                    lines(lambda r: r["ms_median"], band=lambda r: (r["ms_p20"], r["ms_p80"])), "ms")
            yield f"memory_vs_{name}.png", _figure(
                swept, f"Peak memory above the inputs (output and gradients included)\n{head}",
                lines(lambda r: max(r["peak_bytes"], 1) / 2**20), "MiB")
            if not timed:
                continue
            suffix = dtype if key == "size" else name
            yield f"speedup_{'vs_' * (key != 'size')}{suffix}.png", _figure(
                timed, "Speed-up over each baseline: ratio of median times\nerror bars: from the p20/p80 of both "
                       f"timings; hatched and '?': a range wider than {SPREAD_LIMIT}x, or a timing taken while "
                       f"other processes took CPU it needed\n{head}",
                lambda ax, pr, key=key: _speedup_bars(ax, pr, key), "baseline time / our time", by_layout=True)
            floored = [r for r in timed if r.get("x_floor")]
            if floored:
                yield f"roofline_fraction_{'vs_' * (key != 'size')}{suffix}.png", _figure(
                    floored, f"Time over the roofline floor (1 = at the floor)\n{head}\n{_floor_note(env, dtype)}",
                    lambda ax, pr, key=key: _draw_floor(ax, pr, key), "time / floor")


def no_plot_reason(rows) -> str:
    """Why ``figures`` yields nothing for ``rows`` (call it when it does not)."""
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return "no case was measured (every provider was skipped or failed; see above)"
    sweeps = {r["sweep"] for r in ok}
    if "mixed" in sweeps:
        return ("the cases vary more than one of size, channels, batch, K, scale and E; a plot needs one swept "
                "axis: give one of those options several values and the others one")
    return ("no axis varies: give one of --sizes, --channels, --batch, --kernel, --scale or --embed at least "
            f"two values (sweeps here: {', '.join(sorted(sweeps))})")


def plot_all(rows, env, out_dir: Path) -> list[Path]:
    written = []
    for name, fig in figures(rows, env):
        fig.savefig(out_dir / name, dpi=130)
        written.append(out_dir / name)
    return written


def latency_vs_miou_figures(rows, env):
    """(file name, figure) per dtype: the forward latency measured here (filled markers) against
    the published SegFormer-B1 ADE20K mIoU of each upsampler, beside the DySample paper's
    Figure 1 latencies (hollow squares, marked as published); ranges as error bars. Only
    upsamplers with a published mIoU in ``bench.papers`` are drawn (not FADE-Lite, not SAPA's
    mIoU)."""
    from . import papers

    points = [r for r in papers.measured_points(rows) if r["mode"] == "fwd"]
    for dtype in sorted({r["dtype"] for r in points}):
        fig = Figure(figsize=(8, 5.5), layout="constrained")
        ax = fig.add_subplot()
        for pub in papers.PUBLISHED:
            if pub.miou is None:
                continue
            lo, hi = pub.latency_ms
            mid = (pub.miou[0] + pub.miou[1]) / 2
            ax.errorbar((lo + hi) / 2, mid, xerr=[[(hi - lo) / 2], [(hi - lo) / 2]],
                        yerr=[[mid - pub.miou[0]], [pub.miou[1] - mid]], fmt="s", mfc="white", color="k", capsize=3)
            ax.annotate(f"{pub.method} (published)", ((lo + hi) / 2, mid), fontsize=7, xytext=(5, 5),
                        textcoords="offset points")
        for r in (r for r in points if r["dtype"] == dtype):
            pub = papers.for_provider(r["provider"])
            mid = (pub.miou[0] + pub.miou[1]) / 2
            ax.errorbar(r["ms_median"], mid, yerr=[[mid - pub.miou[0]], [pub.miou[1] - mid]], fmt="o",
                        color=COLORS[r["provider"]], capsize=3, label=f"{DISPLAY[r['provider']]}: measured here")
        ax.set_xscale("log")
        ax.set_xlabel("forward latency, ms (log)")
        ax.set_ylabel("SegFormer-B1 ADE20K mIoU (published)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        case = points[0]
        notes = [f"Latency against published mIoU: x{case['scale']} upsampling, B={case['batch']}, C={case['channels']}, "
                 f"{case['size']}\u00b2 \u2192 {case['size'] * case['scale']}\u00b2, {dtype}, measured on {env['device']}",
                 f"filled: measured here (median); hollow squares: published, {papers.FIGURE_1}",
                 f"mIoU: {papers.DYSAMPLE}; FADE: {papers.FADE}; CARAFE: {papers.CARAFE}"]
        fig.suptitle("\n".join(textwrap.fill(n, 130) for n in notes), fontsize=7)
        yield f"latency_vs_miou_{dtype}.png", fig
