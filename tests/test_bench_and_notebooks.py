"""The benchmark's quick preset end to end on CPU, its roofline arithmetic, its refusal to
time a provider that disagrees, and the notebooks run top to bottom."""
import csv
import json
from pathlib import Path

import pytest
import torch

from bench import providers, roofline, run
from bench.cases import Case

ROOT = Path(__file__).resolve().parent.parent


def test_roofline_hand_computed_case():
    case = Case(op="fade", batch=1, channels=4, size=2, dtype="float32", mode="fwd", scale=2, kernel=3, embed=2)
    # bytes: en 1*4*4*4 + de 1*4*2*2 + out 1*4*4*4 = 144 elements, 4 bytes each
    assert roofline.min_bytes(case) == 576
    # 16 high-res pixels: enc 2*4*2=16, 3x3 2*9*2*9=324, reassembly 2*9*4=72, blend 3*4=12, softmax 4*9=36 -> 460
    # 4 low-res pixels: dec 16, 3x3 324, gate 2*4=8 -> 348
    assert roofline.flops(case) == 16 * 460 + 4 * 348
    assert roofline.floor_seconds(case, bandwidth=576.0, flop_rate=8752 / 2) == pytest.approx(2.0)
    both = Case(**{**case.row(), "mode": "fwd+bwd"})
    assert roofline.min_bytes(both) == (5 * 4 + 3) * 16 * 4 and roofline.flops(both) == 3 * 8752


def test_quick_preset_end_to_end(tmp_path):
    run.main(["--preset", "quick", "--device", "cpu", "--out", str(tmp_path)])
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["device"].startswith("CPU") and env["torch"] == torch.__version__ and "quick" in env["command"]
    ok = {(r["op"], r["mode"], r["size"], r["provider"]) for r in rows if r["status"] == "ok"}
    for op in ("fade", "fade_lite"):
        for mode in ("fwd", "fwd+bwd"):
            for p in ("torch", "naive", "bilinear"):
                assert (op, mode, "32", p) in ok
    for r in rows:
        if r["status"] == "ok":
            assert float(r["ms_median"]) > 0 and int(r["peak_bytes"]) > 0 and float(r["x_floor"]) > 0
        else:
            assert r["status"] == "skipped" and r["reason"]
    naive = {(r["op"], r["mode"], r["size"]): float(r["rel_err_vs_torch"]) for r in rows
             if r["provider"] == "naive" and r["status"] == "ok"}
    assert max(naive.values()) < 1e-5
    for name in ("latency_vs_resolution", "memory_vs_resolution", "speedup", "roofline_fraction"):
        assert (tmp_path / f"{name}_float32.png").stat().st_size > 10_000


def test_a_provider_that_disagrees_is_not_timed(tmp_path, monkeypatch):
    real_build = providers.build

    def broken(provider, case, device):
        module, fn = real_build(provider, case, device)
        return module, (lambda en, de: fn(en, de) * 1.01) if provider == "naive" else fn

    monkeypatch.setattr(run, "build", broken)
    cases = [Case(op="fade", batch=1, channels=8, size=8)]
    rows = run.run(cases, ["torch", "naive"], torch.device("cpu"), tmp_path, plots=False)
    naive = next(r for r in rows if r["provider"] == "naive")
    assert naive["status"] == "mismatch" and "ms_median" not in naive


@pytest.mark.parametrize("name", ["memory_profiling", "performance_curves"])
def test_notebook_runs_top_to_bottom(name):
    nbformat = pytest.importorskip("nbformat", reason="notebook tests need the [test] extra")
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
