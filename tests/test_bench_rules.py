"""The benchmark's measuring rules, each on its own: no gradient accumulates across timed
calls, a timing taken while the machine was busy is taken again, the float32 floor uses the
rate at the precision the kernels run at, the CPU profiler's C-level output is hidden unless
the measurement fails, the speed-up range and the rule that marks it, the compile-report
hook, the CLI's help and where runs go."""
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from bench import measure, plots, roofline, run
from bench.cases import PRESETS, Case, make_inputs
from fade_triton import backend
from fade_triton.profiling import captured_stderr

ROOT = Path(__file__).resolve().parent.parent
# The benchmark runs here with --device cpu, in this process: CPU the default device too, as in a
# `python -m bench --device cpu` process (tests/conftest.py, cpu_default_device).
pytestmark = pytest.mark.usefixtures("cpu_default_device")


def test_timed_fwd_bwd_calls_do_not_accumulate_gradients(tmp_path, monkeypatch):
    built, timed_inputs, grads_after_each_call = {}, [], []
    real_build, real_make_inputs = run.build, run.make_inputs

    def spy_build(provider, case, device):
        built[provider] = real_build(provider, case, device)
        return built[provider]

    def spy_make_inputs(case, device, requires_grad, seed=1):
        timed_inputs.append(real_make_inputs(case, device, requires_grad, seed))
        return timed_inputs[-1]

    def three_calls(call, device, back_to_back=None):
        leaves = [*timed_inputs[0], *built["torch"][0].parameters()]
        for _ in range(3):
            call()
            grads_after_each_call.append([t.grad.clone() for t in leaves])
        return {"ms_median": 1.0, "ms_p20": 1.0, "ms_p80": 1.0, "runs": 3, "wall_ms": 1.0}

    monkeypatch.setattr(run, "build", spy_build)
    monkeypatch.setattr(run, "make_inputs", spy_make_inputs)
    monkeypatch.setattr(run, "machine_rates_for", lambda *args: {})
    monkeypatch.setattr(measure, "latency", three_calls)
    run.run([Case(op="fade", batch=1, channels=8, size=8, mode="fwd+bwd")], ["torch"], torch.device("cpu"),
            tmp_path, plots=False)
    first, *later = grads_after_each_call
    assert len(later) == 2 and all(g.abs().sum() > 0 for g in first)  # en, de and every parameter
    for grads in later:
        for got, once in zip(grads, first):
            torch.testing.assert_close(got, once)  # accumulation would give 2x, 3x


@pytest.mark.parametrize("op", ["fade", "carafe"])
def test_inputs_are_drawn_on_the_cpu_whatever_the_default_device(op):
    """The seeded inputs are drawn with a CPU generator on the CPU, then moved: the same values
    under another default device (the CUDA suite sets CUDA; a CPU generator cannot draw there,
    and under meta, as here, nothing drawn could be moved back)."""
    case = Case(op=op, batch=2, channels=4, size=3, kernel=3, groups=2 if op == "carafe" else 1)
    want = make_inputs(case, torch.device("cpu"), requires_grad=False)
    with torch.device("meta"):
        got = make_inputs(case, torch.device("cpu"), requires_grad=False)
    assert len(got) == len(want) == 2
    assert all(g.device.type == "cpu" and torch.equal(g, w) for g, w in zip(got, want))


def test_a_timing_taken_while_the_machine_was_busy_is_taken_again(tmp_path, monkeypatch):
    others = iter([0.6, 0.1])  # busy the first time, calm the second; a third call would fail

    def fake_latency(call, device, back_to_back=None):
        call()
        share = next(others)
        return {"ms_median": 1.0, "ms_p20": 1.0, "ms_p80": 1.0, "runs": 1, "wall_ms": 1.0, "others_cpu": share,
                "contended": int(share > 0.25)}

    monkeypatch.setattr(measure, "latency", fake_latency)
    monkeypatch.setattr(run, "machine_rates_for", lambda *args: {})
    case = Case(op="fade", batch=1, channels=8, size=8)
    rows = run.run([case], ["torch"], torch.device("cpu"), tmp_path, plots=False)
    assert rows[0]["status"] == "ok" and rows[0]["others_cpu"] == 0.1


def test_fp32_floor_uses_the_rate_at_the_precision_the_kernels_run_at(monkeypatch):
    rate = {"tf32": 4e14, "ieee": 5e13}
    asked = []
    monkeypatch.setattr(measure, "copy_bandwidth", lambda device: 1e14)
    monkeypatch.setattr(measure, "matmul_rate",
                        lambda device, dtype, precision: asked.append(precision) or rate[precision])
    case = Case(op="fade", batch=8, channels=256, size=64)  # compute-bound at these rates
    cuda = torch.device("cuda")  # a device object only: the measurements are the fakes above
    for setting in ("tf32", "ieee"):
        monkeypatch.setattr(backend, "float32_conv_precision", lambda setting=setting: setting)
        precision = run.fp32_precision(cuda)
        rates = run.machine_rates_for([case], cuda, precision)
        assert precision == setting and asked[-1] == setting and rates["float32"]["precision"] == setting
        floor = run.floor_fields(case, rates)
        assert floor["floor_bound"] == "flops"
        assert floor["floor_ms"] == pytest.approx(1e3 * roofline.flops(case) / rate[setting])
    monkeypatch.setattr(backend, "float32_conv_precision", lambda: "tf32")
    assert run.fp32_precision(torch.device("cpu")) == "ieee"  # no TF32 on a CPU


def test_cuda_matmul_precision_is_set_for_the_block_and_restored():
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    for precision in ("tf32", "ieee"):
        with measure.cuda_matmul_precision(precision):
            assert matmul.fp32_precision == precision
        assert matmul.fp32_precision == before


