"""The benchmark's case options and memory-only mode from the command line, plots against
whichever axis a run sweeps (or the printed reason for none), and ``bench`` as an installed
package."""
import csv
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from bench import measure, run
from bench.cases import CUSTOM_BASE, preset, with_axes

ROOT = Path(__file__).resolve().parent.parent
# The benchmark runs here with --device cpu, in this process: CPU the default device too, as in a
# `python -m bench --device cpu` process (tests/conftest.py, cpu_default_device).
pytestmark = pytest.mark.usefixtures("cpu_default_device")


def _cases(argv):
    return run.cases_from(run.parser().parse_args(argv), torch.device("cpu"))


def test_case_options_compose_into_a_case_list():
    cases, name = _cases(["--channels", "16", "32", "--modes", "fwd", "fwd+bwd", "--kernel", "3"])
    assert name == "custom" and len(cases) == 4
    assert {(c.channels, c.mode) for c in cases} == {(16, "fwd"), (32, "fwd"), (16, "fwd+bwd"), (32, "fwd+bwd")}
    assert all((c.kernel, c.size, c.batch, c.op, c.sweep) == (3, CUSTOM_BASE.size, 1, "fade", "channels")
               for c in cases)
    # a preset keeps its cases and sweep labels when only non-numeric axes are replaced
    quick, _ = _cases(["--preset", "quick"])
    fl32, name = _cases(["--preset", "quick", "--layouts", "nchw", "--ops", "fade"])
    assert name == "quick-custom" and fl32 == [c for c in quick if c.layout == "nchw" and c.op == "fade"]
    # replacing a numeric axis of a preset that sweeps another: both vary, no single axis to plot
    assert {c.sweep for c in _cases(["--preset", "quick", "--batch", "1", "2"])[0]} == {"mixed"}
    assert {c.sweep for c in _cases(["--preset", "quick", "--sizes", "16"])[0]} == {"single"}
    gpu, _ = _cases(["--preset", "gpu"])  # a preset alone: its cases as they are, shared ones in each sweep
    assert gpu == preset("gpu") and {c.sweep for c in gpu} == {"resolution", "channels", "batch"}
    # duplicates made by a replaced axis are dropped
    assert len(with_axes(preset("quick"), size=(8,), layout=("nchw",))) == 4


@pytest.mark.parametrize("argv,match", [(["--kernel", "4"], "--kernel: .*odd"), (["--sizes", "0"], "--sizes"),
                                        (["--batch", "-1"], "--batch")])
def test_bad_case_options_say_which(argv, match):
    with pytest.raises(SystemExit, match=match):
        _cases(argv)


def _fast_measuring(monkeypatch):
    monkeypatch.setattr(measure, "CPU_MIN_RUNS", 3)
    monkeypatch.setattr(measure, "CPU_MIN_SECONDS", 0.01)
    monkeypatch.setattr(measure, "CPU_MAX_SECONDS", 0.05)
    monkeypatch.setattr(run, "machine_rates_for", lambda *args: {})  # no roofline: not what is tested


def test_memory_only_run_plots_memory_against_the_swept_axis(tmp_path, capsys):
    run.main(["--channels", "4", "8", "--sizes", "4", "--providers", "torch", "naive", "--memory-only",
              "--device", "cpu", "--out", str(tmp_path)])
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [(r["channels"], r["provider"], r["sweep"]) for r in rows] == [
        ("4", "torch", "channels"), ("4", "naive", "channels"), ("8", "torch", "channels"), ("8", "naive", "channels")]
    assert all(r["status"] == "ok" and int(r["peak_bytes"]) > 0 and r["ms_median"] == "" for r in rows)
    assert float(rows[1]["rel_err_vs_torch"]) < 1e-5  # still checked
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["memory_vs_channels_float32.png"]
    assert "memory_vs_channels_float32.png" in capsys.readouterr().out


@pytest.mark.slow
def test_timed_kernel_sweep_plots_latency_memory_and_speedup(tmp_path, monkeypatch):
    _fast_measuring(monkeypatch)
    run.main(["--kernel", "3", "5", "--sizes", "4", "--channels", "4", "--providers", "torch", "naive",
              "--device", "cpu", "--out", str(tmp_path)])
    for name in ("latency_vs_kernel", "memory_vs_kernel", "speedup_vs_kernel"):
        assert (tmp_path / f"{name}_float32.png").stat().st_size > 10_000


def test_a_run_without_one_swept_axis_says_why_it_has_no_plot(tmp_path, capsys):
    argv = ["--providers", "torch", "--memory-only", "--device", "cpu", "--sizes", "4"]
    run.main([*argv, "--channels", "4", "8", "--batch", "1", "2", "--out", str(tmp_path / "mixed")])
    assert "no plot: the cases vary more than one of" in capsys.readouterr().out
    run.main([*argv, "--channels", "4", "--out", str(tmp_path / "single")])
    assert "no plot: no axis varies" in capsys.readouterr().out
    assert not list(tmp_path.rglob("*.png"))


@pytest.mark.slow
def test_bench_is_importable_from_the_built_package(tmp_path):
    """pyproject packages bench: a wheel built from the tree holds it, and `python -m bench`
    runs from another folder with nothing but that wheel on the path (pure Python: importable
    from the zip)."""
    source = tmp_path / "source"  # a copy: setuptools builds in the source folder, leaving build/ there
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for package in ("fade_triton", "bench"):
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__", "results", "mmcv_carafe_ext"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(source)], check=True, cwd=tmp_path)
    wheel = next(tmp_path.glob("fade_triton-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"bench/run.py", "bench/__main__.py", "bench/tools/aot.py"} <= set(names)
    env = {**os.environ, "PYTHONPATH": str(wheel)}
    env.pop("TRITON_INTERPRET", None)
    out = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, check=True).stdout
    assert "--memory-only" in out and "case options" in out

