"""FADE / FADE-Lite as one PyTorch operator, ``fade_triton::fade``, and its backward
``fade_triton::fade_backward``, both ``torch.library.triton_op``s (torch.compile sees the
Triton kernels; torch.export keeps the operator; autograd, fake and meta tensors work).

Each takes ``use_triton``: the Triton kernels (CUDA, or Triton's CPU interpreter), or the
memory-lean pure-PyTorch implementation in ``fade_triton.reference`` (any device). The
functional layer sets it from the backend (``fade_triton.backend``).

``FlopCounterMode`` counts them by ``fade_triton.flops``'s formulas (the function's FLOPs).

Triton forward, 3 launches on prepared weights (``PackedWeights``, cached per weight version
by the modules): the low-resolution branch with the gate (``semi_shift_lo``), the logits
(``semi_shift_hi``), the fused softmax-reassembly-gate (``reassemble_fwd``). Memory above
inputs and output: the logits B*K2*OH*OW and ``lo`` B*H*W*KP, fp32; both are saved for the
backward with the caller's own tensors (nothing with C channels at high resolution).

Triton backward, 7 launches: the reassembly backward (logit, gate and low-resolution
gradients) and its feature-gradient gather, the two transposed 3x3s (their epilogues add the
gate's ``g * dout`` to ``en``'s gradient and the gather's result to ``de``'s), the two
weight-gradient partial reductions and their unfold. Temporaries: the logit gradient
B*K2*OH*OW fp32, ``dlo`` B*H*W*KP, the log-sum-exp B*OH*OW, the partials
(n_chunks*9*C*KP, n_chunks = B*ceil(H / 16)). No atomics: repeated backward passes are
bitwise identical.
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensor
from torch.library import triton_op
from torch.utils.flop_counter import register_flop_formula

from .. import flops, reference
from ..backend import triton_installed
from .packing import PackedWeights

if triton_installed():  # the torch implementation of the operators needs no triton
    from .reassemble import reassemble_bwd, reassemble_fwd
    from .semi_shift import semi_shift_hi, semi_shift_input_grad, semi_shift_lo, semi_shift_weight_grad, unfold_weight_grad


def _device_guard(t: Tensor):
    """Launch on the tensors' own GPU (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


def launches_skipped(t: Tensor) -> bool:
    """True for fake and meta tensors: the op runs for its output shapes only (shape
    propagation, torch.export), so no kernel is launched. Under torch.compile the op's
    implementation is traced with functional tensors instead, and its launches are recorded."""
    return t.device.type == "meta" or isinstance(t, FakeTensor)


@triton_op("fade_triton::fade", mutates_args=())
def fade_fwd(en: Tensor, de: Tensor, gate_weight: Tensor, gate_bias: Tensor, en_weight: Tensor, en_bias: Tensor,
             de_weight: Tensor, kernel_weight: Tensor, kernel_bias: Tensor, w_hi: Optional[Tensor],
             w_lo: Optional[Tensor], tap_bias: Optional[Tensor], bias_hi: Optional[Tensor],
             bias_lo: Optional[Tensor], scale: int, use_triton: bool) -> tuple[Tensor, Tensor, Tensor]:
    """FADE forward: ``(out, logits, lo)``. out (B, C, OH, OW) in en's dtype and layout; the
    other two are what the backward needs (Triton: the logits and the low-resolution branch
    with the gate logit; torch: the softmax masks and the gate logits). ``w_hi`` .. ``bias_lo``:
    the ``PackedWeights`` of the seven weights (Triton only; None for the torch implementation)."""
    weights = (gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias)
    if not use_triton:
        return reference.fade_torch_forward(en, de, *weights, scale)
    packed = PackedWeights(w_hi, w_lo, tap_bias, bias_hi, bias_lo)
    k2 = kernel_weight.shape[0]
    out = torch.empty(en.shape, dtype=en.dtype, device=en.device, memory_format=_layout(en))
    if launches_skipped(en):
        return out, en.new_empty(en.shape[0], k2, *en.shape[2:], dtype=packed.bias_hi.dtype), de.new_empty(
            de.shape[0], *de.shape[2:], packed.w_lo.shape[2], dtype=packed.bias_lo.dtype)
    with _device_guard(en):
        lo = semi_shift_lo(de, packed)
        logits = semi_shift_hi(en, lo, packed, k2, scale)
        reassemble_fwd(de, logits, lo[..., k2], en, out, math.isqrt(k2), 1, scale, softmax=True)
    return out, logits, lo


