"""Plots of a benchmark run, one file per dtype, one panel per (op, mode):
latency, peak memory, speed-up over each baseline and time over the roofline floor against
resolution; latency against channels and batch where those sweeps were run."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .providers import BASELINES, OURS  # noqa: E402

COLORS = {"triton": "#d62728", "torch": "#1f77b4", "naive": "#7f7f7f", "naive_compiled": "#9467bd",
          "mmcv": "#2ca02c", "bilinear": "#bcbd22"}
STYLE = {"bilinear": ":", "naive": "--", "naive_compiled": "--", "mmcv": "-."}
AXIS = {"size": "decoder \u2192 output resolution", "channels": "channels C", "batch": "batch B"}


def _tick(key, value, scale):
    return f"{value}\u00b2\u2192{value * scale}\u00b2" if key == "size" else str(value)


def _lines(ax, rows, value, key="size", band=None):
    """One line per provider of ``value(row)`` against ``row[key]``, log-log."""
    xs = sorted({r[key] for r in rows})
    for provider in COLORS:
        pr = sorted((r for r in rows if r["provider"] == provider), key=lambda r: r[key])
        if not pr:
            continue
        x = [r[key] for r in pr]
        ax.plot(x, [value(r) for r in pr], marker="o", ms=4, color=COLORS[provider],
                ls=STYLE.get(provider, "-"), label=provider)
        if band:
            lo, hi = zip(*(band(r) for r in pr))
            ax.fill_between(x, lo, hi, color=COLORS[provider], alpha=0.15, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([_tick(key, x, rows[0]["scale"]) for x in xs], fontsize=8)
    ax.set_xlabel(AXIS[key])
    ax.grid(True, which="both", alpha=0.3)


def _speedup_bars(ax, rows):
    """Bars: each of our providers' speed-up over each baseline, per resolution."""
    by = {(r["provider"], r["size"]): r["ms_median"] for r in rows}
    sizes = sorted({r["size"] for r in rows})
    pairs = [(o, b) for o in OURS for b in BASELINES if any((o, s) in by and (b, s) in by for s in sizes)]
    width = 0.8 / max(len(pairs), 1)
    for i, (ours, base) in enumerate(pairs):
        both = [j for j, s in enumerate(sizes) if (ours, s) in by and (base, s) in by]
        bars = ax.bar([j + i * width for j in both], [by[(base, sizes[j])] / by[(ours, sizes[j])] for j in both],
                      width, color=COLORS[base], alpha=1.0 if ours == "triton" else 0.55,
                      edgecolor=COLORS[ours], lw=1.5, label=f"{ours} vs {base}")
        ax.bar_label(bars, fmt="%.1fx", fontsize=7)
    ax.axhline(1.0, color="k", lw=1)
    ax.set_xticks([j + width * (len(pairs) - 1) / 2 for j in range(len(sizes))])
    ax.set_xticklabels([_tick("size", s, rows[0]["scale"]) for s in sizes], fontsize=8)
    ax.set_xlabel(AXIS["size"])
    ax.grid(True, axis="y", alpha=0.3)


def _panel_figure(rows, title, draw, ylabel, path, written):
    panels = {}
    for r in rows:
        panels.setdefault((r["op"], r["mode"]), []).append(r)
    n = len(panels)
    cols = min(2, n)
    fig, axes = plt.subplots(-(-n // cols), cols, figsize=(6.2 * cols, 4.4 * -(-n // cols)), squeeze=False)
    fig.suptitle(title, fontsize=12)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, ((op, mode), pr) in zip(axes.flat, sorted(panels.items())):
        draw(ax, pr)
        ax.set_title(f"{op}, {mode}")
        ax.set_ylabel(ylabel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    written.append(path)


def _setting(rows, vary):
    r = rows[0]
    fixed = {"size": f"{r['size']}\u00b2\u2192{r['size'] * r['scale']}\u00b2", "batch": f"B={r['batch']}",
             "channels": f"C={r['channels']}"}
    return ", ".join([r["dtype"]] + [v for k, v in fixed.items() if k != vary] + [f"K={r['kernel']}"])


def plot_all(rows, env, out_dir: Path) -> list[Path]:
    written: list[Path] = []
    ok = [r for r in rows if r["status"] == "ok"]
    for dtype in sorted({r["dtype"] for r in ok}):
        res = [r for r in ok if r["dtype"] == dtype and r["sweep"] == "resolution"]
        if len({r["size"] for r in res}) >= 2:
            head = f"{env['device']}, {_setting(res, 'size')}"
            _panel_figure(res, f"Latency (median, band: 20th-80th percentile) \u2014 {head}",
                          lambda ax, pr: _lines(ax, pr, lambda r: r["ms_median"], band=lambda r: (r["ms_p20"], r["ms_p80"])),
                          "ms", out_dir / f"latency_vs_resolution_{dtype}.png", written)
            _panel_figure(res, f"Peak memory above the inputs \u2014 {head}",
                          lambda ax, pr: _lines(ax, pr, lambda r: max(r["peak_bytes"], 1) / 2**20),
                          "MiB", out_dir / f"memory_vs_resolution_{dtype}.png", written)
            _panel_figure(res, f"Speed-up over each baseline \u2014 {head}", _speedup_bars,
                          "baseline time / our time", out_dir / f"speedup_{dtype}.png", written)
            floored = [r for r in res if r.get("x_floor") and r["provider"] != "bilinear"]
            if floored:
                def draw_floor(ax, pr):
                    _lines(ax, pr, lambda r: r["x_floor"])
                    ax.axhline(1.0, color="k", lw=1)
                _panel_figure(floored, f"Time over the roofline floor (1 = at the floor) \u2014 {head}", draw_floor,
                              "time / floor", out_dir / f"roofline_fraction_{dtype}.png", written)
        for key in ("channels", "batch"):
            sweep = [r for r in ok if r["dtype"] == dtype and r["sweep"] == key]
            if len({r[key] for r in sweep}) >= 2:
                _panel_figure(sweep, f"Latency against {key} \u2014 {env['device']}, {_setting(sweep, key)}",
                              lambda ax, pr, key=key: _lines(ax, pr, lambda r: r["ms_median"], key=key,
                                                             band=lambda r: (r["ms_p20"], r["ms_p80"])),
                              "ms", out_dir / f"latency_vs_{key}_{dtype}.png", written)
    return written
