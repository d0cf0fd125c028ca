"""Checkpoint names: the official IJCV (L2H) names are the modules' own; the older ECCV (H2L)
names are mapped onto them (SPEC.md, "Parameters and checkpoint names")."""
from __future__ import annotations

from collections.abc import Mapping

ECCV_TO_IJCV = {
    "kernel_generator.conv1_en.weight": "ker_generator.compressor_en.weight",
    "kernel_generator.conv1_en.bias": "ker_generator.compressor_en.bias",
    "kernel_generator.conv1_de.weight": "ker_generator.compressor_de.weight",
    "kernel_generator.conv2_kernels": "ker_generator.content_encoder.weight",
    "kernel_generator.conv2_bias": "ker_generator.content_encoder.bias",
}


def convert_eccv_state_dict(state_dict: Mapping, prefix: str = "") -> dict:
    """Return a copy of ``state_dict`` with ECCV (H2L) FADE names under ``prefix`` renamed to
    the IJCV (L2H) names that :class:`fade_triton.FADE` uses. Other keys pass through; the
    tensors are not copied."""
    out = {}
    for key, value in state_dict.items():
        local = key[len(prefix):] if key.startswith(prefix) else None
        out[prefix + ECCV_TO_IJCV[local] if local in ECCV_TO_IJCV else key] = value
    return out
