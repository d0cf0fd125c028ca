"""Property-based tests (hypothesis): random FADE / FADE-Lite and CARAFE problems for every
backend (the Triton kernels under the interpreter, at sizes that keep it quick) against the
float64 reference, forward and every gradient.

Drawn: backend, batch 0-3, channels, odd and even sizes, K (odd, 1-7; 1-3 for the interpreted
kernels), scale 1-4 (1-2 interpreted), encoder sizes s*H - r
(r < s), CARAFE groups, dtypes, layouts, and how the inputs are viewed: contiguous, a
non-contiguous slice, a storage offset, or a stride-0 (expanded) batch. The inputs are views
of leaf tensors made inside the differentiated function, so the gradients flow through the
view (an expanded batch sums its gradient). Profiles (``tests/conftest.py``): ``ci`` (default,
fixed seed, about a minute) and ``long`` (``--hypothesis-profile=long``). A failure found here
becomes a regular test beside the others of its kind (none so far)."""
import pytest
import torch
from hypothesis import given, strategies as st

import fade_triton as ft
import reference64 as ref
from util import HALF_DTYPES, ON_CUDA, WEIGHT_NAMES, rel_err

BACKENDS = ["triton", "torch", "naive"]
DTYPES = [torch.float64, torch.float32, *HALF_DTYPES]
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 3e-2, torch.bfloat16: 6e-2}
VIEWS = ["contiguous", "slice", "offset", "expanded"]


def as_view(base: torch.Tensor, view: str, layout: str) -> torch.Tensor:
    """``base`` (B, C, H, W) seen through ``view``: the same values, other strides (the
    differentiable map from the leaf to the input the op gets)."""
    if view == "slice":  # every other column of a twice-as-wide tensor
        wide = base.repeat_interleave(2, dim=3)
        t = wide[..., ::2]
    elif view == "offset":  # a storage offset: the last images of a larger batch
        t = torch.cat([torch.zeros_like(base[:1]), base])[1:]
    elif view == "expanded":  # stride-0 batch: one image repeated
        t = base[:1].expand_as(base) if base.shape[0] else base
    else:
        t = base
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else t


def view_values(base, view):
    """The values ``as_view`` presents (the reference sees these)."""
    return base[:1].expand_as(base) if view == "expanded" and base.shape[0] else base


