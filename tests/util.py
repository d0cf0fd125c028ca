"""Test helpers: random FADE problems, error measures, and the dtypes of the device under test."""
import os

import torch

ON_CUDA = os.environ.get("FADE_TEST_DEVICE", "cpu") == "cuda"
# Triton's interpreter has no bfloat16: it is tested where the kernels are compiled.
HALF_DTYPES = [torch.float16, torch.bfloat16] if ON_CUDA else [torch.float16]

# Kernel test shapes (b, c, h, w, scale, k, emb): C=70 and E=40 leave remainders in every
# channel loop and block; non-square, odd, scale 1-4, K 3/5/7, batch 1-3.
KERNEL_SHAPES = [(2, 70, 5, 7, 2, 5, 40), (1, 6, 9, 4, 3, 3, 8), (3, 5, 3, 3, 1, 7, 16), (1, 4, 2, 5, 4, 3, 8)]
KERNEL_SHAPE_IDS = ["b{}c{}h{}w{}s{}k{}e{}".format(*s) for s in KERNEL_SHAPES]
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


def rel_err(out, ref):
    """||out - ref|| / ||ref|| in float64; NaN anywhere gives inf."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def assert_close_rel(out, ref, tol):
    err = rel_err(out, ref)
    assert err < tol, f"relative error {err:.3e} >= {tol:.1e}"
