"""The physical floor of a case: the fewest bytes the op must move and the FLOPs it must do.

Bytes (each tensor read or written once; weights and FADE's K2-channel logits are ignored, so
the floor is optimistic): ``OpSpec.min_elements`` for the forward (FADE: ``en`` and ``de`` read,
the output written, ``(2 s^2 + 1) * B*C*H*W`` elements); forward+backward also reads the output
gradient and the inputs again and writes their gradients (FADE: ``(5 s^2 + 3) * B*C*H*W`` in
all; CARAFE: twice the forward's elements plus the output gradient).

FLOPs (multiply-add = 2): the package's own formula for the function in its cheapest (unfolded)
form (``fade_triton.ops.fade.op.fade_flops``, ``...carafe.op.carafe_flops``, the numbers
``FlopCounterMode`` reports); the backward is counted as twice the forward.

``floor = max(bytes / bandwidth, flops / flop_rate)``, with both rates measured on the
machine (``measure.machine_rates``): a large copy, and a large matmul in the case's dtype;
float32 in the precision the kernels run at (TF32 or IEEE, ``run.fp32_precision``).
"""
from __future__ import annotations

from .cases import OPS, Case

ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}


def min_bytes(case: Case) -> int:
    fwd = OPS[case.op].min_elements(case)
    if case.mode == "fwd":
        return fwd * ITEMSIZE[case.dtype]
    if case.op in ("fade", "fade_lite"):
        return (5 * case.scale**2 + 3) * case.batch * case.channels * case.size**2 * ITEMSIZE[case.dtype]
    out = case.batch * case.channels * (case.size * case.scale) ** 2
    return (2 * fwd + out) * ITEMSIZE[case.dtype]


def flops(case: Case) -> int:
    fwd = OPS[case.op].flops(case)
    return fwd if case.mode == "fwd" else 3 * fwd


def floor_seconds(case: Case, bandwidth: float, flop_rate: float) -> float:
    """``bandwidth`` in bytes/s, ``flop_rate`` in FLOP/s."""
    return max(min_bytes(case) / bandwidth, flops(case) / flop_rate)


def floor_bound(case: Case, bandwidth: float, flop_rate: float) -> str:
    """Which term makes the floor: "bytes" (memory-bound) or "flops" (compute-bound)."""
    return "bytes" if min_bytes(case) / bandwidth >= flops(case) / flop_rate else "flops"
