"""Functional API: the whole FADE forward given its weights, and a standalone CARAFE.

Every call validates its arguments (``fade_triton.checks``), resolves the backend in one
place (``fade_triton.backend.resolve_backend``) and dispatches to one implementation.
"""
from __future__ import annotations

import torch

from . import reference
from .backend import resolve_backend
from .checks import check_carafe_args, check_fade_args


def fade(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias,
         scale: int = 2, backend: str = "auto") -> torch.Tensor:
    """FADE (or FADE-Lite) upsampling of ``de`` guided by ``en`` (SPEC.md).

    Args:
        en: encoder feature, (B, C, sH, sW).
        de: decoder feature, (B, C, H, W); same dtype and device as ``en``.
        gate_weight, gate_bias: gate 1x1 conv, (1, C, 1, 1) and (1,).
        en_weight, en_bias: encoder compressor, (E, C, 1, 1) and (E,). FADE-Lite: E = K*K.
        de_weight: decoder compressor, (E, C, 1, 1), no bias.
        kernel_weight, kernel_bias: the shared 3x3 content encoder, (K*K, E, 3, 3) for FADE or
            depthwise (K*K, 1, 3, 3) for FADE-Lite, and (K*K,).
        scale: integer upsampling factor s >= 1.
        backend: "auto", "triton", "torch", "naive" or "mmcv" (see fade_triton.backend).

    Returns:
        (B, C, sH, sW) in the inputs' dtype, laid out like ``en``.
    """
    _, scale, _ = check_fade_args(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight,
                                  kernel_weight, kernel_bias, scale)
    args = (en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale)
    name = resolve_backend(backend, en.device)
    if name == "triton":
        from .ops.fade import fade_triton

        return fade_triton(*args)
    if name == "mmcv":
        from .ops.mmcv_path import fade_mmcv

        return fade_mmcv(*args)
    if name == "naive":
        return reference.fade_naive(*args)
    return reference.fade_torch(*args)


def carafe(features, masks, kernel_size: int, group_size: int = 1, scale_factor: int = 2,
           backend: str = "auto") -> torch.Tensor:
    """CARAFE reassembly with ``mmcv.ops.carafe``'s signature and semantics.

    Args:
        features: (B, C, H, W).
        masks: (B, group_size * kernel_size**2, sH, sW), already normalised (not re-normalised
            here, as in mmcv); same dtype and device as ``features``.
        kernel_size: odd reassembly window K.
        group_size: G; feature channel c uses mask group ``c // (C // G)``.
        scale_factor: integer upsampling factor s >= 1.
        backend: "auto", "triton", "torch", "naive" or "mmcv".

    Returns:
        (B, C, sH, sW) in the features' dtype.
    """
    kernel_size, group_size, scale_factor = check_carafe_args(features, masks, kernel_size, group_size, scale_factor)
    args = (features, masks, kernel_size, group_size, scale_factor)
    name = resolve_backend(backend, features.device)
    if name == "triton":
        from .ops.reassemble import carafe_triton

        return carafe_triton(*args)
    if name == "mmcv":
        from .ops.mmcv_path import carafe_mmcv

        return carafe_mmcv(*args)
    if name == "naive":
        return reference.carafe_naive(*args)
    return reference.carafe_torch(*args)
