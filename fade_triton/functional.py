"""Functional API: the whole FADE forward given its weights, and a standalone CARAFE.

Every call validates its arguments (``fade_triton.checks``), resolves the backend in one
place (``fade_triton.backend.resolve_backend``) and dispatches to one implementation: the
``triton`` and ``torch`` backends run the operators ``fade_triton::fade`` /
``fade_triton::carafe`` (Triton kernels, or the pure-PyTorch implementation), ``naive`` and
``mmcv`` are plain compositions of PyTorch (and mmcv) calls. While an exporter records
(``torch.onnx.export``, ``torch.jit.trace``) every backend runs ``reference.fade_export`` /
``reference.carafe_export`` instead: standard operators only, so the exported graph needs
nothing from fade_triton.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import torch

from . import reference
from .backend import resolve_backend
from .checks import autocast_enabled, check_carafe_args, check_fade_args

WeightPacker = Callable[[tuple, torch.dtype], object]


def fade(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias,
         scale: int = 2, backend: str = "auto") -> torch.Tensor:
    """FADE (or FADE-Lite) upsampling of ``de`` guided by ``en`` (SPEC.md).

    Args:
        en: encoder feature, (B, C, sH, sW); it may be smaller than ``scale`` x ``de`` by less
            than ``scale`` in H or W (e.g. 129 for 65 at scale 2): the output then has en's
            size and output pixel (y, x) uses ``de`` at (y // scale, x // scale).
        de: decoder feature, (B, C, H, W); same dtype and device as ``en``.
        gate_weight, gate_bias: gate 1x1 conv, (1, C, 1, 1) and (1,).
        en_weight, en_bias: encoder compressor, (E, C, 1, 1) and (E,). FADE-Lite: E = K*K.
        de_weight: decoder compressor, (E, C, 1, 1), no bias.
        kernel_weight, kernel_bias: the shared 3x3 content encoder, (K*K, E, 3, 3) for FADE or
            depthwise (K*K, 1, 3, 3) for FADE-Lite, and (K*K,).
        scale: integer upsampling factor s >= 1.
        backend: "auto", "triton", "torch", "naive" or "mmcv" (see fade_triton.backend).

    Returns:
        (B, C, OH, OW) (en's spatial size) in the inputs' dtype, laid out like ``en``.
    """
    return fade_with_packer(en, de, (gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight,
                                     kernel_bias), scale, backend, pack_weights)


def define_operators() -> None:
    """Define the ``fade_triton::`` operators and register their FLOP formulas (this imports the
    Triton kernels where triton is installed). The first call that needs them does it; the
    modules do it when they are built, because ``FlopCounterMode`` copies the formulas it knows
    when it is created: one created after the model is built counts FADE on every backend."""
    from .ops import carafe, fade  # noqa: F401


def pack_weights(weights: tuple, dtype: torch.dtype):
    """The Triton kernels' prepared weights (uncached: the modules cache them per weight version)."""
    from .ops.packing import pack_semi_shift_weights

    return pack_semi_shift_weights(*weights, dtype=dtype)


def fade_with_packer(en, de, weights: tuple, scale, backend: str, pack: WeightPacker) -> torch.Tensor:
    """``fade`` with the Triton weight preparation supplied by the caller (the modules pass a
    cached one)."""
    with tracer_warnings_off():
        _, scale, depthwise = check_fade_args(en, de, *weights, scale)
        name = resolve_backend(backend, en.device)
    if name == "export":
        return reference.fade_export(en, de, *weights, scale, depthwise)
    if name == "naive":
        return reference.fade_naive(en, de, *weights, scale)
    if name == "mmcv":
        from .ops.mmcv_path import fade_mmcv

        return fade_mmcv(en, de, *weights, scale)
    from .ops.fade import fade as fade_op

    en, de, *weights = autocast_inputs(en, de, *weights)
    use_triton = name == "triton"
    packed = pack(tuple(weights), en.dtype) if use_triton else None
    with autocast_off(en.device.type):
        return fade_op(en, de, *weights, scale, packed, use_triton)


@contextlib.contextmanager
def tracer_warnings_off():
    """While ``torch.jit.trace`` records (the TorchScript-based ONNX exporter does too), the
    argument checks' shape comparisons and the FADE-Lite test on the weights' shapes become
    Python constants, and the tracer warns that the trace may not generalise. It does: the
    checks only validate the example inputs (the graph does not repeat them) and weight shapes
    are fixed. Only the checks and the backend choice run in this block: a warning from the
    computation itself still shows (tests/test_deploy.py makes them errors)."""
    if torch.jit.is_tracing():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            yield
    else:
        yield


def autocast_inputs(*tensors):
    """Under autocast, float32 tensors in the autocast dtype (as a convolution would cast
    them); the operators then run with autocast off. Otherwise the tensors as they are."""
    device_type = tensors[0].device.type
    if not autocast_enabled(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    cast = tuple(t.to(dtype) if t.dtype == torch.float32 else t for t in tensors)
    if len({t.dtype for t in cast}) > 1:
        raise TypeError(f"under autocast, en, de and the weights must be float32 or {dtype}, "
                        f"got {sorted({str(t.dtype) for t in tensors})}")
    return cast


def autocast_off(device_type: str):
    """Autocast switched off for the operator call (a no-op where autocast is not on)."""
    if autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


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
    with tracer_warnings_off():
        kernel_size, group_size, scale_factor = check_carafe_args(features, masks, kernel_size, group_size,
                                                                  scale_factor)
        name = resolve_backend(backend, features.device)
    args = (features, masks, kernel_size, group_size, scale_factor)
    if name == "export":
        return reference.carafe_export(*args)
    if name == "mmcv":
        from .ops.mmcv_path import carafe_mmcv

        return carafe_mmcv(*args)
    if name == "naive":
        return reference.carafe_naive(*args)
    from .ops.carafe import carafe as carafe_op

    features, masks = autocast_inputs(features, masks)
    with autocast_off(features.device.type):
        return carafe_op(features, masks, kernel_size, group_size, scale_factor, name == "triton")
