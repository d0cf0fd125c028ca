"""python -m bench: time FADE's implementations against each other and against the roofline.

For every case and provider: check the output (and in fwd+bwd cases every gradient) against
the fade_triton/torch path (a provider that disagrees is recorded as "mismatch" and not
timed), measure peak memory above the inputs, time it, and relate the time to the roofline
floor. Writes results.csv, env.json and PNG plots to the output directory and prints a
summary. Providers that cannot run here are recorded as "skipped" with the reason.

Cases come from --preset, from case options (--sizes, --channels, --batch, --kernel, --scale,
--embed, --dtypes, --layouts, --ops, --modes), or both: each option replaces its axis in every
case of the preset (without --preset, in the case B=1, C=32, E=64, K=5, 32^2 -> 64^2, float32,
NCHW, FADE forward) and the lists multiply. A plot is drawn against the one numeric axis the
cases vary; e.g. `python -m bench --channels 32 64 128 --modes fwd fwd+bwd` writes latency,
memory and speed-up against channels. --memory-only measures peak memory alone (no timing).
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib
import re
import shutil
import sys
import textwrap
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fade_triton import backend
from fade_triton.profiling import peak_memory

from . import check, measure, memory, papers, roofline
from .cases import (COMPARISON_PRESETS, CUSTOM_BASE, DTYPES, LAYOUTS, MODES, OPS, PRESETS, make_inputs, preset,
                    with_axes)
from .measure import contended
from .plots import latency_vs_miou_figures, no_plot_reason, plot_all
from .providers import ABOUT, CHECKED, DISPLAY, OTHER_UPSAMPLERS, PROVIDERS, build, default_providers, skip_reason
from .runfiles import device_name, environment, write_run
from .summary import print_summary

SCRATCH = Path(__file__).resolve().parent / "results" / "_scratch"  # git ignores it


def fp32_precision(device: torch.device) -> str:
    """The precision float32 FADE runs at here: on CUDA PyTorch's convolution setting, which
    the Triton kernels follow too; on CPU IEEE (no TF32 there)."""
    return backend.float32_conv_precision() if device.type == "cuda" else "ieee"


def machine_rates_for(cases, device: torch.device, precision: str) -> dict:
    """dtype name -> measured bandwidth and matmul rate (float32 at ``precision``)."""
    names = sorted({c.dtype for c in cases if skip_reason("torch", c, device) is None})
    return {name: measure.machine_rates(device, getattr(torch, name), precision) for name in names}


def floor_fields(case, rates: dict) -> dict:
    """``floor_ms`` and ``floor_bound`` of a case from the machine's rates (none if unmeasured)."""
    if case.dtype not in rates:
        return {}
    bw, rate = rates[case.dtype]["bandwidth"], rates[case.dtype]["flop_rate"]
    return {"floor_ms": 1e3 * roofline.floor_seconds(case, bw, rate),
            "floor_bound": roofline.floor_bound(case, bw, rate)}


