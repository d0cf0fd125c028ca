"""Standalone CARAFE (``mmcv.ops.carafe``'s function) as the operator ``fade_triton::carafe``
and its backward ``fade_triton::carafe_backward`` (``torch.library.triton_op``s).

``use_triton`` picks the Triton kernels of ``reassemble.py`` (1 launch forward, 2 backward)
or the pure-PyTorch implementation in ``fade_triton.reference`` (any device). Masks are used
as given (no softmax, no renormalisation), with ``group_size`` groups. ``FlopCounterMode``
counts them by ``fade_triton.flops``'s formulas.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.library import triton_op
from torch.utils.flop_counter import register_flop_formula

from .. import flops, reference
from ..backend import triton_installed
from .fade import _device_guard, _layout, launches_skipped

if triton_installed():  # the torch implementation of the operators needs no triton
    from .reassemble import reassemble_bwd, reassemble_fwd


@triton_op("fade_triton::carafe", mutates_args=())
def carafe_fwd(features: Tensor, masks: Tensor, kernel_size: int, group_size: int, scale_factor: int,
               use_triton: bool) -> Tensor:
    """(B, C, OH, OW) in the features' dtype and layout; (OH, OW) is the masks' size."""
    if not use_triton:
        return reference.carafe_torch(features, masks, kernel_size, group_size, scale_factor)
    b, c = features.shape[:2]
    out = torch.empty((b, c, *masks.shape[2:]), dtype=features.dtype, device=features.device,
                      memory_format=_layout(features))
    if not launches_skipped(features):
        with _device_guard(features):
            reassemble_fwd(features, masks, None, None, out, kernel_size, group_size, scale_factor, softmax=False)
    return out


@triton_op("fade_triton::carafe_backward", mutates_args=())
def carafe_bwd(dout: Tensor, features: Tensor, masks: Tensor, kernel_size: int, group_size: int, scale_factor: int,
               use_triton: bool) -> tuple[Tensor, Tensor]:
    """Gradients ``(d_features, d_masks)`` in the inputs' dtypes."""
    if not use_triton:
        d_features, d_masks, _ = reference.carafe_torch_backward(dout, features, masks, kernel_size, group_size,
                                                                 scale_factor)
        return d_features, d_masks.to(masks.dtype)
    d_features = torch.empty(features.shape, dtype=features.dtype, device=features.device,
                             memory_format=_layout(features))
    d_masks = torch.empty(masks.shape, dtype=masks.dtype, device=masks.device)
    if not launches_skipped(features):
        with _device_guard(features):
            reassemble_bwd(dout, features, masks, None, None, d_features, d_masks, None, kernel_size, group_size,
                           scale_factor, softmax=False)
    return d_features, d_masks


def _setup_context(ctx, inputs, output):
    features, masks, *config = inputs
    ctx.save_for_backward(features, masks)
    ctx.config = config


def _backward(ctx, dout):
    d_features, d_masks = carafe_bwd(dout, *ctx.saved_tensors, *ctx.config)
    return d_features, d_masks, None, None, None, None


carafe_fwd.register_autograd(_backward, setup_context=_setup_context)
register_flop_formula(torch.ops.fade_triton.carafe)(flops.carafe_op_flops)
register_flop_formula(torch.ops.fade_triton.carafe_backward)(flops.carafe_backward_op_flops)


def carafe(features, masks, kernel_size, group_size, scale_factor, use_triton: bool) -> Tensor:
    return carafe_fwd(features, masks, kernel_size, group_size, scale_factor, use_triton)
