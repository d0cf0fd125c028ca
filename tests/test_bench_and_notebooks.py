"""The benchmark's quick preset end to end on CPU, its roofline arithmetic, its refusal to
time a provider whose output or gradients disagree, and the notebooks run top to bottom."""
import csv
import json
from pathlib import Path

import pytest
import torch

from bench import measure, providers, roofline, run
from bench.cases import Case

ROOT = Path(__file__).resolve().parent.parent
# The benchmark runs here with --device cpu, in this process: CPU the default device too, as in a
# `python -m bench --device cpu` process (tests/conftest.py, cpu_default_device).
pytestmark = pytest.mark.usefixtures("cpu_default_device")


def test_roofline_hand_computed_case():
    case = Case(op="fade", batch=1, channels=4, size=2, dtype="float32", mode="fwd", scale=2, kernel=3, embed=2)
    # bytes: en 1*4*4*4 + de 1*4*2*2 + out 1*4*4*4 = 144 elements, 4 bytes each
    assert roofline.min_bytes(case) == 576
    # the function's products (FlopCounterMode's count; no elementwise work), multiply-add = 2:
    # 16 high-res pixels: enc 2*4*2=16, 3x3 2*9*2*9=324, reassembly 2*9*4=72 -> 412
    # 4 low-res pixels: dec 16, 3x3 324, gate 2*4=8 -> 348
    assert roofline.flops(case) == 16 * 412 + 4 * 348 == 7984
    assert roofline.floor_seconds(case, bandwidth=576.0, flop_rate=7984 / 2) == pytest.approx(2.0)
    assert roofline.floor_bound(case, bandwidth=576.0, flop_rate=7984 / 2) == "flops"
    assert roofline.floor_bound(case, bandwidth=576.0 / 3, flop_rate=7984 / 2) == "bytes"
    both = Case(**{**case.row(), "mode": "fwd+bwd"})
    assert roofline.min_bytes(both) == (5 * 4 + 3) * 16 * 4 and roofline.flops(both) == 3 * 7984