def measure_one(provider, case, device, reference, timing: bool = True, snapshot_to: Path | None = None) -> dict:
    """One provider on one case: check, peak memory (and a memory snapshot to ``snapshot_to``,
    ``bench.memory.write_snapshot``), latency (not when ``timing`` is false). Returns the row's
    measured fields."""
    backward = case.mode == "fwd+bwd"
    module, fn = build(provider, case, device)
    inputs = make_inputs(case, device, backward)
    grad = check.output_grad(case, device) if backward else None
    row = {}
    if provider in CHECKED:
        row = check.compare(check.evaluate(module, fn, inputs, OPS[case.op].names, grad), reference, case.dtype)
        if row.get("status") == "mismatch":
            return row
    params = list(module.parameters())
    # naive_compiled is counted on its eager module (the same function; no compiler under the counter)
    row["gflops"] = measure.forward_flops(module if provider == "naive_compiled" else fn, inputs) / 1e9
    row["params"] = 0 if provider == "bilinear" else sum(p.numel() for p in params)
    call = measure.timed_call(fn, [inputs], grad, params)
    call()  # warm-up: compilation and caches stay out of the memory figure
    for t in (*inputs, *params):
        t.grad = None
    row["peak_bytes"] = peak_memory(call, device)
    if snapshot_to is not None:  # from the same state as the peak: no gradients held
        for t in (*inputs, *params):
            t.grad = None
        written = memory.write_snapshot(call, device, snapshot_to)
        row["snapshot"] = written.relative_to(snapshot_to.parent.parent).as_posix()  # relative to the run's folder
    if not timing:
        return {**row, "status": "ok"}
    sets = [inputs] + [make_inputs(case, device, backward, seed=2 + i)
                       for i in range(measure.n_input_sets(sum(t.nbytes for t in inputs), device) - 1)]
    row.update(measure.latency(measure.timed_call(fn, sets, grad, params), device, back_to_back=call))
    return {**row, "status": "ok"}


def attach_compile_report(out_dir: Path, device: torch.device, rows: list[dict]) -> Path | None:
    """The compile report beside the Triton kernels' timings: copy the newest committed compile
    report (``bench.tools.aot.summary_for_results()``: per-kernel registers, spills, occupancy)
    to ``out_dir/compile_report.csv`` where it applies: on a CUDA device whose architecture
    the report covers, in a run that timed the ``triton`` provider. Otherwise none is copied."""
    if device.type != "cuda" or not any(r["provider"] == "triton" and r["status"] == "ok" for r in rows):
        return None
    try:
        aot = importlib.import_module("bench.tools.aot")
    except ModuleNotFoundError as err:
        if err.name != "bench.tools.aot":
            raise
        return None
    summary = getattr(aot, "summary_for_results", None)
    source = summary() if summary else None
    if not source:
        return None
    arch = "sm_{}{}".format(*torch.cuda.get_device_capability(device))
    with open(source, newline="") as f:
        if not any(r.get("arch") == arch for r in csv.DictReader(f)):
            return None
    shutil.copyfile(source, out_dir / "compile_report.csv")
    return out_dir / "compile_report.csv"


def with_floor_ratios(row: dict) -> dict:
    """``x_floor`` and ``gb_per_s`` of a timed FADE row (not of the other upsamplers: other functions)."""
    if (row["status"] == "ok" and row["provider"] not in OTHER_UPSAMPLERS and row.get("floor_ms")
            and "ms_median" in row):
        row["x_floor"] = row["ms_median"] / row["floor_ms"]
        row["gb_per_s"] = row["min_bytes"] / (row["ms_median"] * 1e-3) / 1e9
    return row


def retime_contended(rows: list[dict], timed: list[tuple], device) -> None:
    """Time once more, after all the others, every (case, provider) whose timing was taken while
    other processes took CPU it needed (``measure.other_processes_load``); keep the calmer."""
    todo = [(i, case, provider) for i, case, provider in timed if contended(rows[i])]
    for i, case, provider in tqdm(todo, desc="re-timing busy cases", unit="case", dynamic_ncols=True, disable=not todo):
        again = measure_one(provider, case, device, check.reference(case, device) if provider in CHECKED else None)
        if again["status"] == "ok" and again.get("others_cpu", 1.0) < rows[i]["others_cpu"]:
            rows[i].update(again)


