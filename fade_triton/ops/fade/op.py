"""FADE / FADE-Lite as one PyTorch operator, ``fade_triton::fade``, and its backward
``fade_triton::fade_backward``: ``torch.library.triton_op``s (torch.compile sees the Triton
kernels; torch.export keeps the operator; autograd, fake and meta tensors work), with the
function's FLOP formula for ``FlopCounterMode``.

``use_triton`` picks the implementation: the Triton kernels (``triton_impl.py``; CUDA, or Triton's
CPU interpreter) or eager PyTorch (``eager.py``, any device). It is an argument of the operator,
not a per-device registration, so the ``torch`` backend runs on CUDA and the interpreter runs the
kernels on CPU; ``torch.export`` records the choice with the call. ``fade_triton_path`` and
``fade_torch_path`` are what ``fade_triton.backend.IMPLEMENTATIONS`` maps the ``triton`` and
``torch`` backends to.

Eager fast path: the dispatcher's route to an operator (autograd kernel, redispatch, the
implementation's wrappers) costs more host time than the Triton launchers themselves. Where
nothing needs to see the operator (``helpers.direct_call_ok``: no torch.compile / export, no
dispatch or function mode such as ``FlopCounterMode``, no functorch transform, plain tensors),
``fade_triton_path`` calls the same implementation directly, through ``FadeFunction`` (a
``torch.autograd.Function`` with the operator's own setup_context and backward) when a graph is
recorded. Same launches, same saved tensors, bitwise the same results and gradients; the
operator stays the one definition that compile, export, fake tensors and FLOP counting see.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.library import triton_op
from torch.utils.flop_counter import register_flop_formula

from ...backend import triton_installed
from ..helpers import (autocast_inputs, autocast_off, backward_call, device_guard, direct_call, direct_function,
                       direct_run, launches_skipped, memory_format_of)
from .eager import fade_torch_backward, fade_torch_forward
from .fold import FoldedWeightCache, PackedWeights, pack_weights

if triton_installed():  # the eager implementation needs no triton
    from .triton_impl import fade_bwd_triton, fade_fwd_triton


def fade_flops(en_shape, de_shape, en_weight_shape, kernel_weight_shape) -> int:
    """FADE / FADE-Lite forward FLOPs (multiply-add = 2) from the shapes of ``en``, ``de``,
    ``en_weight`` (E, C, 1, 1) and ``kernel_weight`` (K2, Ek, 3, 3)::

        2*B*OH*OW * (C*E + 9*Ek*K2 + K2*C)     # encoder 1x1, 3x3, reassembly
      + 2*B*H*W   * (C*E + 9*Ek*K2 + C)        # decoder 1x1, 3x3, gate 1x1

    The products the ``naive`` backend runs as ``aten.convolution`` and ``aten.bmm``, so every
    backend reports the same count; no elementwise work (as FlopCounterMode counts none)."""
    b, c, oh, ow = en_shape
    h, w = de_shape[2:]
    emb = en_weight_shape[0]
    k2, emb_per_group = kernel_weight_shape[:2]
    generator = c * emb + 9 * emb_per_group * k2
    return 2 * b * (oh * ow * (generator + k2 * c) + h * w * (generator + c))


def fade_forward_impl(en: Tensor, de: Tensor, gate_weight: Tensor, gate_bias: Tensor, en_weight: Tensor, en_bias: Tensor,
             de_weight: Tensor, kernel_weight: Tensor, kernel_bias: Tensor, w_hi: Optional[Tensor],
             w_lo: Optional[Tensor], tap_bias: Optional[Tensor], bias_hi: Optional[Tensor],
             bias_lo: Optional[Tensor], scale: int, use_triton: bool) -> tuple[Tensor, Tensor, Tensor]:
    """FADE forward: ``(out, saved_a, saved_b)``. out (B, C, OH, OW) in en's dtype and layout; the
    other two are what the backward needs (Triton: the logits and the low-resolution branch with
    the gate logit; torch: the softmax masks and the gate logits). ``w_hi`` .. ``bias_lo``: the
    ``PackedWeights`` of the seven weights (Triton only; None for the eager implementation)."""
    weights = (gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias)
    if not use_triton:
        return fade_torch_forward(en, de, *weights, scale)
    packed = PackedWeights(w_hi, w_lo, tap_bias, bias_hi, bias_lo)
    k2 = kernel_weight.shape[0]
    out = torch.empty_like(en, memory_format=memory_format_of(en))
    if launches_skipped(en):
        return out, en.new_empty(en.shape[0], k2, *en.shape[2:], dtype=packed.bias_hi.dtype), de.new_empty(
            de.shape[0], *de.shape[2:], packed.w_lo.shape[2], dtype=packed.bias_lo.dtype)
    with device_guard(en):
        logits, lo = fade_fwd_triton(en, de, packed, k2, scale, out)
    return out, logits, lo


def fade_backward_impl(dout: Tensor, en: Tensor, de: Tensor, gate_weight: Tensor, gate_bias: Tensor, en_weight: Tensor,
             en_bias: Tensor, de_weight: Tensor, kernel_weight: Tensor, kernel_bias: Tensor, w_hi: Optional[Tensor],
             w_lo: Optional[Tensor], saved_a: Tensor, saved_b: Tensor, scale: int, use_triton: bool,
             needs: list[bool]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of (en, de, gate w, gate b, We, be, Wd, Wk, bk); the i-th only where
    ``needs[i]`` (else a 0-element tensor). ``saved_a``, ``saved_b``: the forward's 2nd and 3rd
    outputs."""
    weights = (gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias)
    if not use_triton:
        return fade_torch_backward(dout, en, de, *weights, saved_a, saved_b, scale, needs)
    if launches_skipped(en):
        return tuple(t.new_empty(t.shape) if need else en.new_empty(0) for t, need in zip((en, de, *weights), needs))
    with device_guard(en):
        return tuple(fade_bwd_triton(dout, en, de, weights, w_hi, w_lo, saved_a, saved_b, scale, needs))


