"""FADE on the Triton kernels: the forward in 3 launches, the backward in 7, on folded weights.

Forward (``fade_fwd_triton``):
1. ``semi_shift_lo``: ``lo = conv3x3(de; w_lo) + bias_lo``, (B, H, W, KP) fp32: the decoder branch
   at low resolution (K2 channels) and, at channel K2, the gate logit (the gate's 1x1 sits at the
   centre tap of the folded weights: the gate costs no launch of its own);
2. ``semi_shift_hi``: ``logits = conv3x3(en; w_hi) + in-image tap biases + bias_hi + lo[y // s, x // s]``,
   (B, K2, OH, OW) fp32 (neither ``enc``, ``up(dec)`` nor ``up(conv3x3(dec))`` is ever written);
3. ``reassemble_fwd``: softmax, reassembly of ``de`` and the gate blend, one store.
Memory above inputs and output: the logits B*K2*OH*OW and ``lo`` B*H*W*KP (fp32), both saved
for the backward with the caller's own tensors (nothing with C channels at high resolution).

Backward (``fade_bwd_triton``): the reassembly backward (logit, gate and low-resolution gradients)
and its feature-gradient gather; the two transposed 3x3s (their epilogues add the gate's
``g * dout`` to ``en``'s gradient and the gather's result to ``de``'s); the two weight-gradient
partial reductions and their unfold. Temporaries: the logit gradient B*K2*OH*OW fp32, ``dlo``
B*H*W*KP, the log-sum-exp B*OH*OW, the partials (n_chunks*9*C*KP). No atomics: repeated backward
passes are bitwise identical.
"""
from __future__ import annotations

import math

import torch

from ..conv3x3 import conv3x3, conv3x3_input_grad, conv3x3_weight_grad
from ..helpers import memory_format_of
from ..reassemble import reassemble_fwd
from ..reassemble_bwd import reassemble_bwd
from .fold import PackedWeights
from .unfold_grad import unfold_weight_grad


def semi_shift_lo(de: torch.Tensor, packed: PackedWeights) -> torch.Tensor:
    """The low-resolution branch and the gate: (B, H, W, KP) fp32 (fp64), channels 0..K2-1 the
    decoder logits ``conv3x3(conv1x1(de; Wd); Wk) + bk``, channel K2 the gate logit."""
    b, _, h, w = de.shape
    kp = packed.w_lo.shape[2]
    lo = torch.empty((b, h, w, kp), dtype=packed.bias_lo.dtype, device=de.device)
    out_view = lo.permute(0, 3, 1, 2)  # (B, KP, H, W) strides of the channels-last buffer
    conv3x3(de, packed.w_lo, kp, out_view, bias=packed.bias_lo)
    return lo


def semi_shift_hi(en: torch.Tensor, lo: torch.Tensor, packed: PackedWeights, k2: int, scale: int) -> torch.Tensor:
    """FADE's logits (B, K2, OH, OW) fp32 (fp64): the encoder branch plus ``lo`` read at
    (y // scale, x // scale)."""
    b, _, oh, ow = en.shape
    logits = torch.empty((b, k2, oh, ow), dtype=lo.dtype, device=en.device)
    conv3x3(en, packed.w_hi, k2, logits, bias=packed.bias_hi, tap_bias=packed.tap_bias,
            lo=lo.permute(0, 3, 1, 2), scale=scale)
    return logits


def fade_fwd_triton(en, de, packed: PackedWeights, k2: int, scale: int, out: torch.Tensor):
    """Write FADE's output into ``out``; return ``(logits, lo)`` for the backward."""
    lo = semi_shift_lo(de, packed)
    logits = semi_shift_hi(en, lo, packed, k2, scale)
    reassemble_fwd(de, logits, lo[..., k2], en, out, math.isqrt(k2), 1, scale, softmax=True)
    return logits, lo


def fade_bwd_triton(dout, en, de, weights: tuple, w_hi, w_lo, logits, lo, scale: int, needs: list) -> list:
    """Gradients of (en, de, gate w, gate b, We, be, Wd, Wk, bk); the i-th only where ``needs[i]``
    (else a 0-element tensor)."""
    _, _, en_weight, en_bias, de_weight, kernel_weight, _ = weights
    k2 = kernel_weight.shape[0]
    grads = [None] * 9
    d_logits = torch.empty(logits.shape, dtype=logits.dtype, device=en.device)
    d_lo = torch.empty(lo.shape, dtype=lo.dtype, device=en.device).permute(0, 3, 1, 2)[:, :k2 + 1]
    d_de = torch.empty(de.shape, dtype=de.dtype, device=de.device, memory_format=memory_format_of(de))
    gate = lo[..., k2]
    reassemble_bwd(dout, de, logits, gate, en, d_de, d_logits, d_lo, math.isqrt(k2), 1, scale, softmax=True)
    c = en.shape[1]
    if needs[0]:
        d_en = torch.empty(en.shape, dtype=en.dtype, device=en.device, memory_format=memory_format_of(en))
        grads[0] = conv3x3_input_grad(d_logits, w_hi, c, d_en, add=dout, gate=gate, scale=scale)
    if needs[1]:
        grads[1] = conv3x3_input_grad(d_lo, w_lo, c, d_de, add=d_de)
    if any(needs[2:]):
        depthwise = kernel_weight.shape[1] == 1 and en_weight.shape[0] == k2 > 1
        weight_grads = unfold_weight_grad(conv3x3_weight_grad(d_logits, en), conv3x3_weight_grad(d_lo, de),
                                          en_weight, en_bias, de_weight, kernel_weight, k2, depthwise)
        for i, g in enumerate(weight_grads, start=2):
            if needs[i]:
                grads[i] = g
    return [g if g is not None else en.new_empty(0) for g in grads]
