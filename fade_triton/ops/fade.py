"""The ``triton`` backend of FADE / FADE-Lite: the semi-shift kernel and the fused
softmax-reassembly-gate kernel, composed.

Forward memory above inputs and output, in elements: the logits ``B*K2*sH*sW`` (fp32), the
low-resolution decoder logits ``B*K2*H*W`` (fp32, freed at the end of the op), the gate logits
``B*H*W`` and the folded weights ``2*K2*C*9 + 9*K2``. No tensor with E or C channels at high
resolution is allocated besides the output.

Saved for backward, beyond the caller's own ``en``, ``de`` and weights:
``B*K2*sH*sW`` (logits, fp32) + ``B*H*W`` (gate logits) + ``2*K2*C*9 + 9*K2`` (folded weights).
Backward temporaries: ``B*K2*sH*sW`` (logit gradient) + ``2*B*sH*sW`` (log-sum-exp and gate
gradient per output pixel, fp32) + the weight-gradient partials ``n_chunks*B*9*K2*C``, where
``n_chunks = ceil(sH*sW / 4096)``; nothing of size ``C*sH*sW`` besides the gradients returned.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .reassemble import reassemble
from .semi_shift import semi_shift


def fade_triton(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale):
    weights = (gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias)
    device_type = en.device.type
    if torch.is_autocast_enabled(device_type):  # cast float32 to the autocast dtype, as a conv would
        dtype = torch.get_autocast_dtype(device_type)
        en, de, *weights = (t.to(dtype) if t.dtype == torch.float32 else t for t in (en, de, *weights))
        if len({t.dtype for t in (en, de, *weights)}) > 1:
            raise TypeError(f"under autocast, en, de and the weights must be float32 or {dtype}")
        with torch.autocast(device_type, enabled=False):
            return _fade_triton(en, de, *weights, scale)
    return _fade_triton(en, de, *weights, scale)


def _fade_triton(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale):
    gate = F.conv2d(de, gate_weight, gate_bias)  # (B, 1, H, W): the 1x1 stays cuDNN/cuBLAS
    logits = semi_shift(en, de, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale)
    return reassemble(de, logits, gate, en, math.isqrt(kernel_weight.shape[0]), scale)
