"""Every backend against mmcv's own CARAFE test vectors (tests/data/mmcv_carafe, Apache-2.0), and
the copy of mmcv's CARAFEFunction that wraps mmcv's CARAFE op built alone (bench/tools/mmcv_carafe_ext)."""
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import fade_triton as ft
import reference64 as ref

DATA = Path(__file__).parent / "data" / "mmcv_carafe"
SHAPES = {"feat": (2, 64, 3, 3), "mask": (2, 100, 6, 6), "output": (2, 64, 6, 6),
          "feat_grad": (2, 64, 3, 3), "mask_grad": (2, 100, 6, 6)}


def load(name):
    data = np.fromfile(DATA / f"carafe_{name}.bin", dtype="<f4").reshape(SHAPES[name])
    return torch.from_numpy(data).to(torch.get_default_device())


def assert_matches_vectors(carafe):
    """``carafe(feat, mask)`` (K=5, groups 4, scale 2) gives mmcv's output and both gradients."""
    feat = load("feat").requires_grad_()
    mask = load("mask").requires_grad_()
    out = carafe(feat, mask)
    torch.testing.assert_close(out, load("output"), atol=1e-4, rtol=0)
    out.sum().backward()
    torch.testing.assert_close(feat.grad, load("feat_grad"), atol=1e-4, rtol=0)
    torch.testing.assert_close(mask.grad, load("mask_grad"), atol=1e-4, rtol=0)


def test_float64_reference_matches_the_vectors():
    out = ref.reassemble(load("feat").double(), load("mask").double(), 5, 2, 4)
    assert (out - load("output").double()).abs().max() < 1e-5


@pytest.mark.parametrize("backend", ["naive", "torch", "triton", "mmcv"])
def test_carafe_matches_mmcv_vectors(backend, poisoned):
    if backend == "mmcv":
        from fade_triton.ops.mmcv_path import load_mmcv_carafe

        if not torch.cuda.is_available():
            pytest.skip("mmcv's CARAFE runs on CUDA only")
        try:
            load_mmcv_carafe()
        except RuntimeError as err:
            pytest.skip(f"mmcv's CARAFE is not built on this machine (bench/tools/build_mmcv.sh): {err}")
    assert_matches_vectors(lambda feat, mask: ft.carafe(feat, mask, 5, 4, 2, backend=backend))


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

    assert_matches_vectors(lambda feat, mask: carafe(feat, mask, 5, 4, 2))
