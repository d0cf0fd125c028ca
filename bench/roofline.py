"""The physical floor of a case: the fewest bytes FADE must move and the FLOPs it must do.

Bytes (each tensor read or written once; weights and the K2-channel logits are ignored, so
the floor is optimistic): forward reads ``en`` and ``de`` and writes the output,
``(2 s^2 + 1) * B*C*H*W`` elements; forward+backward also reads the output gradient, ``en``
and ``de`` again and writes their gradients, ``(5 s^2 + 3) * B*C*H*W`` in all.

FLOPs (multiply-add = 2) of the function in its cheapest (unfolded) form, per SPEC.md:
the 1x1 compressions, the two 3x3 content encoders, the gate 1x1, the reassembly
``2*K2*C`` per output pixel and the gate blend; the backward is counted as twice the forward.

``floor = max(bytes / bandwidth, flops / flop_rate)``, with both rates measured on the
machine (``measure.machine_rates``): a large copy, and a large matmul in the case's dtype;
float32 in the precision the kernels run at (TF32 or IEEE, ``run.fp32_precision``).
"""
from __future__ import annotations

from .cases import Case

ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}


def min_bytes(case: Case) -> int:
    units = 2 * case.scale**2 + 1 if case.mode == "fwd" else 5 * case.scale**2 + 3
    return units * case.batch * case.channels * case.size**2 * ITEMSIZE[case.dtype]


def flops(case: Case) -> int:
    b, c, s, k2 = case.batch, case.channels, case.scale, case.kernel**2
    lo = b * case.size**2
    hi = lo * s * s
    emb = k2 if case.op == "fade_lite" else case.embed
    conv3 = 2 * 9 * (1 if case.op == "fade_lite" else emb) * k2
    fwd = (hi * (2 * c * emb + conv3 + 2 * k2 * c + 3 * c + 4 * k2)  # enc, 3x3, reassembly, blend, softmax
           + lo * (2 * c * emb + conv3 + 2 * c))  # dec, 3x3, gate
    return fwd if case.mode == "fwd" else 3 * fwd


def floor_seconds(case: Case, bandwidth: float, flop_rate: float) -> float:
    """``bandwidth`` in bytes/s, ``flop_rate`` in FLOP/s."""
    return max(min_bytes(case) / bandwidth, flops(case) / flop_rate)


def floor_bound(case: Case, bandwidth: float, flop_rate: float) -> str:
    """Which term makes the floor: "bytes" (memory-bound) or "flops" (compute-bound)."""
    return "bytes" if min_bytes(case) / bandwidth >= flops(case) / flop_rate else "flops"