@pytest.mark.slow
def test_quick_preset_end_to_end(tmp_path, monkeypatch, capfd):
    # The quick preset as `python -m bench` runs it, with a shorter measuring rule (the rule's
    # constants are policy; what is tested here is that every part of a run works) and one
    # PyTorch thread, which keeps the test's duration steady on a machine shared with other jobs.
    monkeypatch.setattr(measure, "CPU_MIN_RUNS", 3)
    monkeypatch.setattr(measure, "CPU_MIN_SECONDS", 0.02)
    monkeypatch.setattr(measure, "CPU_MAX_SECONDS", 0.15)
    threads = torch.get_num_threads()
    try:
        run.main(["--preset", "quick", "--device", "cpu", "--threads", "1", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    console = capfd.readouterr()
    assert "profiler_start" not in console.err + console.out  # the CPU profiler's lines are captured
    assert "Columns:" in console.out and "x floor" in console.out and str(tmp_path) in console.out
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["device"].startswith("CPU") and env["torch"] == torch.__version__ and "quick" in env["command"]
    assert env["fp32_precision"] == "ieee" and env["rates"]["float32"]["precision"] == "ieee"
    ok = {(r["op"], r["mode"], r["layout"], r["size"], r["provider"]) for r in rows if r["status"] == "ok"}
    for op, layout in (("fade", "nchw"), ("fade_lite", "nchw"), ("fade", "channels_last")):
        for mode in ("fwd", "fwd+bwd"):
            for p in ("torch", "naive", "bilinear"):
                assert (op, mode, layout, "32", p) in ok
    for r in rows:
        assert (r["device"], r["torch"], r["fp32_precision"]) == (env["device"], env["torch"], "ieee")
        if r["status"] != "ok":
            assert r["status"] == "skipped" and r["reason"]
            continue
        assert 0 < float(r["ms_p20"]) <= float(r["ms_median"]) <= float(r["ms_p80"])
        assert float(r["wall_ms"]) > 0 and int(r["runs"]) >= 3 and int(r["peak_bytes"]) > 0
        assert r["floor_bound"] in ("bytes", "flops")
        if r["provider"] == "bilinear":  # not FADE: FADE's floor says nothing about it
            assert r["x_floor"] == "" and r["gb_per_s"] == ""
        else:
            assert float(r["x_floor"]) > 0
            gb_per_s = int(r["min_bytes"]) / (float(r["ms_median"]) * 1e-3) / 1e9
            assert float(r["gb_per_s"]) == pytest.approx(gb_per_s)
    for r in rows:  # FLOPs and parameters, written out from the README's formulas (C=32, E=64, K=5, B=1)
        if r["status"] != "ok":
            continue
        lite, h = r["op"] == "fade_lite", int(r["size"])
        emb, ek = (25, 1) if lite else (64, 64)
        gflops = 2 * (4 * h * h * (32 * emb + 9 * ek * 25 + 25 * 32) + h * h * (32 * emb + 9 * ek * 25 + 32)) / 1e9
        params = 51 * 32 + 276 if lite else 129 * 32 + 14490
        bilinear = r["provider"] == "bilinear"
        assert (float(r["gflops"]), int(r["params"])) == ((0, 0) if bilinear else (pytest.approx(gflops), params))
    naive = [r for r in rows if r["provider"] == "naive" and r["status"] == "ok"]
    assert max(float(r["rel_err_vs_torch"]) for r in naive) < 1e-5
    assert max(float(r["grad_rel_err_vs_torch"]) for r in naive if r["mode"] == "fwd+bwd") < 1e-5
    for name in ("latency_vs_resolution", "memory_vs_resolution", "speedup", "roofline_fraction"):
        assert (tmp_path / f"{name}_float32.png").stat().st_size > 10_000


@pytest.mark.parametrize("wrong", ["output", "gradient"])
def test_a_provider_that_disagrees_is_not_timed(tmp_path, monkeypatch, wrong):
    real_build = providers.build

    def broken(provider, case, device):
        module, fn = real_build(provider, case, device)
        if provider != "naive":
            return module, fn
        if wrong == "output":
            return module, lambda en, de: fn(en, de) * 1.01

        def wrong_gradients(en, de):
            out = fn(en, de)
            return out + 0.01 * (out - out.detach())  # the same values; every gradient 1.01x

        return module, wrong_gradients

    monkeypatch.setattr(run, "build", broken)
    monkeypatch.setattr(run, "machine_rates_for", lambda *args: {})
    cases = [Case(op="fade", batch=1, channels=8, size=8, mode="fwd+bwd")]
    rows = run.run(cases, ["torch", "naive"], torch.device("cpu"), tmp_path, plots=False)
    by = {r["provider"]: r for r in rows}
    assert by["torch"]["status"] == "ok"
    assert by["naive"]["status"] == "mismatch" and "ms_median" not in by["naive"]
    assert ("output" in by["naive"]["reason"]) == (wrong == "output")
    if wrong == "gradient":
        assert by["naive"]["rel_err_vs_torch"] < 1e-6 and by["naive"]["grad_rel_err_vs_torch"] > 5e-3


def _execute_notebook(name):
    """Run notebooks/NAME.ipynb top to bottom as nbclient does headlessly; its code cells' outputs."""
    nbformat = pytest.importorskip("nbformat", reason="notebook tests need the [test] extra")
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and "profiler_start" in o.text]
    return outputs


def _images(outputs):
    return [o for o in outputs if "image/png" in o.get("data", {})]


@pytest.mark.slow
@pytest.mark.parametrize("name,figures", [("memory_profiling", 1), ("performance_curves", 4),
                                          ("use_in_a_decoder", 2)])
def test_notebook_runs_top_to_bottom_and_shows_its_figures(name, figures, monkeypatch):
    # The notebooks' kernel runs as a user's would on this machine: on CPU without Triton's
    # interpreter (the kernel tests cover that path; in a notebook it only makes them slow).
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("FADE_BENCH_RUN", raising=False)
    outputs = _execute_notebook(name)
    assert len(_images(outputs)) >= figures  # drawn as PNGs, not only as "<Figure size ...>" text


@pytest.mark.slow
def test_performance_notebook_shows_a_new_run(tmp_path, monkeypatch):
    """FADE_BENCH_RUN names a run folder made just now (memory-only, a channels sweep): the
    notebook shows that run's figure."""
    pytest.importorskip("nbformat", reason="notebook tests need the [test] extra")  # before the run it would show
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    run.main(["--channels", "4", "8", "--sizes", "4", "--providers", "torch", "naive", "--memory-only",
              "--device", "cpu", "--out", str(tmp_path / "new-run")])
    monkeypatch.setenv("FADE_BENCH_RUN", str(tmp_path / "new-run"))
    outputs = _execute_notebook("performance_curves")
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "new-run |" in text and "memory_vs_channels_float32.png" in text
    assert len(_images(outputs)) == 1
