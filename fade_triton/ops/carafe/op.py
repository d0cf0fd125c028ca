"""CARAFE as the operator ``fade_triton::carafe`` and its backward ``fade_triton::carafe_backward``
(``torch.library.triton_op``s: torch.compile sees the Triton kernels, torch.export keeps the
operator, autograd, fake and meta tensors work).

``use_triton`` picks the Triton kernels (``ops/reassemble.py``, ``ops/reassemble_bwd.py``: 1 launch
forward, 2 backward) or the eager PyTorch implementation (``ops/reassemble_eager.py``, any device).
Masks are used as given (no softmax, no renormalisation), with ``group_size`` groups.
``carafe_triton_path`` and ``carafe_torch_path`` are what ``fade_triton.backend.IMPLEMENTATIONS``
maps the ``triton`` and ``torch`` backends to. The ``triton`` backend takes the eager fast path
of ``ops/fade/op.py`` (its docstring): the same implementation without the dispatcher where
nothing needs to see the operator (``CarafeFunction``, ``helpers.direct_call``).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.library import triton_op
from torch.utils.flop_counter import register_flop_formula

from ...backend import triton_installed
from ..helpers import (autocast_inputs, autocast_off, backward_call, device_guard, direct_call, direct_function,
                       launches_skipped, memory_format_of)
from ..reassemble_eager import reassemble_torch, reassemble_torch_backward

if triton_installed():  # the eager implementation needs no triton
    from ..reassemble import reassemble_fwd
    from ..reassemble_bwd import reassemble_bwd


def carafe_flops(features_shape, masks_shape, kernel_size: int) -> int:
    """CARAFE forward FLOPs (multiply-add = 2): ``2*K2*C`` per output pixel, any group size."""
    b, c = features_shape[:2]
    oh, ow = masks_shape[2:]
    return 2 * b * oh * ow * kernel_size * kernel_size * c


def carafe_forward_impl(features: Tensor, masks: Tensor, kernel_size: int, group_size: int, scale_factor: int,
               use_triton: bool) -> Tensor:
    """(B, C, OH, OW) in the features' dtype and layout; (OH, OW) is the masks' size."""
    if not use_triton:
        return reassemble_torch(features, masks, kernel_size, group_size, scale_factor)
    b, c = features.shape[:2]
    out = torch.empty((b, c, *masks.shape[2:]), dtype=features.dtype, device=features.device,
                      memory_format=memory_format_of(features))
    if not launches_skipped(features):
        with device_guard(features):
            reassemble_fwd(features, masks, None, None, out, kernel_size, group_size, scale_factor, softmax=False)
    return out


def carafe_backward_impl(dout: Tensor, features: Tensor, masks: Tensor, kernel_size: int, group_size: int, scale_factor: int,
               use_triton: bool) -> tuple[Tensor, Tensor]:
    """Gradients ``(d_features, d_masks)`` in the inputs' dtypes."""
    if not use_triton:
        d_features, d_masks, _ = reassemble_torch_backward(dout, features, masks, kernel_size, group_size,
                                                           scale_factor)
        return d_features, d_masks.to(masks.dtype)
    d_features = torch.empty(features.shape, dtype=features.dtype, device=features.device,
                             memory_format=memory_format_of(features))
    d_masks = torch.empty(masks.shape, dtype=masks.dtype, device=masks.device)
    if not launches_skipped(features):
        with device_guard(features):
            reassemble_bwd(dout, features, masks, None, None, d_features, d_masks, None, kernel_size, group_size,
                           scale_factor, softmax=False)
    return d_features, d_masks


# the operators: the implementations above, registered (the fast path below calls them directly)
carafe_fwd = triton_op("fade_triton::carafe", mutates_args=())(carafe_forward_impl)
carafe_bwd = triton_op("fade_triton::carafe_backward", mutates_args=())(carafe_backward_impl)


def _setup_context(ctx, inputs, output):
    features, masks, *config = inputs
    ctx.save_for_backward(features, masks)
    ctx.config = config


def _backward(ctx, dout):
    args = (dout, *ctx.saved_tensors, *ctx.config)
    d_features, d_masks = backward_call(ctx, carafe_bwd, carafe_backward_impl, args, args[:3])
    return d_features, d_masks, None, None, None, None


carafe_fwd.register_autograd(_backward, setup_context=_setup_context)
# FlopCounterMode passes each tensor argument as its shape; a backward counts twice its forward
register_flop_formula(torch.ops.fade_triton.carafe)(
    lambda features, masks, kernel_size, *args, **kwargs: carafe_flops(features, masks, kernel_size))
register_flop_formula(torch.ops.fade_triton.carafe_backward)(
    lambda dout, features, masks, kernel_size, *args, **kwargs: 2 * carafe_flops(features, masks, kernel_size))


# the eager fast path (module docstring)
CarafeFunction = direct_function("CarafeFunction", carafe_forward_impl, _setup_context, _backward)


def carafe_call(*args) -> Tensor:
    """``fade_triton::carafe(*args)``, through the eager fast path where it applies (the
    ``triton`` implementation only)."""
    if not args[-1]:
        return carafe_fwd(*args)
    return direct_call(carafe_fwd, CarafeFunction, carafe_forward_impl, args, args[:2], args[:2])


def _carafe(features, masks, kernel_size, group_size, scale_factor, use_triton: bool) -> Tensor:
    features, masks = autocast_inputs(features, masks)
    with autocast_off(features.device.type):
        return carafe_call(features, masks, kernel_size, group_size, scale_factor, use_triton)


def carafe_triton_path(features, masks, kernel_size, group_size, scale_factor) -> Tensor:
    """The ``triton`` backend: the operator on the Triton kernels."""
    return _carafe(features, masks, kernel_size, group_size, scale_factor, True)


def carafe_torch_path(features, masks, kernel_size, group_size, scale_factor) -> Tensor:
    """The ``torch`` backend: the same operator on its eager PyTorch implementation."""
    return _carafe(features, masks, kernel_size, group_size, scale_factor, False)
