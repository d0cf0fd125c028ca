"""What a run writes and reads back: ``results.csv`` (one tidy row per case x provider) and
``env.json`` (machine, versions, precision, measured rates, command, date)."""
from __future__ import annotations

import csv
import datetime as dt
import importlib.metadata
import json
import os
import platform
from pathlib import Path

import torch

from fade_triton.ops.mmcv_path import mmcv_carafe_source

CASE_FIELDS = ["op", "mode", "dtype", "layout", "batch", "channels", "size", "scale", "kernel", "embed", "groups",
               "sweep"]
MEASURED_FIELDS = ["provider", "status", "reason", "ms_median", "ms_p20", "ms_p80", "runs", "others_cpu", "contended",
                   "wall_ms", "gb_per_s", "peak_bytes", "rel_err_vs_torch", "grad_rel_err_vs_torch", "gflops",
                   "params", "min_bytes", "flops", "floor_ms", "floor_bound", "x_floor", "snapshot"]
ENV_FIELDS = ["fp32_precision", "device", "torch", "triton"]  # repeated on every row: each row stands alone
FIELDS = CASE_FIELDS + MEASURED_FIELDS + ENV_FIELDS
INTS = {"batch", "channels", "size", "scale", "kernel", "embed", "groups", "runs", "contended", "peak_bytes", "params",
        "min_bytes", "flops"}
FLOATS = {"ms_median", "ms_p20", "ms_p80", "others_cpu", "wall_ms", "gb_per_s", "rel_err_vs_torch",
          "grad_rel_err_vs_torch", "gflops", "floor_ms", "x_floor"}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor())
    return f"CPU ({os.cpu_count()} cores{', ' + model if model else ''})"


def _version(pkg):
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: torch.device, argv: list[str], fp32_precision: str) -> dict:
    return {
        "device": device_name(device), "device_type": device.type,
        "torch": torch.__version__, "triton": _version("triton"), "cuda": torch.version.cuda,
        "mmcv": _version("mmcv"), "mmcv_carafe": mmcv_carafe_source() if device.type == "cuda" else None,
        "python": platform.python_version(), "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "command": " ".join(["python", "-m", "bench", *argv]),
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "fp32_precision": fp32_precision,
        "fp32_precision_means": "float32 convolutions and Triton dot products run in this precision "
                                "(fade_triton.backend.float32_conv_precision on CUDA; IEEE on CPU); the "
                                "float32 roofline rate was measured with a matmul in it",
    }


def write_run(out_dir: Path, rows: list[dict], env: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows({**{k: env[k] for k in ENV_FIELDS}, **row} for row in rows)
    (out_dir / "env.json").write_text(json.dumps(env, indent=2) + "\n")


def read_run(run_dir: Path) -> tuple[list[dict], dict]:
    """Rows as ``run`` returns them (numbers as numbers, empty cells absent) and the env."""
    rows = []
    with open(Path(run_dir) / "results.csv", newline="") as f:
        for raw in csv.DictReader(f):
            row = {"layout": "nchw", "groups": 1}  # runs from before these columns: NCHW, one group
            for key, value in raw.items():
                if value not in ("", None):
                    row[key] = int(value) if key in INTS else float(value) if key in FLOATS else value
            rows.append(row)
    return rows, json.loads((Path(run_dir) / "env.json").read_text())
