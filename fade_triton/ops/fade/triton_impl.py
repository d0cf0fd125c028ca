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
from ..helpers import dot_precision, memory_format_of, signature_plans, spec, target_of
from ..reassemble import reassemble_fwd
from ..reassemble_bwd import reassemble_bwd
from .fold import PackedWeights
from .unfold_grad import unfold_weight_grad


def semi_shift_lo(de: torch.Tensor, packed: PackedWeights, slot=None) -> torch.Tensor:
    """The low-resolution branch and the gate: (B, H, W, KP) fp32 (fp64), channels 0..K2-1 the
    decoder logits ``conv3x3(conv1x1(de; Wd); Wk) + bk``, channel K2 the gate logit. ``slot``: the
    launch's plan slot (``helpers.slot_plan``), or None."""
    b, _, h, w = de.shape
    kp = packed.w_lo.shape[2]
    lo = torch.empty((b, h, w, kp), dtype=packed.bias_lo.dtype, device=de.device)
    out_view = lo.permute(0, 3, 1, 2)  # (B, KP, H, W) strides of the channels-last buffer
    conv3x3(de, packed.w_lo, kp, out_view, bias=packed.bias_lo, slot=slot)
    return lo


def semi_shift_hi(en: torch.Tensor, lo: torch.Tensor, packed: PackedWeights, k2: int, scale: int,
                  slot=None) -> torch.Tensor:
    """FADE's logits (B, K2, OH, OW) fp32 (fp64): the encoder branch plus ``lo`` read at
    (y // scale, x // scale)."""
    b, _, oh, ow = en.shape
    logits = torch.empty((b, k2, oh, ow), dtype=lo.dtype, device=en.device)
    conv3x3(en, packed.w_hi, k2, logits, bias=packed.bias_hi, tap_bias=packed.tap_bias,
            lo=lo.permute(0, 3, 1, 2), scale=scale, slot=slot)
    return logits


def fade_fwd_triton(en, de, packed: PackedWeights, k2: int, scale: int, out: torch.Tensor):
    """Write FADE's output into ``out``; return ``(logits, lo)`` for the backward."""
    target = target_of(en)
    # everything the three launches' plans depend on (lo and the logits are allocated here)
    plans = signature_plans("fade_fwd", spec(en), spec(de), out.stride(), packed.w_hi.shape, packed.w_hi.stride(),
                            packed.w_lo.shape, packed.w_lo.stride(), packed.tap_bias.stride(), packed.bias_lo.dtype,
                            k2, scale, target, dot_precision(en.dtype, target))
    lo = semi_shift_lo(de, packed, slot=(plans, "lo"))
    logits = semi_shift_hi(en, lo, packed, k2, scale, slot=(plans, "hi"))
    reassemble_fwd(de, logits, lo[..., k2], en, out, math.isqrt(k2), 1, scale, softmax=True, slot=(plans, "reassemble"))
    return logits, lo


def fade_bwd_triton(dout, en, de, weights: tuple, w_hi, w_lo, logits, lo, scale: int, needs: list) -> list:
    """Gradients of (en, de, gate w, gate b, We, be, Wd, Wk, bk); the i-th only where ``needs[i]``
    (else a 0-element tensor)."""
    en_weight, kernel_weight = weights[2], weights[5]
    k2 = kernel_weight.shape[0]
    target = target_of(en)
    # everything the seven launches' plans depend on (the gradients are allocated here), the
    # strides of the weights the unfold reads included
    plans = signature_plans("fade_bwd", spec(dout), spec(en), spec(de), w_hi.shape, w_hi.stride(), w_lo.stride(),
                            spec(logits), spec(lo), en_weight.shape, en_weight.stride(), weights[3].stride(),
                            weights[4].stride(), kernel_weight.shape, kernel_weight.stride(), scale, target,
                            dot_precision(en.dtype, target))
    grads = [None] * 9
    d_logits = torch.empty_like(logits, memory_format=torch.contiguous_format)
    d_lo = torch.empty_like(lo, memory_format=torch.contiguous_format).permute(0, 3, 1, 2)[:, :k2 + 1]
    d_de = torch.empty_like(de, memory_format=memory_format_of(de))
    gate = lo[..., k2]
    reassemble_bwd(dout, de, logits, gate, en, d_de, d_logits, d_lo, math.isqrt(k2), 1, scale, softmax=True,
                   slot=(plans, "reassemble"))
    c = en.shape[1]
    if needs[0]:
        d_en = torch.empty_like(en, memory_format=memory_format_of(en))
        grads[0] = conv3x3_input_grad(d_logits, w_hi, c, d_en, add=dout, gate=gate, scale=scale, slot=(plans, "d_en"))
    if needs[1]:
        grads[1] = conv3x3_input_grad(d_lo, w_lo, c, d_de, add=d_de, slot=(plans, "d_de"))
    if any(needs[2:]):
        depthwise = kernel_weight.shape[1] == 1 and en_weight.shape[0] == k2 > 1
        weight_grads = unfold_weight_grad(conv3x3_weight_grad(d_logits, en, slot=(plans, "partials_hi")),
                                          conv3x3_weight_grad(d_lo, de, slot=(plans, "partials_lo")),
                                          weights, depthwise, slot=(plans, "unfold"))
        for i, g in enumerate(weight_grads, start=2):
            if needs[i]:
                grads[i] = g
    return [g if g is not None else en.new_empty(0) for g in grads]
