"""Plain-PyTorch implementations of FADE and CARAFE, in one place.

Two paths, both computing SPEC.md's function on any device and dtype:

- ``*_naive``: the official pure-PyTorch formulation (semi-shift through ``F.interpolate``,
  reassembly through ``F.unfold`` repeated to high resolution and an einsum). It is the
  benchmark's baseline: faithful on purpose, not optimised. It fixes only the official
  port's bugs (unfold padding is ``K // 2`` for every K; channels are never mixed).
- ``*_torch``: the memory-lean path, the CPU default. The decoder branch of the semi-shift
  is added at low resolution through a broadcast view (no interpolated tensor), and the
  reassembly runs one sub-pixel phase at a time, tap by tap, so nothing of size
  ``B*K2*C*sH*sW`` ever exists.

Arguments are assumed valid here; ``fade_triton.functional`` checks them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .checks import is_depthwise, suggest_memory_format


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half types, the dtype itself for float32/float64."""
    return torch.promote_types(dtype, torch.float32)


# ----------------------------------------------------------------------------- naive
def semi_shift_naive(en, de, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale):
    """Logits ``conv3x3(enc) + interpolate(conv3x3(dec))`` as the official code forms them."""
    groups = kernel_weight.shape[0] if is_depthwise(en_weight, kernel_weight) else 1
    enc = F.conv2d(en, en_weight, en_bias)
    dec = F.conv2d(de, de_weight)
    hi = F.conv2d(enc, kernel_weight, kernel_bias, padding=1, groups=groups)
    lo = F.conv2d(dec, kernel_weight, kernel_bias, padding=1, groups=groups)
    return hi + F.interpolate(lo, scale_factor=scale, mode="nearest")


def carafe_naive(features, masks, kernel_size, group_size, scale_factor):
    """CARAFE by ``F.unfold``: materialises ``B*K2*C*sH*sW`` values."""
    b, c, h, w = features.shape
    k2 = kernel_size * kernel_size
    unfolded = F.unfold(features, kernel_size, padding=kernel_size // 2)  # (B, C*K2, H*W)
    unfolded = unfolded.view(b, c * k2, h, w)
    unfolded = F.interpolate(unfolded, scale_factor=scale_factor, mode="nearest")
    oh, ow = unfolded.shape[-2:]
    unfolded = unfolded.view(b, group_size, c // group_size, k2, oh, ow)
    masks = masks.reshape(b, group_size, k2, oh, ow)
    out = torch.einsum("bgckhw,bgkhw->bgchw", unfolded, masks)
    return out.reshape(b, c, oh, ow)


def fade_naive(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale,
               carafe=carafe_naive):
    """FADE as the official code computes it; ``carafe`` is the reassembly (the ``mmcv``
    backend passes ``mmcv.ops.carafe`` here)."""
    gate = torch.sigmoid(F.interpolate(F.conv2d(de, gate_weight, gate_bias), scale_factor=scale, mode="nearest"))
    logits = semi_shift_naive(en, de, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale)
    masks = F.softmax(logits, dim=1)
    return gate * en + (1 - gate) * carafe(de, masks, math.isqrt(kernel_weight.shape[0]), 1, scale)


# ----------------------------------------------------------------------------- torch
def semi_shift_torch(en, de, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale):
    """Semi-shift logits without any interpolated tensor.

    Allocates ``enc`` (B*E*sH*sW), the logits (B*K2*sH*sW) and the low-resolution decoder
    branch (B*E*H*W + B*K2*H*W); ``up(dec)`` and ``up(conv3x3(dec))`` never exist: the
    low-resolution logits are added through a broadcast view.
    """
    groups = kernel_weight.shape[0] if is_depthwise(en_weight, kernel_weight) else 1
    enc = F.conv2d(en, en_weight, en_bias)
    logits = F.conv2d(enc, kernel_weight, kernel_bias, padding=1, groups=groups)
    del enc
    lo = F.conv2d(F.conv2d(de, de_weight), kernel_weight, kernel_bias, padding=1, groups=groups)
    b, k2, h, w = lo.shape
    logits.unflatten(3, (w, scale)).unflatten(2, (h, scale)).add_(lo[:, :, :, None, :, None])
    return logits


def carafe_torch(features, masks, kernel_size, group_size, scale_factor, gate_logits=None, en=None):
    """CARAFE one sub-pixel phase at a time; optionally fused with FADE's gate.

    With ``gate_logits`` (B, 1, H, W) and ``en`` given, returns
    ``g * en + (1 - g) * carafe(...)`` with ``g = sigmoid(up(gate_logits))``.

    Largest temporaries: the zero-padded features ``B*C*(H+2r)*(W+2r)`` and one phase's
    accumulator ``B*C*H*W`` (float32 for half inputs), besides the output ``B*C*sH*sW``.
    """
    b, c, h, w = features.shape
    s, k, g = scale_factor, kernel_size, group_size
    r = k // 2
    acc_dtype = _accumulate_dtype(features.dtype)
    ref = en if en is not None else features
    out = torch.empty((b, c, h * s, w * s), dtype=features.dtype, device=features.device,
                      memory_format=suggest_memory_format(ref))
    if out.numel() == 0:
        return out
    padded = F.pad(features, (r, r, r, r)).unflatten(1, (g, c // g))  # (B, G, C/G, H+2r, W+2r)
    masks = masks.unflatten(1, (g, k * k))  # (B, G, K2, sH, sW)
    gate = torch.sigmoid(gate_logits.to(acc_dtype)) if gate_logits is not None else None
    for dy in range(s):
        for dx in range(s):
            acc = torch.zeros((b, g, c // g, h, w), dtype=acc_dtype, device=features.device)
            for tap in range(k * k):
                i, j = divmod(tap, k)
                acc.addcmul_(padded[:, :, :, i:i + h, j:j + w], masks[:, :, tap, dy::s, dx::s].unsqueeze(2))
            acc = acc.flatten(1, 2)
            if gate is not None:
                acc.lerp_(en[:, :, dy::s, dx::s].to(acc_dtype), gate)
            out[:, :, dy::s, dx::s] = acc
    return out


def fade_torch(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale):
    """FADE on the memory-lean torch path.

    Temporaries above inputs and output, in elements, at most (not all alive at once):
    ``B*E*sH*sW`` (enc, freed after its 3x3) + ``2*B*K2*sH*sW`` (logits, masks) +
    ``B*C*(H+2r)*(W+2r)`` (padded de) + ``2*B*C*H*W`` (one phase's accumulator and its
    blend), float32 where the inputs are half. Nothing of size ``B*K2*C*sH*sW`` or ``B*C*K2*H*W``.
    """
    logits = semi_shift_torch(en, de, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale)
    masks = torch.softmax(logits, dim=1, dtype=_accumulate_dtype(logits.dtype))
    del logits
    gate_logits = F.conv2d(de, gate_weight, gate_bias)
    return carafe_torch(de, masks, math.isqrt(kernel_weight.shape[0]), 1, scale, gate_logits=gate_logits, en=en)
