"""Entry point: ``python -m bench [--preset quick|headline|segformer-b1|gpu] [--out DIR]``.

For every case and provider: check the output against the ``torch`` path (a provider that
disagrees is recorded as ``mismatch`` and not timed), measure peak memory above the inputs,
time it, and relate the time to the roofline floor. Writes ``results.csv``, ``env.json`` and
PNG plots to the output directory and prints a summary. Providers that cannot run here are
recorded as ``skipped`` with the reason, and the reasons are printed at the end.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fade_triton.profiling import peak_memory

from . import measure, roofline
from .cases import PRESETS, preset
from .plots import plot_all
from .providers import CHECKED, PROVIDERS, build, make_inputs, skip_reason

TOLERANCE = {"float32": 2e-3, "float16": 3e-2, "bfloat16": 3e-2}  # vs the torch path, same dtype
FIELDS = ["op", "mode", "dtype", "batch", "channels", "size", "scale", "kernel", "embed", "sweep", "provider",
          "status", "reason", "ms_median", "ms_p20", "ms_p80", "peak_bytes", "rel_err_vs_torch",
          "min_bytes", "flops", "floor_ms", "x_floor"]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return f"CPU ({os.cpu_count()} cores{', ' + model if model else ''})"


def environment(device: torch.device, argv: list[str]) -> dict:
    def version(pkg):
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "device": device_name(device), "device_type": device.type,
        "torch": torch.__version__, "triton": version("triton"), "cuda": torch.version.cuda,
        "mmcv": version("mmcv"), "python": platform.python_version(), "platform": platform.platform(),
        "command": " ".join(["python", "-m", "bench", *argv]),
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double(), ref.detach().double()
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out - ref).norm() / ref.norm()).item()


def measure_one(provider, case, device, reference):
    """One provider on one case: check, peak memory, latency. Returns the row's measured fields."""
    backward = case.mode == "fwd+bwd"
    module, fn = build(provider, case, device)
    torch.manual_seed(1)
    en, de = make_inputs(case, device, backward)
    with torch.no_grad():
        out = fn(en, de)
    row = {}
    if provider in CHECKED:
        row["rel_err_vs_torch"] = err = rel_err(out, reference)
        if not err <= TOLERANCE[case.dtype]:
            return {**row, "status": "mismatch", "reason": f"rel. error {err:.2e} vs the torch path"}
    grad = torch.randn_like(out) if backward else None
    del out

    def once():
        if backward:
            fn(en, de).backward(grad)
        else:
            with torch.no_grad():
                fn(en, de)

    once()  # warm-up: compilation and caches stay out of the memory figure
    module.zero_grad(set_to_none=True)
    en.grad = de.grad = None
    row["peak_bytes"] = peak_memory(once, device)
    sets = [(en, de)] + [make_inputs(case, device, backward)
                         for _ in range(measure.n_input_sets(en.nbytes + de.nbytes, device) - 1)]
    call = measure.rotating(fn, sets, grad)
    with torch.set_grad_enabled(backward):
        row["ms_median"], row["ms_p20"], row["ms_p80"] = measure.latency(call, device)
    return {**row, "status": "ok"}


def run(cases, providers, device, out_dir: Path, plots: bool = True, argv: list[str] = ()) -> list[dict]:
    """Measure ``cases`` x ``providers``; ``argv`` is recorded in env.json as the command."""
    env = environment(device, list(argv))
    rates = {}
    for name in sorted({c.dtype for c in cases if skip_reason("torch", c, device) is None}):
        rates[name] = measure.machine_rates(device, getattr(torch, name))
    env["rates"] = rates
    rows, skipped = [], {}
    for case in tqdm(cases, desc="fade_triton bench", unit="case"):
        reference = None
        for provider in providers:
            base = {**case.row(), "provider": provider, "min_bytes": roofline.min_bytes(case),
                    "flops": roofline.flops(case)}
            if case.dtype in rates:
                base["floor_ms"] = 1e3 * roofline.floor_seconds(case, **{k: rates[case.dtype][k] for k in ("bandwidth", "flop_rate")})
            reason = skip_reason(provider, case, device)
            if reason:
                skipped.setdefault((provider, reason), 0)
                skipped[(provider, reason)] += 1
                rows.append({**base, "status": "skipped", "reason": reason})
                continue
            try:
                if reference is None:
                    module, fn = build("torch", case, device)
                    torch.manual_seed(1)
                    with torch.no_grad():
                        reference = fn(*make_inputs(case, device, False))
                measured = measure_one(provider, case, device, reference)
            except torch.OutOfMemoryError:
                measured = {"status": "oom", "reason": "out of memory"}
            if device.type == "cuda":
                torch.cuda.empty_cache()
            row = {**base, **measured}
            if row.get("ms_median") and row.get("floor_ms"):
                row["x_floor"] = row["ms_median"] / row["floor_ms"]
            rows.append(row)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "env.json").write_text(json.dumps(env, indent=2) + "\n")
    written = plot_all(rows, env, out_dir) if plots else []
    print_summary(rows, env, skipped, out_dir, written)
    return rows


def print_summary(rows, env, skipped, out_dir, written):
    print(f"\n{env['device']} | torch {env['torch']} | triton {env['triton']} | {env['date_utc']}")
    print(f"{'case':52s} {'provider':15s} {'ms':>9s} {'peak MiB':>9s} {'x floor':>8s}")
    for r in rows:
        if r["status"] == "skipped":
            continue
        label = f"{r['op']} {r['mode']} {r['dtype']} B{r['batch']} C{r['channels']} {r['size']}^2"
        if r["status"] != "ok":
            print(f"{label:52s} {r['provider']:15s} {r['status']}: {r['reason']}")
            continue
        print(f"{label:52s} {r['provider']:15s} {r['ms_median']:9.3f} {r['peak_bytes'] / 2**20:9.2f} "
              f"{r.get('x_floor', float('nan')):8.1f}")
    for (provider, reason), n in sorted(skipped.items()):
        print(f"skipped {provider} ({n} cases): {reason}")
    print(f"wrote {out_dir / 'results.csv'}, {out_dir / 'env.json'}" + "".join(f", {p.name}" for p in written))


def default_out_dir(device: torch.device, preset_name: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", device_name(device).lower().split(",")[0]).strip("-")
    return Path("bench/results") / f"{slug}_{dt.date.today().isoformat()}_{preset_name}"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=PRESETS, default=None,
                        help="case list (default: 'gpu' on a CUDA machine, 'quick' otherwise)")
    parser.add_argument("--providers", nargs="+", choices=PROVIDERS, default=list(PROVIDERS))
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: bench/results/DEVICE_DATE_PRESET)")
    parser.add_argument("--no-plots", action="store_true")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = args.preset or ("gpu" if device.type == "cuda" else "quick")
    out_dir = args.out or default_out_dir(device, name)
    if device.type == "cpu":
        print("No CUDA device: running the CPU-capable providers; GPU-only ones are skipped (reasons at the end).")
    run(preset(name), args.providers, device, out_dir, plots=not args.no_plots, argv=argv)
