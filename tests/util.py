"""Test helpers: random FADE problems, error measures, and the dtypes of the device under test."""
import os

import pytest
import torch

ON_CUDA = os.environ.get("FADE_TEST_DEVICE", "cpu") == "cuda"
# Triton's interpreter has no bfloat16: it is tested where the kernels are compiled.
HALF_DTYPES = [torch.float16, torch.bfloat16] if ON_CUDA else [torch.float16]

# Kernel test shapes (b, c, h, w, scale, k, emb): C=70 and E=40 leave remainders in every
# channel loop and block; non-square, odd, scale 1-4, K 3/5/7, batch 1-3.
KERNEL_SHAPES = [(2, 70, 5, 7, 2, 5, 40), (1, 6, 9, 4, 3, 3, 8), (3, 5, 3, 3, 1, 7, 16), (1, 4, 2, 5, 4, 3, 8)]
KERNEL_SHAPE_IDS = ["b{}c{}h{}w{}s{}k{}e{}".format(*s) for s in KERNEL_SHAPES]
# as pytest parameters: the first (the interpreter's slowest) only in the full suite, the rest also
# in the quick lane (python -m pytest -m "not slow")
KERNEL_SHAPE_PARAMS = [pytest.param(s, id=i, marks=[pytest.mark.slow] if s[1] > 8 else [])
                       for s, i in zip(KERNEL_SHAPES, KERNEL_SHAPE_IDS)]
# the backward's quick lane keeps the last (smallest) shape only
KERNEL_SHAPE_PARAMS_BWD = [pytest.param(s, id=i, marks=[pytest.mark.slow] if s != KERNEL_SHAPES[-1] else [])
                           for s, i in zip(KERNEL_SHAPES, KERNEL_SHAPE_IDS)]
WEIGHT_NAMES = ("gate_weight", "gate_bias", "en_weight", "en_bias", "de_weight", "kernel_weight", "kernel_bias")


def fade_problem(b=2, c=6, h=5, w=7, scale=2, k=3, emb=8, lite=False, dtype=torch.float64, weight_std=0.5):
    """(en, de, weights dict) with random weights and biases (non-zero, unlike the default init)."""
    k2 = k * k
    emb = k2 if lite else emb
    shapes = dict(gate_weight=(1, c, 1, 1), gate_bias=(1,), en_weight=(emb, c, 1, 1), en_bias=(emb,),
                  de_weight=(emb, c, 1, 1), kernel_weight=(k2, 1 if lite else emb, 3, 3), kernel_bias=(k2,))
    weights = {n: (torch.randn(shapes[n], dtype=torch.float64) * weight_std).to(dtype) for n in WEIGHT_NAMES}
    # (created on the default device: CUDA when FADE_TEST_DEVICE=cuda)
    en = torch.randn(b, c, h * scale, w * scale, dtype=torch.float64).to(dtype)
    de = torch.randn(b, c, h, w, dtype=torch.float64).to(dtype)
    return en, de, weights


from fade_triton.testing import rel_err  # noqa: E402  (||out - ref|| / ||ref|| in float64; NaN gives inf)


def grads_of(fn, inputs, grad_out):
    """The gradients of ``fn(*inputs)`` for the output gradient ``grad_out``, one per input."""
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    fn(*inputs).backward(grad_out)
    return [t.grad for t in inputs]


def assert_fade_grads_match_reference(fn, inputs, grad_out, scale, tol, dtype=None):
    """``fn(en, de, *weights)``'s gradients of (en, de, the seven weights) against float64
    autograd of the independent reference, each within ``tol`` (and in ``dtype`` when given)."""
    import reference64 as ref

    got = grads_of(fn, inputs, grad_out)
    want = grads_of(lambda *a: ref.fade(*a, scale), [t.double() for t in inputs], grad_out.double())
    for name, g, r in zip(("en", "de", *WEIGHT_NAMES), got, want):
        assert dtype is None or g.dtype == dtype, (name, g.dtype)
        err = rel_err(g, r)
        assert err < tol, f"gradient of {name}: relative error {err:.3e} >= {tol:.1e}"


def assert_close_rel(out, ref, tol):
    err = rel_err(out, ref)
    assert err < tol, f"relative error {err:.3e} >= {tol:.1e}"


def torch_backend_output(model, en, de):
    """``model(en, de)`` on the ``torch`` backend, the model set back to ``triton`` after."""
    model.backend = "torch"
    try:
        return model(en, de)
    finally:
        model.backend = "triton"
