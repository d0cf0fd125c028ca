"""Every backend against the independent float64 reference (SPEC.md), on CPU."""
import pytest
import torch

import fade_triton as ft
import reference64 as ref
from util import WEIGHT_NAMES, assert_close_rel, fade_problem

BACKENDS = ["naive", "torch", "triton"]
# (b, c, h, w, scale, k): non-square, odd, scale 1-4, K 3/5/7, sizes off any block multiple
SHAPES = [(2, 6, 5, 7, 2, 3), (1, 4, 4, 4, 1, 5), (2, 3, 3, 5, 3, 3), (1, 5, 2, 3, 4, 3), (1, 4, 6, 5, 2, 7),
          (1, 3, 9, 11, 2, 5)]


def run_fade(en, de, weights, scale, backend):
    return ft.fade(en, de, *(weights[n] for n in WEIGHT_NAMES), scale=scale, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lite", [False, True], ids=["fade", "lite"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}c{}h{}w{}s{}k{}".format(*s))
def test_fade_float64(backend, lite, shape, poisoned):
    b, c, h, w, s, k = shape
    en, de, wts = fade_problem(b, c, h, w, s, k, lite=lite)
    out = run_fade(en, de, wts, s, backend)
    expect = ref.fade(en, de, *(wts[n] for n in WEIGHT_NAMES), s)
    assert out.shape == (b, c, h * s, w * s) and out.dtype == torch.float64
    assert (out - expect).abs().max().item() < 1e-10


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lite", [False, True], ids=["fade", "lite"])
def test_fade_float32(backend, lite, poisoned):
    en, de, wts = fade_problem(2, 8, 6, 9, 2, 5, lite=lite, dtype=torch.float32)
    out = run_fade(en, de, wts, 2, backend)
    assert out.dtype == torch.float32
    assert_close_rel(out, ref.fade(en, de, *(wts[n] for n in WEIGHT_NAMES), 2), 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k,groups,scale", [(1, 1, 1), (3, 1, 2), (5, 2, 2), (7, 1, 3), (3, 3, 4), (5, 4, 2)])
def test_carafe_float64(backend, k, groups, scale, poisoned):
    x = torch.randn(2, 12, 4, 5, dtype=torch.float64)
    masks = torch.randn(2, groups * k * k, 4 * scale, 5 * scale, dtype=torch.float64)  # not normalised
    out = ft.carafe(x, masks, k, groups, scale, backend=backend)
    assert (out - ref.reassemble(x, masks, k, scale, groups)).abs().max().item() < 1e-10


@pytest.mark.parametrize("backend", BACKENDS)
def test_carafe_float32(backend, poisoned):
    x = torch.randn(2, 8, 7, 6)
    masks = torch.rand(2, 2 * 25, 14, 12)
    out = ft.carafe(x, masks, 5, 2, 2, backend=backend)
    assert_close_rel(out, ref.reassemble(x.double(), masks.double(), 5, 2, 2), 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
def test_layouts_match_contiguous(backend, layout):
    en, de, wts = fade_problem(2, 6, 5, 6, 2, 3)
    if layout == "channels_last":
        en2, de2 = en.to(memory_format=torch.channels_last), de.to(memory_format=torch.channels_last)
    else:  # every other channel of a wider tensor, and a transposed-then-back view
        en2 = torch.randn(2, 12, 10, 12, dtype=en.dtype)[:, ::2].copy_(en)
        de2 = de.transpose(2, 3).contiguous().transpose(2, 3)
    assert not en2.is_contiguous()
    expect = run_fade(en, de, wts, 2, backend)
    torch.testing.assert_close(run_fade(en2, de2, wts, 2, backend), expect, rtol=1e-12, atol=1e-12)
    x, m = de2, torch.rand(2, 9, 10, 12, dtype=de.dtype)
    torch.testing.assert_close(ft.carafe(x, m, 3, 1, 2, backend=backend),
                               ft.carafe(x.contiguous(), m, 3, 1, 2, backend=backend), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_channels_last_in_channels_last_out(backend):
    en, de, wts = fade_problem(1, 4, 3, 3, 2, 3, dtype=torch.float32)
    out = run_fade(en.to(memory_format=torch.channels_last), de.to(memory_format=torch.channels_last), wts, 2, backend)
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    en, de, wts = fade_problem(0, 4, 3, 5, 2, 3)
    assert run_fade(en, de, wts, 2, backend).shape == (0, 4, 6, 10)
    assert ft.carafe(de, torch.rand(0, 9, 6, 10, dtype=de.dtype), 3, 1, 2, backend=backend).shape == (0, 4, 6, 10)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["naive", "torch"])
@pytest.mark.parametrize("lite", [False, True], ids=["fade", "lite"])
def test_gradcheck_fade(backend, lite):
    en, de, wts = fade_problem(1, 3, 3, 4, 2, 3, emb=4, lite=lite)
    inputs = [t.requires_grad_() for t in (en, de, *wts.values())]
    fn = lambda en, de, *w: ft.fade(en, de, *w, scale=2, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["naive", "torch"])
def test_gradcheck_carafe(backend):
    x = torch.randn(1, 4, 3, 4, dtype=torch.float64, requires_grad=True)
    m = torch.rand(1, 2 * 9, 6, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, m: ft.carafe(x, m, 3, 2, 2, backend=backend), (x, m))


@pytest.mark.parametrize("backend", ["naive", "torch"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_fade_half_precision_pure_pytorch(backend, dtype):
    """The pure-PyTorch paths in half precision, on any device (bfloat16 included on CPU)."""
    en, de, wts = fade_problem(2, 8, 6, 5, 2, 5, 16, dtype=dtype)
    out = run_fade(en, de, wts, 2, backend)
    assert out.dtype == dtype
    assert_close_rel(out, ref.fade(en, de, *(wts[n] for n in WEIGHT_NAMES), 2), 1e-2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale,crop", [(2, (1, 1)), pytest.param(3, (2, 1), marks=pytest.mark.slow),
                                        pytest.param(4, (0, 3), marks=pytest.mark.slow)], ids=["s2-1-1", "s3-2-1", "s4-0-3"])
def test_encoder_smaller_than_scale_times_decoder(backend, scale, crop, poisoned):
    """A backbone fed a size that is not a multiple of its stride gives en smaller than
    scale x de by less than scale (65 -> 129): nearest-upsample-then-crop, output of en's size."""
    b, c, h, w, k = 2, 5, 4, 6, 3
    en, de, wts = fade_problem(b, c, h, w, scale, k)
    en = en[:, :, :h * scale - crop[0], :w * scale - crop[1]].clone()
    inputs = [t.clone().requires_grad_() for t in (en, de, *(wts[n] for n in WEIGHT_NAMES))]
    out = run_fade(inputs[0], inputs[1], dict(zip(WEIGHT_NAMES, inputs[2:])), scale, backend)
    ref_inputs = [t.detach().clone().requires_grad_() for t in inputs]
    expect = ref.fade(*ref_inputs, scale)
    assert out.shape == en.shape
    assert (out - expect).abs().max().item() < 1e-10
    grad = torch.randn(out.shape, dtype=out.dtype)
    out.backward(grad)
    expect.backward(grad)
    for got, want in zip(inputs, ref_inputs):
        assert (got.grad - want.grad).abs().max().item() < 1e-9
