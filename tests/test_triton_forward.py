"""Triton forward kernels (run in Triton's CPU interpreter) against the float64 reference."""
import types

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import fade_triton as ft
import reference64 as ref
from fade_triton.ops._launch import dot_precision
from fade_triton.ops.reassemble import reassemble_fwd
from fade_triton.ops.semi_shift import semi_shift
from util import KERNEL_SHAPES as SHAPES
from util import KERNEL_SHAPE_IDS as IDS
from util import HALF_DTYPES, ON_CUDA, WEIGHT_NAMES, assert_close_rel, fade_problem

TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}  # SPEC.md, Precision


def reference_logits(en, de, w, scale):
    en, de = en.double(), de.double()
    w = {n: t.double() for n, t in w.items()}
    groups = w["kernel_weight"].shape[0] if w["kernel_weight"].shape[1] == 1 else 1
    hi = ref.conv3x3(ref.conv1x1(en, w["en_weight"], w["en_bias"]), w["kernel_weight"], w["kernel_bias"], groups)
    lo = ref.conv3x3(ref.conv1x1(de, w["de_weight"]), w["kernel_weight"], w["kernel_bias"], groups)
    return hi + ref.up(lo, scale)


@pytest.mark.parametrize("dtype", [torch.float32, *HALF_DTYPES], ids=str)
@pytest.mark.parametrize("lite", [False, True], ids=["fade", "lite"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_semi_shift_kernel(shape, lite, dtype, poisoned):
    b, c, h, w, s, k, emb = shape
    en, de, wts = fade_problem(b, c, h, w, s, k, emb, lite, dtype, weight_std=0.2)
    args = [wts[n] for n in ("en_weight", "en_bias", "de_weight", "kernel_weight", "kernel_bias")]
    logits = semi_shift(en, de, *args, s)
    assert logits.shape == (b, k * k, h * s, w * s)
    assert_close_rel(logits, reference_logits(en, de, wts, s), TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, *HALF_DTYPES], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_fused_softmax_reassembly_gate_kernel(shape, dtype, poisoned):
    b, c, h, w, s, k, _ = shape
    de = torch.randn(b, c, h, w).to(dtype)
    en = torch.randn(b, c, h * s, w * s).to(dtype)
    logits = torch.randn(b, k * k, h * s, w * s) * 3
    gate = torch.randn(b, 1, h, w).to(dtype)
    out = reassemble_fwd(de, logits, gate, en, k, 1, s, True)
    g = torch.sigmoid(ref.up(gate.double(), s))
    expect = g * en.double() + (1 - g) * ref.reassemble(de.double(), torch.softmax(logits.double(), 1), k, s)
    assert out.dtype == dtype
    assert_close_rel(out, expect, TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, *HALF_DTYPES], ids=str)
@pytest.mark.parametrize("lite", [False, True], ids=["fade", "lite"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_fade_triton_end_to_end(shape, lite, dtype, poisoned):
    b, c, h, w, s, k, emb = shape
    en, de, wts = fade_problem(b, c, h, w, s, k, emb, lite, dtype, weight_std=0.2)
    out = ft.fade(en, de, *wts.values(), scale=s, backend="triton")
    assert out.dtype == dtype and out.shape == en.shape
    assert_close_rel(out, ref.fade(en, de, *(wts[n] for n in WEIGHT_NAMES), s), TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, *HALF_DTYPES], ids=str)
@pytest.mark.parametrize("k,groups,scale", [(5, 4, 2), (3, 2, 3), (7, 1, 1)])
def test_carafe_kernel_groups(k, groups, scale, dtype, poisoned):
    x = torch.randn(2, 72, 5, 6).to(dtype)
    masks = torch.softmax(torch.randn(2, groups, k * k, 5 * scale, 6 * scale), 2).flatten(1, 2).to(dtype)
    out = ft.carafe(x, masks, k, groups, scale, backend="triton")
    assert_close_rel(out, ref.reassemble(x.double(), masks.double(), k, scale, groups), TOL[dtype])


def test_float16_large_logits_stay_finite(poisoned):
    """Logits far beyond float16's exp range: the max-subtracted softmax gives finite output."""
    en, de, wts = fade_problem(1, 8, 4, 5, 2, 5, 16, dtype=torch.float16)
    wts["kernel_bias"] = (torch.arange(25, dtype=torch.float16) * 400).to(torch.float16)  # up to 9600 (x2)
    out = ft.fade(en, de, *wts.values(), scale=2, backend="triton")
    assert torch.isfinite(out).all()
    assert_close_rel(out, ref.fade(en, de, *(wts[n] for n in WEIGHT_NAMES), 2), 1e-2)


@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
def test_strided_inputs_without_copies(layout, poisoned):
    en, de, wts = fade_problem(2, 6, 5, 7, 2, 3, 8, dtype=torch.float32)
    if layout == "channels_last":
        en2, de2 = en.to(memory_format=torch.channels_last), de.to(memory_format=torch.channels_last)
    else:
        en2 = torch.randn(2, 6, 10, 28)[..., ::2].copy_(en)
        de2 = torch.randn(2, 12, 5, 7)[:, 1::2].copy_(de)
    out = ft.fade(en2, de2, *wts.values(), scale=2, backend="triton")
    assert_close_rel(out, ref.fade(en, de, *(wts[n] for n in WEIGHT_NAMES), 2), 1e-5)


class RecordAllocations(TorchDispatchMode):
    """Records the shape of every tensor an op returns in new memory (not a view or an
    in-place result sharing an input's storage)."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        seen = {t.untyped_storage().data_ptr() for t in inputs}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
                self.shapes.append((str(func), tuple(t.shape)))
        return out


@pytest.mark.parametrize("lite", [False, True], ids=["fade", "lite"])
def test_no_high_resolution_tensor_with_e_or_c_channels(lite):
    """The triton path allocates nothing with E or C channels at high resolution but the output
    (and, for FADE-Lite where E == K2, the K2-channel logits); the naive path, recorded the
    same way, is caught by the same check."""
    b, c, h, w, s, emb = 2, 12, 4, 5, 2, 16
    en, de, wts = fade_problem(b, c, h, w, s, 3, emb, lite, torch.float32)
    wide = {c, 9 if lite else emb}

    def high_res_wide(backend):
        with RecordAllocations() as rec:
            ft.fade(en, de, *wts.values(), scale=s, backend=backend)
        return sorted(sh[1] for sh in rec.shapes if len(sh[1]) == 4 and sh[1][1] in wide and sh[1][2:] == (h * s, w * s))

    expected = [(b, 9, h * s, w * s)] if lite else []
    assert high_res_wide("triton") == sorted(expected + [(b, c, h * s, w * s)])
    assert len(high_res_wide("naive")) > len(expected) + 2


@pytest.mark.skipif(not ON_CUDA, reason="TF32 exists only on CUDA GPUs (FADE_TEST_DEVICE=cuda)")
@pytest.mark.parametrize("allow_tf32,tol", [(True, 1e-3), (False, 1e-5)])
def test_float32_precision_follows_cudnn_setting(allow_tf32, tol, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", allow_tf32)
    en, de, wts = fade_problem(2, 64, 16, 12, 2, 5, 64, dtype=torch.float32)
    out = ft.fade(en, de, *wts.values(), scale=2, backend="triton")
    assert_close_rel(out, ref.fade(en, de, *(wts[n] for n in WEIGHT_NAMES), 2), tol)


def test_tf32_follows_cudnn_setting(monkeypatch):
    fake_cuda = types.SimpleNamespace(dtype=torch.float32, is_cuda=True)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert dot_precision(fake_cuda) == "tf32"
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert dot_precision(fake_cuda) == "ieee"
    assert dot_precision(types.SimpleNamespace(dtype=torch.float16, is_cuda=True)) == "ieee"