# the operators: the implementations above, registered (the fast path below calls them directly)
fade_fwd = triton_op("fade_triton::fade", mutates_args=())(fade_forward_impl)
fade_bwd = triton_op("fade_triton::fade_backward", mutates_args=())(fade_backward_impl)


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
    args = (dout, *ctx.saved_tensors, ctx.scale, ctx.use_triton, needs)
    grads = backward_call(ctx, fade_bwd, fade_backward_impl, args, args[:14])
    return (*(g if need else None for g, need in zip(grads, needs)), *(None,) * 7)


fade_fwd.register_autograd(_backward, setup_context=_setup_context)
# FlopCounterMode passes each tensor argument as its shape; a backward counts twice its forward
register_flop_formula(torch.ops.fade_triton.fade)(
    lambda en, de, gw, gb, en_weight, eb, dw, kernel_weight, *args, **kwargs:
    fade_flops(en, de, en_weight, kernel_weight))
register_flop_formula(torch.ops.fade_triton.fade_backward)(
    lambda dout, en, de, gw, gb, en_weight, eb, dw, kernel_weight, *args, **kwargs:
    2 * fade_flops(en, de, en_weight, kernel_weight))


# the eager fast path (module docstring)
FadeFunction = direct_function("FadeFunction", fade_forward_impl, _setup_context, _backward)


def fade_call(*args) -> tuple[Tensor, Tensor, Tensor]:
    """``fade_triton::fade(*args)``, through the eager fast path where it applies (the ``triton``
    implementation only)."""
    if not args[-1]:
        return fade_fwd(*args)
    return direct_call(fade_fwd, FadeFunction, fade_forward_impl, args, args[:14], args[:9])


# The entry points of fade_triton.backend.IMPLEMENTATIONS: (en, de, weights, scale, depthwise, cache)
def fade_triton_path(en, de, weights, scale, depthwise, cache: FoldedWeightCache | None = None) -> Tensor:
    """The ``triton`` backend: the operator on the Triton kernels, with the folded weights from
    ``cache`` (a module's, prepared once per weight version from its own parameters) or folded
    for this call."""
    raw = weights
    en, de, *weights = autocast_inputs(en, de, *weights)
    packed = cache.get(raw, en.dtype) if cache is not None else pack_weights(tuple(weights), en.dtype)
    with autocast_off(en.device.type):
        out = fade_call(en, de, *weights, *packed, scale, True)[0]
    if cache is not None:  # validated: the next call of this signature may skip the checks (fold.py)
        cache.remember(en, de, raw, scale, fade_replay)
    return out


def fade_replay(en, de, weights: tuple, packed: PackedWeights, scale) -> Tensor:
    """``fade_triton_path`` for a call its module's cache validated before
    (``FoldedWeightCache.replay``: plain eager state, autocast off, the same signature and weights):
    the operator's eager fast path on the cached folded weights, nothing else."""
    return direct_run(FadeFunction, fade_forward_impl, (en, de, *weights, *packed, scale, True), (en, de, *weights))[0]


def fade_torch_path(en, de, weights, scale, depthwise, cache=None) -> Tensor:
    """The ``torch`` backend: the same operator on its eager PyTorch implementation."""
    en, de, *weights = autocast_inputs(en, de, *weights)
    with autocast_off(en.device.type):
        return fade_fwd(en, de, *weights, None, None, None, None, None, scale, False)[0]
