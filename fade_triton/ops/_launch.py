"""Small launch helpers shared by the Triton ops."""
from __future__ import annotations

import torch

from ..backend import float32_conv_precision


def cdiv(a, b):
    """Ceiling division on the host (``triton.cdiv`` is a jitted function: slow to call from
    Python, several microseconds a call); works on SymInts without guards."""
    return -(-a // b)


def next_pow2(n: int, minimum: int = 1) -> int:
    """Smallest power of two >= max(n, minimum)."""
    n = max(int(n), minimum)
    return 1 << (n - 1).bit_length()


def dot_precision(t: torch.Tensor) -> str:
    """``tl.dot`` input precision for a float32 tensor: TF32 exactly when PyTorch would use it
    for a convolution (``fade_triton.backend.float32_conv_precision``, SPEC.md Precision);
    IEEE otherwise (and for every other dtype, where it does not apply)."""
    if t.dtype == torch.float32 and is_cuda(t) and float32_conv_precision() == "tf32":
        return "tf32"
    return "ieee"


def is_cuda(t: torch.Tensor) -> bool:
    """Whether ``t`` lives on a CUDA GPU (a function of its own so the compile report can
    record the launches a GPU would make from CPU tensors)."""
    return t.is_cuda


def compute_capability(t: torch.Tensor) -> int:
    """10 * major + minor of ``t``'s GPU (90 for H100/H200); 90 off the GPU (the interpreter,
    where tile sizes only have to be valid). The tile heuristics use it: what compiles without
    spills on sm_90 is not always what does on sm_80 (the compile report checks both)."""
    if not is_cuda(t):
        return 90
    major, minor = torch.cuda.get_device_capability(t.device)
    return 10 * major + minor
