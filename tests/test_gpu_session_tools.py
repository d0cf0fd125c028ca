"""The tools the GPU session runs under compute-sanitizer and Nsight Compute, checked on CPU:
``bench.one_step`` (one checked call per op) and ``bench.ncu_summary`` (ncu's raw CSV -> table),
and mmcv's CARAFEFunction as ``fade_triton``'s ``mmcv`` backend wraps a standalone build."""
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import fade_triton as ft
import reference64 as ref

DATA = Path(__file__).parent / "data"


def test_one_step_passes_when_the_op_is_right(capsys):
    from bench import one_step

    assert one_step.main(["--ops", "carafe_g4", "fade_lite", "--mode", "fwd"]) == 0
    assert capsys.readouterr().out.count(": ok;") == 2


def test_one_step_fails_on_an_element_no_kernel_wrote(monkeypatch, capsys):
    """The op returns an output it never wrote: poisoned to NaN, the check must fail."""
    from bench import one_step

    real = ft.carafe

    def unwritten(x, masks, k, g, s, backend="auto"):
        out = real(x, masks, k, g, s, backend=backend)
        return torch.empty_like(out) if backend == "triton" else out

    monkeypatch.setattr(one_step.ft, "carafe", unwritten)
    assert one_step.main(["--ops", "carafe_g1", "--mode", "fwd"]) == 1
    assert "mismatch" in capsys.readouterr().out


def test_ncu_summary_reads_values_units_and_stalls():
    from bench.ncu_summary import read_raw_csv, summarize

    rows = read_raw_csv(DATA / "ncu" / "raw_export.csv")
    assert [r["Kernel Name"][0] for r in rows] == ["conv3x3_kernel", "reassemble_fwd_kernel"]
    table = summarize(rows, [{"minimum": 21.1e6, "requested": 68.7e6}]).splitlines()
    conv = [c.strip() for c in table[2].split("|")[1:-1]]
    # time 12,345 ns; DRAM 21.1 MB read + 1.5 Mbyte written; 1e6 sectors of 32 B from L2
    assert conv[3:8] == ["12.3", "22.6", "80.5", "60.2", "70.1"]
    assert conv[8:12] == ["32.0", "35.5 / 37.5", "168", "0.000"]
    assert conv[12] == "long_scoreboard 2.5, wait 1.2, barrier 0.3"
    assert conv[13] == "21.1 / 68.7"
    fwd = [c.strip() for c in table[3].split("|")[1:-1]]
    assert fwd[11] == "0.002"  # 256 B loaded + 1.5 KB stored from local memory
    assert fwd[12] == "n/a" and fwd[13] == ""


class FakeMMCVCarafeExt(types.ModuleType):
    """mmcv's launcher contract (mmcv/ops/csrc/pytorch/cuda/carafe_cuda.cu), in float64: forward
    fills ``rfeatures`` with the features in NHWC and ``output``; backward reads the features from
    ``rfeatures`` and fills ``bottom_grad`` and ``mask_grad``."""

    def __init__(self):
        super().__init__("mmcv_carafe_ext")

    @staticmethod
    def carafe_forward(features, masks, rfeatures, routput, rmasks, output, kernel_size, group_size, scale_factor):
        rfeatures.resize_(features.shape[0], *features.shape[2:], features.shape[1])
        rfeatures.copy_(features.permute(0, 2, 3, 1))
        output.copy_(ref.reassemble(features.double(), masks.double(), kernel_size, scale_factor, group_size))

    @staticmethod
    def carafe_backward(top_grad, rfeatures, masks, rtop_grad, rbottom_grad_hs, rbottom_grad, rmask_grad,
                        bottom_grad, mask_grad, kernel_size, group_size, scale_factor):
        with torch.enable_grad():  # autograd runs backward with gradients off
            x = rfeatures.permute(0, 3, 1, 2).double().requires_grad_()
            m = masks.double().requires_grad_()
            out = ref.reassemble(x, m, kernel_size, scale_factor, group_size)
            gx, gm = torch.autograd.grad(out, (x, m), top_grad.double())
        bottom_grad.copy_(gx)
        mask_grad.copy_(gm)


def test_mmcv_function_on_a_standalone_build_matches_mmcv_vectors(monkeypatch):
    """MMCVCARAFEFunction passes mmcv's buffers in mmcv's order and returns the gradients in the
    inputs' order: checked on mmcv's own CARAFE vectors with a float64 stand-in for the CUDA op."""
    from fade_triton.ops import mmcv_path

    monkeypatch.setitem(sys.modules, "mmcv", None)
    monkeypatch.setitem(sys.modules, "mmcv_carafe_ext", FakeMMCVCarafeExt())
    carafe = mmcv_path.load_mmcv_carafe()
    assert carafe == mmcv_path.MMCVCARAFEFunction.apply
    assert "built alone" in mmcv_path.mmcv_carafe_source()

    def load(name, shape):
        data = np.fromfile(DATA / "mmcv_carafe" / f"carafe_{name}.bin", dtype="<f4").reshape(shape)
        return torch.from_numpy(data)

    feat = load("feat", (2, 64, 3, 3)).requires_grad_()
    mask = load("mask", (2, 100, 6, 6)).requires_grad_()
    out = carafe(feat, mask, 5, 4, 2)
    torch.testing.assert_close(out, load("output", (2, 64, 6, 6)), atol=1e-4, rtol=0)
    out.sum().backward()
    torch.testing.assert_close(feat.grad, load("feat_grad", (2, 64, 3, 3)), atol=1e-4, rtol=0)
    torch.testing.assert_close(mask.grad, load("mask_grad", (2, 100, 6, 6)), atol=1e-4, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="mmcv's CARAFE runs on CUDA only")
def test_mmcv_backend_on_cuda_matches_mmcv_vectors():
    """On a CUDA machine where bench/build_mmcv.sh built mmcv's CARAFE (either way)."""
    from fade_triton.ops import mmcv_path

    try:
        mmcv_path.load_mmcv_carafe()
    except RuntimeError as err:
        pytest.skip(f"mmcv's CARAFE is not built on this machine: {err}")
    feat = torch.from_numpy(np.fromfile(DATA / "mmcv_carafe" / "carafe_feat.bin", dtype="<f4").reshape(2, 64, 3, 3))
    mask = torch.from_numpy(np.fromfile(DATA / "mmcv_carafe" / "carafe_mask.bin", dtype="<f4").reshape(2, 100, 6, 6))
    want = torch.from_numpy(np.fromfile(DATA / "mmcv_carafe" / "carafe_output.bin", dtype="<f4").reshape(2, 64, 6, 6))
    out = ft.carafe(feat.cuda(), mask.cuda(), 5, 4, 2, backend="mmcv")
    torch.testing.assert_close(out.cpu(), want, atol=1e-4, rtol=0)
