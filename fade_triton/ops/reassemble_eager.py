"""CARAFE reassembly in plain PyTorch, shared by the ``torch`` and export forms of every operator.

- ``reassemble_torch`` / ``reassemble_torch_backward``: the memory-lean eager form (the ``torch``
  backend), one sub-pixel phase at a time, tap by tap, so nothing of size ``B*K2*C*sH*sW`` ever
  exists; optionally with FADE's gate blend. The backward is explicit and just as lean; it is
  also the plain-PyTorch statement of what the Triton backward kernels compute.
- ``reassemble_export``: what exporters record (ONNX, ``torch.jit.trace``): standard out-of-place
  operators, every size read from the inputs.

An output smaller than ``scale`` x the features (by less than ``scale``: an encoder map of a size
that is not a multiple of the backbone's stride, e.g. 65 -> 129) is upsample-then-crop: output
pixel (y, x) uses low-resolution pixel (y // s, x // s). Arguments are assumed valid here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .helpers import accumulator_dtype, memory_format_of


def upsample_to(t: torch.Tensor, scale: int, size) -> torch.Tensor:
    """Nearest upsampling by ``scale``, cropped to ``size`` (H, W)."""
    return F.interpolate(t, scale_factor=scale, mode="nearest")[..., :size[0], :size[1]]


def phases(scale, size):
    """(dy, dx, rows, cols) of each sub-pixel phase of an output of ``size``: the phase's
    pixels are ``out[..., dy::scale, dx::scale]``, (rows, cols) of them. Arithmetic, not
    ``len(range(...))``: on symbolic sizes (torch.export) it makes no guard."""
    for dy in range(scale):
        for dx in range(scale):
            yield dy, dx, (size[0] - dy + scale - 1) // scale, (size[1] - dx + scale - 1) // scale


def reassemble_torch(features, masks, kernel_size, group_size, scale_factor, gate=None, en=None):
    """CARAFE one sub-pixel phase at a time; with ``gate`` (B, 1, H, W, the gate after its
    sigmoid) and ``en``, returns ``g * en + (1 - g) * carafe(...)``, g read at (y // s, x // s).
    The output has the masks' spatial size (OH, OW) <= (s*H, s*W).

    Largest temporaries: the zero-padded features ``B*C*(H+2r)*(W+2r)`` and one phase's
    accumulator ``B*C*H*W`` (float32 for half inputs), besides the output.
    """
    b, c, h, w = features.shape
    s, k, g = scale_factor, kernel_size, group_size
    oh, ow = masks.shape[2:]
    acc_dtype = accumulator_dtype(features.dtype)
    out = torch.empty((b, c, oh, ow), dtype=features.dtype, device=features.device,
                      memory_format=memory_format_of(en if en is not None else features))
    if out.numel() == 0:
        return out
    padded = F.pad(features, (k // 2,) * 4).unflatten(1, (g, c // g))  # (B, G, C/G, H+2r, W+2r)
    masks = masks.unflatten(1, (g, k * k))  # (B, G, K2, OH, OW)
    for dy, dx, rows, cols in phases(s, (oh, ow)):
        acc = torch.zeros((b, g, c // g, rows, cols), dtype=acc_dtype, device=features.device)
        for tap in range(k * k):
            i, j = divmod(tap, k)
            acc.addcmul_(padded[:, :, :, i:i + rows, j:j + cols], masks[:, :, tap, dy::s, dx::s].unsqueeze(2))
        acc = acc.flatten(1, 2)
        if gate is not None:
            acc.lerp_(en[:, :, dy::s, dx::s].to(acc_dtype), gate[:, :, :rows, :cols])
        out[:, :, dy::s, dx::s] = acc
    return out


def reassemble_torch_backward(dout, features, masks, kernel_size, group_size, scale_factor, gate=None, en=None,
                              need_features=True):
    """Gradients of ``reassemble_torch``: ``(d_features, d_masks, d_gate)``.

    d_masks[k] = (1 - g) * sum_c dout * x_k per phase (float32 for half inputs); d_features by
    scattering each phase's ``m_k (1 - g) dout`` onto the zero-padded features (None unless
    ``need_features``); with a gate, d_gate (B, 1, H, W) is the gradient of the gate *after*
    its sigmoid, from sum_c dout * (en - u) with sum_c dout * u = sum_k m_k D_k.
    """
    b, c, h, w = features.shape
    s, k, g = scale_factor, kernel_size, group_size
    r = k // 2
    oh, ow = masks.shape[2:]
    acc_dtype = accumulator_dtype(features.dtype)
    padded = F.pad(features, (r,) * 4).to(acc_dtype).unflatten(1, (g, c // g))
    d_padded = torch.zeros_like(padded) if need_features else None
    d_masks = torch.empty((b, g * k * k, oh, ow), dtype=acc_dtype, device=features.device)
    d_gate = torch.zeros((b, 1, h, w), dtype=acc_dtype, device=features.device) if gate is not None else None
    masks_g = masks.unflatten(1, (g, k * k))
    d_masks_g = d_masks.unflatten(1, (g, k * k))
    for dy, dx, rows, cols in phases(s, (oh, ow)):
        d = dout[:, :, dy::s, dx::s].to(acc_dtype)
        if gate is not None:
            keep = 1 - gate[:, :, :rows, :cols].to(acc_dtype)
            e_dot = (d * en[:, :, dy::s, dx::s].to(acc_dtype)).sum(1, keepdim=True)
            u_dot = torch.zeros_like(e_dot)
        d = d.unflatten(1, (g, c // g))
        for tap in range(k * k):
            i, j = divmod(tap, k)
            m = masks_g[:, :, tap, dy::s, dx::s].to(acc_dtype)
            d_tap = (d * padded[:, :, :, i:i + rows, j:j + cols]).sum(2)  # (B, G, rows, cols)
            if gate is not None:
                u_dot += m * d_tap
                d_tap = d_tap * keep
            d_masks_g[:, :, tap, dy::s, dx::s] = d_tap
            if need_features:
                weight = (m * keep if gate is not None else m).unsqueeze(2)
                d_padded[:, :, :, i:i + rows, j:j + cols].addcmul_(d, weight)
        if gate is not None:
            d_gate[:, :, :rows, :cols] += e_dot - u_dot
    d_features = None
    if need_features:
        d_features = d_padded.flatten(1, 2)[:, :, r:r + h, r:r + w].to(features.dtype)
    return d_features, d_masks, d_gate


def reassemble_export(features, masks, kernel_size, group_size, scale_factor):
    """CARAFE in standard, out-of-place operators: the masks, zero-padded to (s*H, s*W), are
    split into their ``s*s`` sub-pixel phases (space-to-depth); each of the K2 taps multiplies
    one shifted slice of the zero-padded features, (B, 1, G, C/G, H, W), by the tap's masks of
    every phase, (B, s*s, G, 1, H, W); the sum, (B, s*s, C, H, W) (the output's size), is
    stitched back (depth-to-space) and cropped to the masks' size. Accumulates in float32 for
    half inputs. Slices use static offsets from the end, so no size is frozen into a trace."""
    b, c, h, w = features.shape
    s, k, g = scale_factor, kernel_size, group_size
    oh, ow = masks.shape[2:]
    acc_dtype = accumulator_dtype(features.dtype)
    padded = F.pad(features.to(acc_dtype), (k // 2,) * 4).unflatten(1, (g, -1)).unsqueeze(1)
    by_phase = F.pad(masks.to(acc_dtype), (0, w * s - ow, 0, h * s - oh))  # (B, G*K2, sH, sW)
    by_phase = (by_phase.unflatten(1, (g, k * k)).unflatten(3, (-1, s)).unflatten(5, (-1, s))  # (B, G, K2, H, s, W, s)
                .permute(0, 4, 6, 1, 2, 3, 5).flatten(1, 2))  # (B, s*s, G, K2, H, W)
    out = None
    for tap in range(k * k):
        i, j = divmod(tap, k)
        term = padded[..., i:(i - k + 1) or None, j:(j - k + 1) or None] * by_phase[:, :, :, tap:tap + 1]
        out = term if out is None else out + term
    out = out.flatten(2, 3).unflatten(1, (s, s)).permute(0, 3, 4, 1, 5, 2)  # (B, C, H, s, W, s)
    return out.flatten(4, 5).flatten(2, 3)[..., :oh, :ow].to(features.dtype)
