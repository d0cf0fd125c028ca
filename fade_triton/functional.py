"""Functional API: the whole FADE forward given its weights, and a standalone CARAFE.

Every call validates its arguments (``fade_triton.checks``), then runs the implementation that
``fade_triton.backend.implementation`` picks for the backend on the inputs' device (one table,
``backend.IMPLEMENTATIONS``).
"""
from __future__ import annotations

import contextlib
import warnings

import torch

from .backend import forward_ad_active, implementation
from .checks import check_carafe_args, check_fade_args


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
        backend: "auto", "triton", "torch", "naive" or "mmcv" (see fade_triton.backend; under
            forward-mode AD only "naive", which "auto" picks then).

    Returns:
        (B, C, OH, OW) (en's spatial size) in the inputs' dtype, laid out like ``en``.
    """
    weights = (gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias)
    return fade_with_cache(en, de, weights, scale, backend, cache=None)


def fade_with_cache(en, de, weights: tuple, scale, backend: str, cache) -> torch.Tensor:
    """``fade`` with a ``FoldedWeightCache`` for the Triton path's folded weights (the modules
    pass their own; the other implementations ignore it). A call the cache validated before runs
    again without the checks and the backend choice (``FoldedWeightCache.replay``)."""
    if cache is not None:
        out = cache.replay(en, de, weights, scale, backend)
        if out is not None:
            return out
    with tracer_warnings_off():
        _, scale, depthwise = check_fade_args(en, de, *weights, scale)
        run = implementation("fade", backend, en.device, forward_ad_active(en, de, *weights))
    return run(en, de, weights, scale, depthwise, cache)


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
        run = implementation("carafe", backend, features.device, forward_ad_active(features, masks))
    return run(features, masks, kernel_size, group_size, scale_factor)


def tracer_warnings_off():
    """While ``torch.jit.trace`` records (the TorchScript-based ONNX exporter does too), the
    argument checks' shape comparisons and the FADE-Lite test on the weights' shapes become
    Python constants, and the tracer warns that the trace may not generalise. It does: the
    checks only validate the example inputs (the graph does not repeat them) and weight shapes
    are fixed. Only the checks and the backend choice run in this block: a warning from the
    computation itself still shows (tests/test_deploy.py makes them errors). Outside a trace, a
    null context (every call enters this block)."""
    return _tracer_warnings_ignored() if torch.jit.is_tracing() else contextlib.nullcontext()


@contextlib.contextmanager
def _tracer_warnings_ignored():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield
