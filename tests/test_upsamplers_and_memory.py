"""The upsamplers the benchmark compares (DySample, CARAFEPack beside bilinear), the DySample
Figure 1 preset, the latency-vs-mIoU table, and the memory-experiment kit (memory timeline,
snapshots, the largest input under a budget), on CPU."""
import csv

import pytest
import torch
import torch.nn.functional as F

from bench import measure, memory, papers, providers, run
from bench.cases import Case, preset
from bench.upsamplers import DySample
from fade_triton.profiling import memory_timeline, peak_memory

OTHERS = ["dysample", "dysample_dyscope", "carafepack", "carafepack_mmcv"]


@pytest.mark.parametrize("dyscope", [False, True])
@pytest.mark.parametrize("scale", [2, 3])
def test_dysample_with_a_zero_generator_is_bilinear_upsampling(scale, dyscope):
    """The initial positions are bilinear upsampling's sample points (align_corners=False)."""
    up = DySample(8, scale, groups=4, dyscope=dyscope)
    torch.nn.init.zeros_(up.offset.weight)
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    want = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up.double()(x), want, rtol=0, atol=1e-12)


def test_dysample_offsets_move_each_groups_sample_points():
    """Scale 1, a constant offset of +1 pixel in x for group 0 only (0.25 * 4), 0 for group 1:
    group 0's channels read their right neighbour (the border repeats), group 1's are unmoved."""
    up = DySample(4, 1, groups=2).double()
    with torch.no_grad():
        up.offset.weight.zero_()
        up.offset.bias.copy_(torch.tensor([4.0, 0.0, 0.0, 0.0]))  # channels (axis, group): x0 x1 y0 y1
    x = torch.randn(1, 4, 3, 5, dtype=torch.float64)
    out = up(x)
    shifted = torch.cat([x[..., 1:], x[..., -1:]], dim=-1)
    torch.testing.assert_close(out[:, :2], shifted[:, :2], rtol=0, atol=1e-12)
    torch.testing.assert_close(out[:, 2:], x[:, 2:], rtol=0, atol=1e-12)


def test_dysample_preset_is_the_papers_figure_1_case():
    cases = preset("dysample-fig1")
    assert {(c.batch, c.channels, c.size, c.scale) for c in cases} == {(1, 256, 120, 2)}
    assert {(c.op, c.mode, c.dtype) for c in cases} == {(op, m, d) for op in ("fade", "fade_lite")
                                                        for m in ("fwd", "fwd+bwd")
                                                        for d in ("float32", "float16", "bfloat16")}
    assert set(providers.default_providers("dysample-fig1")) >= {"bilinear", *OTHERS, "triton", "torch", "naive"}
    assert not set(providers.default_providers("quick")) & set(OTHERS)


def test_memory_timeline_and_peak():
    def two_buffers():
        a = torch.ones(1000, device="cpu")  # 4000 bytes (the CPU profiler's records, on any test device)
        b = torch.ones(500, device="cpu")  # 2000 bytes
        del a
        return b

    live = [e["live_bytes"] for e in memory_timeline(two_buffers)]
    assert live == [4000, 6000, 2000, 0]  # the returned tensor is freed when the call's result is dropped
    assert peak_memory(two_buffers) == 6000


@pytest.mark.parametrize("text,want", [("8GiB", 8 * 2**30), ("512 MiB", 512 * 2**20), ("2GB", 2 * 10**9),
                                       ("1000", 1000)])
def test_parse_bytes(text, want):
    assert memory.parse_bytes(text) == want
    with pytest.raises(ValueError, match="budget"):
        memory.parse_bytes("8 parsecs")


@pytest.mark.slow
@pytest.mark.usefixtures("cpu_default_device")  # a --device cpu run, as in its own process
def test_comparison_run_writes_the_miou_table_plot_and_snapshots(tmp_path, monkeypatch):
    """A shortened measuring rule and no re-timing: what is tested is what a comparison run writes."""
    monkeypatch.setattr(run, "retime_contended", lambda *args: None)
    monkeypatch.setattr(measure, "CPU_MIN_RUNS", 3)
    monkeypatch.setattr(measure, "CPU_MIN_SECONDS", 0.01)
    monkeypatch.setattr(measure, "CPU_MAX_SECONDS", 0.05)
    monkeypatch.setattr(run, "machine_rates_for", lambda *args: {})
    cases = [Case(op="fade", batch=1, channels=8, size=6, mode=m) for m in ("fwd", "fwd+bwd")]
    rows = run.run(cases, ["torch", "bilinear", *OTHERS], torch.device("cpu"), tmp_path, snapshots=True)
    by = {(r["provider"], r["mode"]): r for r in rows}
    assert by[("carafepack_mmcv", "fwd")]["status"] == "skipped"
    for provider in ["torch", "bilinear", *OTHERS[:3]]:
        for mode in ("fwd", "fwd+bwd"):
            r = by[(provider, mode)]
            assert r["status"] == "ok" and "rel_err_vs_torch" not in r or provider == "torch", r
            timeline = list(csv.DictReader(open(tmp_path / r["snapshot"])))
            # the snapshot is the same call measured again (the profiler's records vary by a few
            # small allocations from one call to the next)
            assert max(int(e["live_bytes"]) for e in timeline) == pytest.approx(r["peak_bytes"], rel=0.1)
    assert by[("dysample", "fwd")]["params"] == 8 * 32 + 32  # 1x1 conv, C=8 -> 2 * 4 groups * 2 * 2
    assert by[("carafepack", "fwd")]["params"] == 8 * 64 + 64 + 64 * 100 * 9 + 100  # compressor, 3x3 encoder
    table = list(csv.DictReader(open(tmp_path / "latency_vs_miou.csv")))
    published = {r["method"]: r for r in table if r["kind"] == "published"}
    assert published["FADE"]["miou_high"] == "44.41" and "ICCV 2023" in published["DySample"]["miou_source"]
    assert published["SAPA"]["published_ms_low"] == "28.0" and "Figure 1" in published["CARAFE"]["latency_source"]
    measured = {r["provider"] for r in table if r["kind"] == "measured here"}
    assert measured == {"torch", "bilinear", *OTHERS[:3]}
    assert (tmp_path / "latency_vs_miou_float32.png").stat().st_size > 10_000
    assert papers.for_provider("triton").method == "FADE"


@pytest.mark.usefixtures("cpu_default_device")  # a --device cpu sweep, as in its own process
def test_budget_sweep_finds_and_verifies_the_largest_size(tmp_path):
    budget = 3 * 2**20
    case = Case(op="fade", batch=1, channels=8, size=8, mode="fwd+bwd")
    rows, files = memory.budget_sweep([case], ["torch", "naive", "dysample"], budget, torch.device("cpu"), tmp_path)
    assert {r["provider"] for r in rows} == {"torch", "naive", "dysample"}
    for r in rows:
        assert r["verified"] == "yes: fits", r
        assert r["measured_bytes"] <= budget
        # the fit predicts what was measured at the limit
        assert abs(r["measured_bytes"] - r["predicted_bytes"]) <= 0.1 * r["measured_bytes"], r
        # one size larger would not fit, by the fit
        bigger = r["fixed_bytes"] + r["bytes_per_pixel"] * (r["max_size"] + 1) ** 2
        assert bigger > budget
    by = {r["provider"]: r for r in rows}
    assert by["naive"]["max_size"] < by["torch"]["max_size"]  # the official form holds K*K*C per pixel
    assert [p.name for p in files] == ["budget_sweep.csv", "memory_vs_resolution_budget_fade_fwd_bwd_float32_nchw.png"]
