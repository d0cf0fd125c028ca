"""CARAFE in plain PyTorch: the unfold form (the ``naive`` backend, the benchmark's baseline) and
the export form (what ``torch.onnx.export`` and ``torch.jit.trace`` record)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..reassemble_eager import reassemble_export, upsample_to


def carafe_naive(features, masks, kernel_size, group_size, scale_factor):
    """CARAFE by ``F.unfold`` of the features, repeated to high resolution, and an einsum:
    materialises ``B*K2*C*sH*sW`` values, as the official pure-PyTorch port does."""
    b, c, h, w = features.shape
    k2 = kernel_size * kernel_size
    unfolded = F.unfold(features, kernel_size, padding=kernel_size // 2)  # (B, C*K2, H*W)
    unfolded = upsample_to(unfolded.view(b, c * k2, h, w), scale_factor, masks.shape[2:])
    oh, ow = unfolded.shape[-2:]
    unfolded = unfolded.view(b, group_size, c // group_size, k2, oh, ow)
    masks = masks.reshape(b, group_size, k2, oh, ow)
    out = torch.einsum("bgckhw,bgkhw->bgchw", unfolded, masks)
    return out.reshape(b, c, oh, ow)


def carafe_export(features, masks, kernel_size, group_size, scale_factor):
    """The export form: ``reassemble_export`` (standard operators, dynamic sizes)."""
    return reassemble_export(features, masks, kernel_size, group_size, scale_factor)