def seeded_draw(seed: int):
    """``draw(fn, *shape)``: ``fn`` (torch.randn / torch.rand) in float64 from a CPU generator seeded
    with ``seed``, moved to the test's device: the same problem on every device (a CPU generator
    cannot draw on CUDA, the CUDA suite's default device)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    device = torch.get_default_device()
    return lambda fn, *shape: fn(*shape, generator=gen, dtype=torch.float64, device="cpu").to(device)


def assert_matches(got, want, dtype, what):
    err = rel_err(got, want)
    assert err < TOLERANCE[dtype], f"{what}: relative error {err:.3e}"


def kernel_and_scale(draw, backend):
    """K and scale: 1-7 and 1-4 for the PyTorch backends; 1-3 and 1-2 for the Triton kernels,
    whose interpreted cost grows with K*K*s*s (a K=7, s=4 problem takes minutes there; the
    kernel tests run those sizes at fixed shapes)."""
    interpreted = backend == "triton" and not ON_CUDA
    k = draw(st.sampled_from([1, 3] if interpreted else [1, 3, 5, 7]))
    return k, draw(st.integers(1, 2 if interpreted else 4))


@st.composite
def fade_problems(draw):
    backend = draw(st.sampled_from(BACKENDS))
    k, scale = kernel_and_scale(draw, backend)
    return dict(b=draw(st.integers(0, 3)), c=draw(st.integers(1, 4)), h=draw(st.integers(1, 4)),
                w=draw(st.integers(1, 4)), scale=scale, k=k, emb=draw(st.integers(1, 4)), lite=draw(st.booleans()),
                crop=(draw(st.integers(0, scale - 1)), draw(st.integers(0, scale - 1))),
                dtype=draw(st.sampled_from(DTYPES)), layout=draw(st.sampled_from(["nchw", "channels_last"])),
                view=draw(st.sampled_from(VIEWS)), backend=backend)


def run_fade_problem(b, c, h, w, scale, k, emb, lite, crop, dtype, layout, view, backend):
    k2 = k * k
    emb = k2 if lite else emb
    shapes = dict(gate_weight=(1, c, 1, 1), gate_bias=(1,), en_weight=(emb, c, 1, 1), en_bias=(emb,),
                  de_weight=(emb, c, 1, 1), kernel_weight=(k2, 1 if lite else emb, 3, 3), kernel_bias=(k2,))
    draw = seeded_draw(b * 1000 + c * 100 + h * 10 + w)
    weights = [draw(torch.randn, *shapes[n]) * 0.5 for n in WEIGHT_NAMES]
    en = draw(torch.randn, b, c, h * scale - crop[0], w * scale - crop[1])
    de = draw(torch.randn, b, c, h, w)
    dout = draw(torch.randn, *en.shape)
    leaves = [t.to(dtype).requires_grad_() for t in (en, de, *weights)]
    out = ft.fade(as_view(leaves[0], view, layout), as_view(leaves[1], view, layout), *leaves[2:], scale=scale,
                  backend=backend)
    assert out.dtype == dtype and out.shape == en.shape
    out.backward(dout.to(dtype))
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    want = ref.fade(view_values(ref_leaves[0], view), view_values(ref_leaves[1], view), *ref_leaves[2:], scale)
    want.backward(dout)
    assert_matches(out, want, dtype, "output")
    for name, got, r in zip(("en", "de", *WEIGHT_NAMES), leaves, ref_leaves):
        assert got.grad.dtype == dtype, name
        assert_matches(got.grad, r.grad, dtype, f"gradient of {name}")


@pytest.mark.slow
@given(fade_problems())
def test_fade_matches_the_reference(problem):
    run_fade_problem(**problem)


@st.composite
def carafe_problems(draw):
    backend = draw(st.sampled_from(BACKENDS))
    k, scale = kernel_and_scale(draw, backend)
    return dict(b=draw(st.integers(0, 3)), groups=draw(st.integers(1, 3)), per_group=draw(st.integers(1, 3)),
                h=draw(st.integers(1, 4)), w=draw(st.integers(1, 4)), scale=scale, k=k,
                dtype=draw(st.sampled_from(DTYPES)), layout=draw(st.sampled_from(["nchw", "channels_last"])),
                view=draw(st.sampled_from(VIEWS)), backend=backend)


def run_carafe_problem(b, groups, per_group, h, w, scale, k, dtype, layout, view, backend):
    draw = seeded_draw(b * 1000 + groups * 100 + h * 10 + w)
    x = draw(torch.randn, b, groups * per_group, h, w).to(dtype).requires_grad_()
    masks = draw(torch.rand, b, groups * k * k, h * scale, w * scale).to(dtype).requires_grad_()
    dout = draw(torch.randn, b, groups * per_group, h * scale, w * scale)
    out = ft.carafe(as_view(x, view, layout), as_view(masks, view, layout), k, groups, scale, backend=backend)
    assert out.dtype == dtype and out.shape == dout.shape
    out.backward(dout.to(dtype))
    rx, rm = (t.detach().double().requires_grad_() for t in (x, masks))
    want = ref.reassemble(view_values(rx, view), view_values(rm, view), k, scale, groups)
    want.backward(dout)
    assert_matches(out, want, dtype, "output")
    assert_matches(x.grad, rx.grad, dtype, "gradient of features")
    assert_matches(masks.grad, rm.grad, dtype, "gradient of masks")


@pytest.mark.slow
@given(carafe_problems())
def test_carafe_matches_the_reference(problem):
    run_carafe_problem(**problem)