def run(cases, providers, device, out_dir: Path, plots: bool = True, argv: list[str] = (), timing: bool = True,
        snapshots: bool = False, budget: int | None = None) -> list[dict]:
    """Measure ``cases`` x ``providers``; ``argv`` is recorded in env.json as the command.
    ``timing=False``: peak memory only (no latency, no machine rates, no roofline ratios). With
    ``snapshots``, a memory snapshot per measured (case, provider) in ``out_dir/memory/``; with a
    ``budget`` (bytes), the largest input each provider fits in it (``bench.memory``)."""
    precision = fp32_precision(device)
    env = environment(device, list(argv), precision)
    env["rates"] = rates = machine_rates_for(cases, device, precision) if timing else {}
    rows, skipped, timed = [], {}, []
    bar = tqdm(cases, desc="fade_triton bench", unit="case", dynamic_ncols=True)
    for case in bar:
        reference = None
        for provider in providers:
            row = {**case.row(), "provider": provider, "min_bytes": roofline.min_bytes(case),
                   "flops": roofline.flops(case), **floor_fields(case, rates)}
            reason = skip_reason(provider, case, device)
            if reason:
                skipped[(provider, reason)] = skipped.get((provider, reason), 0) + 1
                rows.append({**row, "status": "skipped", "reason": reason})
                continue
            bar.set_postfix_str(f"{case.op} {case.mode} {case.dtype} {case.size}^2 {case.layout}: {DISPLAY[provider]}")
            try:
                if reference is None and any(p in CHECKED for p in providers):
                    reference = check.reference(case, device)
                stem = memory.snapshot_stem(out_dir, case, provider) if snapshots else None
                row.update(measure_one(provider, case, device, reference, timing, stem))
            except torch.OutOfMemoryError:
                row.update(status="oom", reason="out of memory")
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if row["status"] == "ok":
                timed.append((len(rows), case, provider))
            rows.append(row)
    bar.close()
    retime_contended(rows, timed, device)
    rows = [with_floor_ratios(row) for row in rows]
    write_run(out_dir, rows, env)
    written = plot_all(rows, env, out_dir) if plots else []
    if plots and not written:
        print(f"no plot: {no_plot_reason(rows)}")
    written += compared_upsamplers_files(rows, env, out_dir, plots)
    if budget is not None:
        written += memory.budget_sweep(cases, providers, budget, device, out_dir)[1]
    report = attach_compile_report(out_dir, device, rows)
    print_summary(rows, env, skipped, out_dir, written + ([report] if report else []))
    return rows


def compared_upsamplers_files(rows, env, out_dir: Path, plots: bool) -> list[Path]:
    """Where other upsamplers than bilinear were timed: ``latency_vs_miou.csv`` (the measured
    latencies beside the papers' published mIoU and latencies, cited) and its plots."""
    if not any(r["provider"] in OTHER_UPSAMPLERS[1:] and r["status"] == "ok" for r in rows):
        return []
    written = [papers.write_csv(rows, out_dir / "latency_vs_miou.csv")]
    for name, fig in latency_vs_miou_figures(rows, env) if plots else ():
        fig.savefig(out_dir / name, dpi=130)
        written.append(out_dir / name)
    return written


