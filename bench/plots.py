"""Plots of a benchmark run: latency, peak memory, speed-up and distance from the roofline
floor, each against resolution, one panel per (op, mode), one file per dtype."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"triton": "#d62728", "torch": "#1f77b4", "naive": "#7f7f7f", "naive_compiled": "#9467bd",
          "mmcv": "#2ca02c", "bilinear": "#bcbd22"}
STYLE = {"bilinear": ":", "naive": "--", "naive_compiled": "--", "mmcv": "-."}


def _ok(rows):
    return [r for r in rows if r["status"] == "ok" and r["sweep"] == "resolution"]


def _panels(rows):
    """{(op, mode): rows}, and the x tick labels."""
    panels = {}
    for r in rows:
        panels.setdefault((r["op"], r["mode"]), []).append(r)
    return dict(sorted(panels.items()))


def _figure(panels, title):
    n = len(panels)
    cols = min(2, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.4 * rows), squeeze=False)
    fig.suptitle(title, fontsize=12)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _setting(rows):
    r = rows[0]
    return f"{r['dtype']}, B={r['batch']}, C={r['channels']}, K={r['kernel']}, scale {r['scale']}"


def _xaxis(ax, sizes, scale):
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes)
    ax.set_xticklabels([f"{s}\u00b2\u2192{s * scale}\u00b2" for s in sizes], fontsize=8)
    ax.set_xlabel("decoder \u2192 output resolution")
    ax.grid(True, which="both", alpha=0.3)


def _lines(ax, panel_rows, value, band=None):
    sizes = sorted({r["size"] for r in panel_rows})
    for provider in COLORS:
        pr = sorted((r for r in panel_rows if r["provider"] == provider), key=lambda r: r["size"])
        if not pr:
            continue
        x = [r["size"] for r in pr]
        ax.plot(x, [value(r) for r in pr], marker="o", ms=4, color=COLORS[provider],
                ls=STYLE.get(provider, "-"), label=provider)
        if band:
            lo, hi = zip(*(band(r) for r in pr))
            ax.fill_between(x, lo, hi, color=COLORS[provider], alpha=0.15, lw=0)
    _xaxis(ax, sizes, panel_rows[0]["scale"])
    ax.set_yscale("log")


def _save(fig, path, written):
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    written.append(path)


def plot_all(rows, env, out_dir: Path) -> list[Path]:
    written: list[Path] = []
    ok = _ok(rows)
    for dtype in sorted({r["dtype"] for r in ok}):
        dr = [r for r in ok if r["dtype"] == dtype]
        if len({r["size"] for r in dr}) < 2:
            continue
        panels = _panels(dr)
        suffix = f"_{dtype}"
        head = f"{env['device']}, {_setting(dr)}"

        fig, axes = _figure(panels, f"Latency (median, band 20-80th pct) \u2014 {head}")
        for ax, ((op, mode), pr) in zip(axes, panels.items()):
            _lines(ax, pr, lambda r: r["ms_median"], band=lambda r: (r["ms_p20"], r["ms_p80"]))
            ax.set_title(f"{op}, {mode}")
            ax.set_ylabel("ms")
            ax.legend(fontsize=8)
        _save(fig, out_dir / f"latency_vs_resolution{suffix}.png", written)

        fig, axes = _figure(panels, f"Peak memory above the inputs \u2014 {head}")
        for ax, ((op, mode), pr) in zip(axes, panels.items()):
            _lines(ax, pr, lambda r: max(r["peak_bytes"], 1) / 2**20)
            ax.set_title(f"{op}, {mode}")
            ax.set_ylabel("MiB")
            ax.legend(fontsize=8)
        _save(fig, out_dir / f"memory_vs_resolution{suffix}.png", written)

        fig, axes = _figure(panels, f"Speed-up over each baseline \u2014 {head}")
        for ax, ((op, mode), pr) in zip(axes, panels.items()):
            _speedup_bars(ax, pr)
            ax.set_title(f"{op}, {mode}")
        _save(fig, out_dir / f"speedup{suffix}.png", written)

        if any(r.get("x_floor") for r in dr):
            fig, axes = _figure(panels, f"Time as a multiple of the roofline floor (1 = at the floor) \u2014 {head}")
            for ax, ((op, mode), pr) in zip(axes, panels.items()):
                _lines(ax, [r for r in pr if r.get("x_floor") and r["provider"] != "bilinear"], lambda r: r["x_floor"])
                ax.axhline(1.0, color="k", lw=1)
                ax.set_title(f"{op}, {mode}")
                ax.set_ylabel("time / floor")
                ax.legend(fontsize=8)
            _save(fig, out_dir / f"roofline_fraction{suffix}.png", written)
    return written


def _speedup_bars(ax, pr):
    """Bars: each of our providers' speed-up over each baseline, per resolution."""
    by = {(r["provider"], r["size"]): r["ms_median"] for r in pr}
    sizes = sorted({r["size"] for r in pr})
    pairs = [(o, b) for o in ("triton", "torch") for b in ("naive", "naive_compiled", "mmcv")
             if any((o, s) in by and (b, s) in by for s in sizes)]
    width = 0.8 / max(len(pairs), 1)
    for i, (ours, base) in enumerate(pairs):
        xs = [j + i * width for j, s in enumerate(sizes) if (ours, s) in by and (base, s) in by]
        ys = [by[(base, s)] / by[(ours, s)] for s in sizes if (ours, s) in by and (base, s) in by]
        bars = ax.bar(xs, ys, width, color=COLORS[base], alpha=1.0 if ours == "triton" else 0.55,
                      edgecolor=COLORS[ours], lw=1.5, label=f"{ours} vs {base}")
        ax.bar_label(bars, fmt="%.1fx", fontsize=7)
    ax.axhline(1.0, color="k", lw=1)
    ax.set_xticks([j + width * (len(pairs) - 1) / 2 for j in range(len(sizes))])
    ax.set_xticklabels([f"{s}\u00b2\u2192{s * pr[0]['scale']}\u00b2" for s in sizes], fontsize=8)
    ax.set_ylabel("speed-up (baseline time / our time)")
    ax.grid(True, axis="y", alpha=0.3)
    if pairs:
        ax.legend(fontsize=8)