@triton_op("fade_triton::fade_backward", mutates_args=())
def fade_bwd(dout: Tensor, en: Tensor, de: Tensor, gate_weight: Tensor, gate_bias: Tensor, en_weight: Tensor,
             en_bias: Tensor, de_weight: Tensor, kernel_weight: Tensor, kernel_bias: Tensor, w_hi: Optional[Tensor],
             w_lo: Optional[Tensor], saved_a: Tensor, saved_b: Tensor, scale: int, use_triton: bool,
             needs: list[bool]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of (en, de, gate w, gate b, We, be, Wd, Wk, bk); the i-th only where
    ``needs[i]`` (else a 0-element tensor). ``saved_a``, ``saved_b``: the forward's 2nd and 3rd
    outputs."""
    weights = (gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias)
    if not use_triton:
        return reference.fade_torch_backward(dout, en, de, *weights, saved_a, saved_b, scale, needs)
    logits, lo = saved_a, saved_b
    k2 = kernel_weight.shape[0]
    empty = [en.new_empty(0) for _ in range(9)]
    if launches_skipped(en):
        return tuple(t.new_empty(t.shape) if need else e for t, need, e in zip((en, de, *weights), needs, empty))
    with _device_guard(en):
        d_logits = torch.empty(logits.shape, dtype=logits.dtype, device=en.device)
        d_lo = torch.empty(lo.shape, dtype=lo.dtype, device=en.device).permute(0, 3, 1, 2)[:, :k2 + 1]
        d_de = torch.empty(de.shape, dtype=de.dtype, device=de.device, memory_format=_layout(de))
        gate = lo[..., k2]
        reassemble_bwd(dout, de, logits, gate, en, d_de, d_logits, d_lo, math.isqrt(k2), 1, scale, softmax=True)
        c = en.shape[1]
        if needs[0]:
            empty[0] = semi_shift_input_grad(d_logits, w_hi, c, torch.empty(en.shape, dtype=en.dtype, device=en.device,
                                             memory_format=_layout(en)), add=dout, gate=gate, scale=scale)
        if needs[1]:
            empty[1] = semi_shift_input_grad(d_lo, w_lo, c, d_de, add=d_de)
        if any(needs[2:]):
            depthwise = kernel_weight.shape[1] == 1 and en_weight.shape[0] == k2 > 1
            grads = unfold_weight_grad(semi_shift_weight_grad(d_logits, en), semi_shift_weight_grad(d_lo, de),
                                       en_weight, en_bias, de_weight, kernel_weight, k2, depthwise)
            for i, g in enumerate(grads, start=2):
                if needs[i]:
                    empty[i] = g
    return tuple(empty)


def _layout(t: Tensor) -> torch.memory_format:
    if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _setup_context(ctx, inputs, output):
    *tensors, scale, use_triton = inputs
    _, saved_a, saved_b = output
    ctx.mark_non_differentiable(saved_a, saved_b)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(*tensors[:11], saved_a, saved_b)  # the caller's tensors, w_hi, w_lo: no copies
    ctx.scale, ctx.use_triton = scale, use_triton


def _backward(ctx, dout, _saved_a_grad, _saved_b_grad):
    needs = list(ctx.needs_input_grad[:9])
    if dout is None or not any(needs):
        return (None,) * 16
    grads = fade_bwd(dout, *ctx.saved_tensors, ctx.scale, ctx.use_triton, needs)
    return (*(g if need else None for g, need in zip(grads, needs)), *(None,) * 7)


fade_fwd.register_autograd(_backward, setup_context=_setup_context)
register_flop_formula(torch.ops.fade_triton.fade)(flops.fade_op_flops)
register_flop_formula(torch.ops.fade_triton.fade_backward)(flops.fade_backward_op_flops)


def fade(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale,
         packed: Optional[PackedWeights], use_triton: bool) -> Tensor:
    """FADE through ``fade_triton::fade``; ``packed`` is required with ``use_triton``."""
    packed = packed if use_triton else PackedWeights(None, None, None, None, None)
    return fade_fwd(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias,
                    *packed, scale, use_triton)[0]