def default_out_dir(device: torch.device, preset_name: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", device_name(device).lower().split(",")[0]).strip("-")
    return SCRATCH / f"{slug}_{dt.date.today().isoformat()}_{preset_name}"


def parser() -> argparse.ArgumentParser:
    def item(name, text):
        return textwrap.fill(text, 100, initial_indent=f"  {name:15s}", subsequent_indent=" " * 17,
                             break_on_hyphens=False)

    p = argparse.ArgumentParser(
        prog="python -m bench", formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__,
        epilog="\n".join(["presets (durations measured on the project's 2-core CPU machine):",
                          *(item(name, text) for name, text in PRESETS.items()), "", "providers (CLI/CSV "
                          "name, then the name in plots and console):",
                          *(item(k, f"{DISPLAY[k]}: {ABOUT[k]}") for k in PROVIDERS), "",
                          "What every column, plot and measuring rule means: bench/README.md."]))
    p.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="case list, see below (default: 'gpu' on a CUDA machine, 'quick' otherwise)")
    p.add_argument("--providers", nargs="+", choices=PROVIDERS, default=None, metavar="NAME",
                   help=f"providers to compare, from {', '.join(PROVIDERS)} (default: FADE's and bilinear; all "
                        "in the presets that compare upsamplers; those that cannot run here are skipped with "
                        "the reason)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: bench/results/_scratch/DEVICE_DATE_PRESET/, which git "
                        "ignores; commit a run by naming a folder under bench/results/)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for PyTorch (torch.set_num_threads; default: PyTorch's choice). On a "
                        "shared machine 1 thread is far less disturbed by other processes than several")
    p.add_argument("--no-plots", action="store_true", help="write results.csv and env.json only, no PNGs")
    p.add_argument("--memory-only", action="store_true",
                   help="measure peak memory only (outputs still checked; no timing, no machine rates)")
    cases = p.add_argument_group("case options", textwrap.fill(
        "each replaces its axis in every case of --preset (without --preset: in B=1, C=32, E=64, K=5, "
        "32^2 -> 64^2, float32, NCHW, FADE, fwd); lists multiply", 100, initial_indent="  ", subsequent_indent="  "))
    choices = {"dtype": DTYPES, "layout": LAYOUTS, "op": tuple(OPS), "mode": MODES}
    for field, flag in FLAGS.items():
        cases.add_argument(flag, dest=field, nargs="+", type=str if field in choices else int,
                           choices=choices.get(field), default=None, metavar="NAME" if field in choices else "N",
                           help=AXIS_HELP[field] + (f"from {', '.join(choices[field])}" if field in choices else ""))
    # the memory-experiment kit (bench/memory.py)
    p.add_argument("--snapshots", action="store_true",
                   help="a memory snapshot per timed case and provider in OUT/memory/ (CUDA: a pickle for "
                        "https://pytorch.org/memory_viz; CPU: the profiler's memory timeline as CSV); on by "
                        "default in the presets that compare upsamplers")
    p.add_argument("--budget", type=memory.parse_bytes, default=None, metavar="BYTES",
                   help="e.g. 8GiB: the largest size and batch each provider fits in this memory, fitted from "
                        "safe sizes and verified at the limit where this machine allows (budget_sweep.csv)")
    return p


# Case field -> its option; what a numeric option means where its name does not say
FLAGS = {"size": "--sizes", "channels": "--channels", "batch": "--batch", "kernel": "--kernel", "scale": "--scale",
         "embed": "--embed", "dtype": "--dtypes", "layout": "--layouts", "op": "--ops", "mode": "--modes"}
AXIS_HELP = {"size": "decoder H = W (the output is --scale times larger)", "channels": "C of both features",
             "batch": "batch size B", "kernel": "reassembly kernel size K (odd)", "scale": "upsampling factor",
             "embed": "FADE's embedding width E (FADE-Lite has none)", "dtype": "dtypes, ", "layout": "layouts, ",
             "op": "operators, ", "mode": "fwd (forward, no_grad) and/or fwd+bwd (forward and backward), "}


def cases_from(args, device: torch.device) -> tuple[list, str]:
    """The case list the arguments ask for (the default preset is ``device``'s) and a name for
    the run folder."""
    axes = {field: getattr(args, field) for field in FLAGS if getattr(args, field)}
    for field, values in axes.items():
        odd = field == "kernel"
        if isinstance(values[0], int) and any(v < 1 or (odd and v % 2 == 0) for v in values):
            raise SystemExit(f"{FLAGS[field]}: every value must be a positive{' odd' if odd else ''} integer, "
                             f"got {list(values)}")
    if args.preset or not axes:
        name = args.preset or ("gpu" if device.type == "cuda" else "quick")
        return with_axes(preset(name), **axes), name + ("-custom" if axes else "")
    return with_axes([CUSTOM_BASE], **axes), "custom"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cases, name = cases_from(args, device)
    providers = args.providers or default_providers(args.preset or "")
    run(cases, providers, device, args.out or default_out_dir(device, name), plots=not args.no_plots, argv=argv,
        timing=not args.memory_only, snapshots=args.snapshots or args.preset in COMPARISON_PRESETS,
        budget=args.budget)
