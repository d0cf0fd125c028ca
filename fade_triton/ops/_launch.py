"""Small launch helpers shared by the Triton ops."""
from __future__ import annotations

import torch


def next_pow2(n: int, minimum: int = 1) -> int:
    """Smallest power of two >= max(n, minimum)."""
    n = max(int(n), minimum)
    return 1 << (n - 1).bit_length()


def dot_precision(t: torch.Tensor) -> str:
    """``tl.dot`` input precision for a float32 tensor: TF32 exactly when PyTorch would use it
    for a convolution (``torch.backends.cudnn.allow_tf32``, SPEC.md Precision); IEEE otherwise."""
    if t.dtype == torch.float32 and t.is_cuda and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"
