"""Every backend against mmcv's own CARAFE test vectors (tests/data/mmcv_carafe, Apache-2.0)."""
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


def test_float64_reference_matches_the_vectors():
    out = ref.reassemble(load("feat").double(), load("mask").double(), 5, 2, 4)
    assert (out - load("output").double()).abs().max() < 1e-5


@pytest.mark.parametrize("backend", ["naive", "torch", "triton"])
def test_carafe_matches_mmcv_vectors(backend, poisoned):
    feat = load("feat").requires_grad_()
    mask = load("mask").requires_grad_()
    out = ft.carafe(feat, mask, 5, 4, 2, backend=backend)
    torch.testing.assert_close(out, load("output"), atol=1e-4, rtol=0)
    out.sum().backward()
    torch.testing.assert_close(feat.grad, load("feat_grad"), atol=1e-4, rtol=0)
    torch.testing.assert_close(mask.grad, load("mask_grad"), atol=1e-4, rtol=0)
