"""FADE in plain PyTorch as the official code writes it: the ``naive`` backend (the benchmark's
baseline: faithful on purpose, not optimised; it fixes only the official port's bugs: unfold
padding is ``K // 2`` for every K, channels are never mixed), and the export form that
``torch.onnx.export`` and ``torch.jit.trace`` record (the same semi-shift and gate, with the
export form of the reassembly: standard operators only, every size read from the inputs)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...checks import is_depthwise
from ..carafe.naive import carafe_export, carafe_naive
from ..reassemble_eager import upsample_to


def semi_shift_naive(en, de, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale, depthwise=None):
    """Logits ``conv3x3(enc) + interpolate(conv3x3(dec))`` as the official code forms them.
    ``depthwise`` (FADE-Lite's 3x3) is read from the weights' shapes unless given."""
    depthwise = is_depthwise(en_weight, kernel_weight) if depthwise is None else depthwise
    groups = kernel_weight.shape[0] if depthwise else 1
    enc = F.conv2d(en, en_weight, en_bias)
    dec = F.conv2d(de, de_weight)
    hi = F.conv2d(enc, kernel_weight, kernel_bias, padding=1, groups=groups)
    lo = F.conv2d(dec, kernel_weight, kernel_bias, padding=1, groups=groups)
    return hi + upsample_to(lo, scale, hi.shape[2:])


def fade_naive(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale,
               carafe=carafe_naive, depthwise=None):
    """FADE as the official code computes it; ``carafe`` is the reassembly (the ``mmcv``
    backend passes ``mmcv.ops.carafe`` here), ``depthwise`` as in ``semi_shift_naive``."""
    size = en.shape[2:]
    gate = torch.sigmoid(upsample_to(F.conv2d(de, gate_weight, gate_bias), scale, size))
    logits = semi_shift_naive(en, de, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale, depthwise)
    masks = F.softmax(logits, dim=1)
    return gate * en + (1 - gate) * carafe(de, masks, math.isqrt(kernel_weight.shape[0]), 1, scale)


def fade_export(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale,
                depthwise):
    """FADE for exporters: the naive semi-shift and gate (convolutions, nearest upsampling of
    K2- and 1-channel maps, crop) with ``carafe_export`` as the reassembly. ``depthwise``
    (FADE-Lite) comes from the caller's argument checks: read from the weights' shapes while
    ``torch.jit.trace`` records, it would be recorded as a value that might change."""
    return fade_naive(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias,
                      scale, carafe=carafe_export, depthwise=depthwise)


# The entry points of fade_triton.backend.IMPLEMENTATIONS: (en, de, weights, scale, depthwise, cache)
def fade_naive_path(en, de, weights, scale, depthwise, cache=None):
    """The ``naive`` backend."""
    return fade_naive(en, de, *weights, scale, depthwise=depthwise)


def fade_export_path(en, de, weights, scale, depthwise, cache=None):
    """What every backend resolves to while an exporter records."""
    return fade_export(en, de, *weights, scale, depthwise)
