"""The official implementation's path: semi-shift in PyTorch, ``mmcv.ops.carafe`` for the
reassembly. mmcv's CARAFE has CUDA kernels only (float32/float64/float16) and needs mmcv
compiled with its ops: ``bench/build_mmcv.sh`` builds it on a CUDA machine."""
from __future__ import annotations

import torch

from ..reference import fade_naive

_HOW = ("mmcv with compiled CUDA ops is needed for backend='mmcv'; build it on a CUDA machine "
        "with `bash bench/build_mmcv.sh` (see bench/README.md)")


def load_mmcv_carafe():
    """Return ``mmcv.ops.carafe`` or raise RuntimeError saying what is missing."""
    try:
        from mmcv.ops import carafe
    except ImportError as err:  # mmcv absent, or installed without its compiled _ext
        raise RuntimeError(f"{_HOW}. Import failed: {err}") from err
    return carafe


def carafe_mmcv(features, masks, kernel_size, group_size, scale_factor):
    if features.device.type != "cuda":
        raise RuntimeError(f"backend='mmcv' runs on CUDA tensors only (mmcv has no CPU CARAFE), got {features.device}")
    if features.dtype == torch.bfloat16:
        raise RuntimeError("backend='mmcv' has no bfloat16 CARAFE kernel; use float16/float32 or another backend")
    return load_mmcv_carafe()(features, masks, kernel_size, group_size, scale_factor)


def fade_mmcv(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale):
    """FADE as the official code computes it: L2H semi-shift in PyTorch, mmcv CARAFE."""
    return fade_naive(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias,
                      scale, carafe=carafe_mmcv)