def test_c_level_stderr_is_hidden_unless_the_block_fails(capfd):
    with captured_stderr():
        os.write(2, b"profiler_start\n")
    assert "profiler_start" not in capfd.readouterr().err
    with pytest.raises(RuntimeError, match="measuring failed"):
        with captured_stderr():
            os.write(2, b"what the C code said\n")
            raise RuntimeError("measuring failed")
    assert "what the C code said" in capfd.readouterr().err
    os.write(2, b"after\n")  # fd 2 is the real stderr again
    assert "after" in capfd.readouterr().err


def test_speedup_range_and_the_rule_that_marks_it():
    base = {"ms_median": 10.0, "ms_p20": 9.0, "ms_p80": 12.0}
    ours = {"ms_median": 2.0, "ms_p20": 1.8, "ms_p80": 2.5}
    ratio, low, high = plots.speedup(base, ours)
    assert (ratio, low, high) == pytest.approx((5.0, 9.0 / 2.5, 12.0 / 1.8))
    assert not plots.supported(low, high)  # 6.67 / 3.6 = 1.85 > 1.5
    narrow = ({**base, "ms_p80": 10.5}, {**ours, "ms_p20": 1.9, "ms_p80": 2.1})
    assert plots.supported(*plots.speedup(*narrow)[1:], *narrow)  # 10.5/1.9 / (9/2.1) = 1.29
    busy = ({**narrow[0], "others_cpu": 0.5, "contended": 1}, narrow[1])  # others took CPU it needed
    assert not plots.supported(*plots.speedup(*busy)[1:], *busy)


@pytest.mark.parametrize("threads, contended", [(2, 1), (1, 0)])
def test_other_processes_load_is_measured(monkeypatch, threads, contended):
    # other processes keep one of two cores busy while this one sleeps: they take CPU that
    # two PyTorch threads would need, and leave the core one thread needs
    busy = iter([100.0, 100.5])
    monkeypatch.setattr(measure, "_busy_cpu_seconds", lambda: next(busy))
    monkeypatch.setattr(measure.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(measure.torch, "get_num_threads", lambda: threads)
    load = {}
    with measure.other_processes_load(load):
        time.sleep(0.5)
    assert load["others_cpu"] == pytest.approx(0.5, rel=0.1) and load["contended"] == contended


def test_compile_report_is_attached_where_it_applies(tmp_path, monkeypatch):
    """Only to a CUDA run that timed the triton provider on an architecture the report covers."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    timed = [{"provider": "triton", "status": "ok"}]
    monkeypatch.setattr(run.torch.cuda, "get_device_capability", lambda device: (9, 0))
    monkeypatch.setitem(sys.modules, "bench.tools.aot", None)  # no bench/tools/aot.py: nothing attached
    assert run.attach_compile_report(tmp_path, cuda, timed) is None
    report = tmp_path / "kernels.csv"
    report.write_text("kernel,arch,registers,spills,occupancy\nreassemble_fwd,sm_90,96,0,0.5\n")
    fake = types.ModuleType("bench.tools.aot")
    fake.summary_for_results = lambda: report
    monkeypatch.setitem(sys.modules, "bench.tools.aot", fake)
    out = tmp_path / "run"
    out.mkdir()
    assert run.attach_compile_report(out, cpu, timed) is None  # a CPU run times no kernel
    assert run.attach_compile_report(out, cuda, [{"provider": "triton", "status": "skipped"}]) is None
    monkeypatch.setattr(run.torch.cuda, "get_device_capability", lambda device: (8, 6))
    assert run.attach_compile_report(out, cuda, timed) is None  # sm_86: not in the report
    assert not (out / "compile_report.csv").exists()
    monkeypatch.setattr(run.torch.cuda, "get_device_capability", lambda device: (9, 0))
    assert run.attach_compile_report(out, cuda, timed) == out / "compile_report.csv"
    assert (out / "compile_report.csv").read_text() == report.read_text()


def test_help_describes_every_preset_and_flag():
    parser = run.parser()
    assert all(action.help for action in parser._actions)  # every flag says what it does
    text = parser.format_help()
    assert "``" not in text  # no raw RST
    for name, description in PRESETS.items():
        assert f"  {name} " in text and description.split()[0] in text


def test_default_output_goes_where_git_ignores_it():
    out = run.default_out_dir(torch.device("cpu"), "quick")
    assert out.is_relative_to(ROOT / "bench" / "results" / "_scratch") and out.name.endswith("_quick")
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", str(out / "results.csv")], cwd=ROOT)
    assert ignored.returncode == 0


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_traffic_table_counts_every_tensor_and_requests_at_least_the_minimum(dtype, layout):
    """``python -m bench.tools.traffic``: the minimum of each forward kernel, written out here from
    what it reads and writes, never above what its loads request; the kernels' sum of minima
    is at least the op's roofline floor (it cannot move less than the op must)."""
    from bench.tools.traffic import forward_traffic

    case = Case(op="fade", batch=8, channels=256, size=64, dtype=dtype, scale=2, kernel=5, embed=64)
    e = 2 if dtype == "bfloat16" else 4
    q, p, c, kp, k2 = 8 * 64 * 64, 8 * 128 * 128, 256, 32, 25
    weights = 9 * c * kp * e
    want = [q * c * e + weights + q * kp * 4,  # de in; w_lo; lo out
            p * c * e + weights + p * k2 * 4 + q * kp * 4,  # en in; w_hi; logits out; lo in
            2 * p * c * e + q * c * e + p * k2 * 4 + q * 4]  # en in, out; de; logits; the gate logit
    rows = forward_traffic(case, layout)
    assert [r["minimum"] for r in rows] == want
    assert all(r["requested"] >= r["minimum"] for r in rows)
    assert sum(want) >= roofline.min_bytes(case)
