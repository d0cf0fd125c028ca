"""FADE in eager PyTorch: the ``torch`` backend (the eager implementation of the
``fade_triton::fade`` operator), memory-lean on any device and dtype.

The decoder branch of the semi-shift is added at low resolution through strided views (no
interpolated tensor), and the reassembly runs one sub-pixel phase at a time
(``ops/reassemble_eager.py``), so nothing of size ``B*K2*C*sH*sW`` ever exists. The backward is
explicit and just as lean. Arguments are assumed valid here (``fade_triton.checks``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...checks import is_depthwise
from ..helpers import accumulator_dtype
from ..reassemble_eager import phases, reassemble_torch, reassemble_torch_backward, upsample_to


def semi_shift_torch(en, de, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale):
    """Semi-shift logits without any interpolated tensor.

    Allocates ``enc`` (B*E*OH*OW), the logits (B*K2*OH*OW) and the low-resolution decoder
    branch (B*E*H*W + B*K2*H*W); ``up(dec)`` and ``up(conv3x3(dec))`` never exist: the
    low-resolution logits are added phase by phase through strided views.
    """
    groups = kernel_weight.shape[0] if is_depthwise(en_weight, kernel_weight) else 1
    enc = F.conv2d(en, en_weight, en_bias)
    logits = F.conv2d(enc, kernel_weight, kernel_bias, padding=1, groups=groups)
    del enc
    lo = F.conv2d(F.conv2d(de, de_weight), kernel_weight, kernel_bias, padding=1, groups=groups)
    for dy, dx, rows, cols in phases(scale, logits.shape[2:]):
        logits[:, :, dy::scale, dx::scale] += lo[:, :, :rows, :cols]
    return logits


def fade_torch_forward(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias,
                       scale):
    """FADE on the memory-lean torch path: ``(out, masks, gate_logits)``, the last two kept
    for ``fade_torch_backward``.

    Temporaries above inputs and output, in elements, at most (not all alive at once):
    ``B*E*OH*OW`` (enc, freed after its 3x3) + ``2*B*K2*OH*OW`` (logits, masks) +
    ``B*C*(H+2r)*(W+2r)`` (padded de) + ``2*B*C*H*W`` (one phase's accumulator and its
    blend), float32 where the inputs are half. Nothing of size ``B*K2*C*OH*OW`` or ``B*C*K2*H*W``.
    """
    logits = semi_shift_torch(en, de, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale)
    masks = torch.softmax(logits, dim=1, dtype=accumulator_dtype(logits.dtype))
    del logits
    gate_logits = F.conv2d(de, gate_weight, gate_bias)
    gate = torch.sigmoid(gate_logits.to(masks.dtype))
    out = reassemble_torch(de, masks, math.isqrt(kernel_weight.shape[0]), 1, scale, gate=gate, en=en)
    return out, masks, gate_logits


def _conv_backward(grad, inp, weight, has_bias, padding, groups, mask):
    """(d_input, d_weight, d_bias) of a stride-1 ``F.conv2d``; entries not in ``mask`` are None."""
    bias_sizes = [weight.shape[0]] if has_bias else None
    return torch.ops.aten.convolution_backward(grad, inp, weight, bias_sizes, [1, 1], [padding, padding], [1, 1],
                                               False, [0, 0], groups, mask)


def fade_torch_backward(dout, en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight,
                        kernel_bias, masks, gate_logits, scale, needs):
    """Gradients of ``fade_torch_forward`` w.r.t. (en, de, gate w, gate b, We, be, Wd, Wk, bk),
    the i-th only where ``needs[i]`` (else a 0-element tensor), from the saved masks and gate
    logits: the reassembly backward phase by phase, the softmax backward, then the
    convolutions' own backward (``aten.convolution_backward``), the encoder and decoder
    compressions recomputed (B*E*OH*OW and B*E*H*W)."""
    k2 = kernel_weight.shape[0]
    groups = k2 if is_depthwise(en_weight, kernel_weight) else 1
    acc = masks.dtype
    oh, ow = en.shape[2:]
    gate = torch.sigmoid(gate_logits.to(acc))
    d_x, d_masks, d_gate = reassemble_torch_backward(dout, de, masks, math.isqrt(k2), 1, scale, gate=gate, en=en,
                                                 need_features=needs[1])
    d_logits = masks * (d_masks - (masks * d_masks).sum(1, keepdim=True))
    del d_masks
    d_gate_logits = d_gate * gate * (1 - gate)
    h, w = de.shape[2:]
    d_lo = d_logits.new_zeros((en.shape[0], k2, h, w))
    for dy, dx, rows, cols in phases(scale, (oh, ow)):
        d_lo[:, :, :rows, :cols] += d_logits[:, :, dy::scale, dx::scale]
    need_en, need_de, need_gw, need_gb, need_we, need_be, need_wd, need_wk, need_bk = needs
    wdt = kernel_weight.dtype
    out = [en.new_empty(0) for _ in range(9)]
    d_enc = d_dec = None
    if need_en or need_we or need_be or need_wk or need_bk:
        enc = F.conv2d(en, en_weight, en_bias)
        d_enc, d_wk1, d_bk1 = _conv_backward(d_logits.to(enc.dtype), enc, kernel_weight, True, 1, groups,
                                             [need_en or need_we or need_be, need_wk, need_bk])
        del enc
    if need_de or need_wd or need_wk or need_bk:
        dec = F.conv2d(de, de_weight)
        d_dec, d_wk2, d_bk2 = _conv_backward(d_lo.to(dec.dtype), dec, kernel_weight, True, 1, groups,
                                             [need_de or need_wd, need_wk, need_bk])
    if need_wk:
        out[7] = (d_wk1 + d_wk2).to(wdt)
    if need_bk:
        out[8] = (d_bk1 + d_bk2).to(wdt)
    if d_enc is not None and (need_en or need_we or need_be):
        d_en, out[4], out[5] = _conv_backward(d_enc, en, en_weight, True, 0, 1, [need_en, need_we, need_be])
        if need_en:
            g_up = upsample_to(gate, scale, (oh, ow))
            out[0] = (d_en.to(acc) + g_up * dout.to(acc)).to(en.dtype)
    if need_de or need_wd:
        d_de, out[6], _ = _conv_backward(d_dec, de, de_weight, False, 0, 1, [need_de, need_wd, False])
    if need_de or need_gw or need_gb:
        d_de_gate, out[2], out[3] = _conv_backward(d_gate_logits.to(de.dtype), de, gate_weight, True, 0, 1,
                                                   [need_de, need_gw, need_gb])
        if need_de:
            out[1] = (d_x.to(acc) + d_de.to(acc) + d_de_gate.to(acc)).to(de.dtype)
    return tuple(o if o is not None else en.new_empty(0) for o in out)
