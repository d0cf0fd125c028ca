"""Plain-PyTorch implementations of FADE and CARAFE, in one place.

Both compute SPEC.md's function on any device and dtype:

- ``*_naive``: the official pure-PyTorch formulation (semi-shift through ``F.interpolate``,
  reassembly through ``F.unfold`` repeated to high resolution and an einsum). It is the
  benchmark's baseline: faithful on purpose, not optimised. It fixes only the official
  port's bugs (unfold padding is ``K // 2`` for every K; channels are never mixed).
- ``*_torch``: the memory-lean path, the ``torch`` backend (the CPU implementation of the
  ``fade_triton::fade`` and ``fade_triton::carafe`` operators). The decoder branch of the
  semi-shift is added at low resolution through a broadcast view (no interpolated tensor),
  and the reassembly runs one sub-pixel phase at a time, tap by tap, so nothing of size
  ``B*K2*C*sH*sW`` ever exists. Its backward (``*_torch_backward``) is explicit and just as
  lean; it is also the plain-PyTorch statement of what the Triton backward kernels compute.
- ``*_export``: what exporters record (ONNX, ``torch.jit.trace``): standard operators only,
  no in-place update of a view, every size read from the inputs (dynamic shapes). The naive
  semi-shift (convolutions and a nearest upsample of the K2-channel low-resolution logits),
  and a reassembly that multiplies K2 shifted low-resolution slices of ``de`` with the masks
  of all ``s*s`` sub-pixel phases at once and stitches the phases (depth-to-space): nothing of
  size ``B*K2*C*sH*sW`` either.

An encoder map smaller than ``scale`` x the decoder's by less than ``scale`` (a backbone
fed a size that is not a multiple of its stride, e.g. 65 -> 129) is nearest-upsample-then-
crop: output pixel (y, x) uses low-resolution pixel (y // s, x // s); the output has the
encoder's size. Arguments are assumed valid here; ``fade_triton.functional`` checks them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .checks import is_depthwise, suggest_memory_format


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half types, the dtype itself for float32/float64."""
    return torch.promote_types(dtype, torch.float32)


def upsample_to(t: torch.Tensor, scale: int, size) -> torch.Tensor:
    """Nearest upsampling by ``scale``, cropped to ``size`` (H, W)."""
    return F.interpolate(t, scale_factor=scale, mode="nearest")[..., :size[0], :size[1]]


# ----------------------------------------------------------------------------- naive
def semi_shift_naive(en, de, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale, depthwise=None):
    """Logits ``conv3x3(enc) + interpolate(conv3x3(dec))`` as the official code forms them.
    ``depthwise`` (FADE-Lite's 3x3) is read from the weights' shapes unless given."""
    depthwise = is_depthwise(en_weight, kernel_weight) if depthwise is None else depthwise
    groups = kernel_weight.shape[0] if depthwise else 1
    enc = F.conv2d(en, en_weight, en_bias)
    dec = F.conv2d(de, de_weight)
    hi = F.conv2d(enc, kernel_weight, kernel_bias, padding=1, groups=groups)
    lo = F.conv2d(dec, kernel_weight, kernel_bias, padding=1, groups=groups)
    return hi + upsample_to(lo, scale, hi.shape[2:])


def carafe_naive(features, masks, kernel_size, group_size, scale_factor):
    """CARAFE by ``F.unfold``: materialises ``B*K2*C*sH*sW`` values."""
    b, c, h, w = features.shape
    k2 = kernel_size * kernel_size
    unfolded = F.unfold(features, kernel_size, padding=kernel_size // 2)  # (B, C*K2, H*W)
    unfolded = upsample_to(unfolded.view(b, c * k2, h, w), scale_factor, masks.shape[2:])
    oh, ow = unfolded.shape[-2:]
    unfolded = unfolded.view(b, group_size, c // group_size, k2, oh, ow)
    masks = masks.reshape(b, group_size, k2, oh, ow)
    out = torch.einsum("bgckhw,bgkhw->bgchw", unfolded, masks)
    return out.reshape(b, c, oh, ow)


def fade_naive(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale,
               carafe=carafe_naive, depthwise=None):
    """FADE as the official code computes it; ``carafe`` is the reassembly (the ``mmcv``
    backend passes ``mmcv.ops.carafe`` here), ``depthwise`` as in ``semi_shift_naive``."""
    size = en.shape[2:]
    gate = torch.sigmoid(upsample_to(F.conv2d(de, gate_weight, gate_bias), scale, size))
    logits = semi_shift_naive(en, de, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale, depthwise)
    masks = F.softmax(logits, dim=1)
    return gate * en + (1 - gate) * carafe(de, masks, math.isqrt(kernel_weight.shape[0]), 1, scale)


# ----------------------------------------------------------------------------- torch
def semi_shift_torch(en, de, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale):
    """Semi-shift logits without any interpolated tensor.

    Allocates ``enc`` (B*E*OH*OW), the logits (B*K2*OH*OW) and the low-resolution decoder
    branch (B*E*H*W + B*K2*H*W); ``up(dec)`` and ``up(conv3x3(dec))`` never exist: the
    low-resolution logits are added phase by phase through strided views.
    """
    groups = kernel_weight.shape[0] if is_depthwise(en_weight, kernel_weight) else 1
    enc = F.conv2d(en, en_weight, en_bias)
    logits = F.conv2d(enc, kernel_weight, kernel_bias, padding=1, groups=groups)
    del enc
    lo = F.conv2d(F.conv2d(de, de_weight), kernel_weight, kernel_bias, padding=1, groups=groups)
    for dy, dx, rows, cols in _phases(scale, logits.shape[2:]):
        logits[:, :, dy::scale, dx::scale] += lo[:, :, :rows, :cols]
    return logits


def _phases(scale, size):
    """(dy, dx, rows, cols) of each sub-pixel phase of an output of ``size``: the phase's
    pixels are ``out[..., dy::scale, dx::scale]``, (rows, cols) of them. Arithmetic, not
    ``len(range(...))``: on symbolic sizes (torch.export) it makes no guard."""
    for dy in range(scale):
        for dx in range(scale):
            yield dy, dx, (size[0] - dy + scale - 1) // scale, (size[1] - dx + scale - 1) // scale


def carafe_torch(features, masks, kernel_size, group_size, scale_factor, gate=None, en=None):
    """CARAFE one sub-pixel phase at a time; with ``gate`` (B, 1, H, W, the gate after its
    sigmoid) and ``en``, returns ``g * en + (1 - g) * carafe(...)``, g read at (y // s, x // s).
    The output has the masks' spatial size (OH, OW) <= (s*H, s*W).

    Largest temporaries: the zero-padded features ``B*C*(H+2r)*(W+2r)`` and one phase's
    accumulator ``B*C*H*W`` (float32 for half inputs), besides the output.
    """
    b, c, h, w = features.shape
    s, k, g = scale_factor, kernel_size, group_size
    oh, ow = masks.shape[2:]
    acc_dtype = _accumulate_dtype(features.dtype)
    out = torch.empty((b, c, oh, ow), dtype=features.dtype, device=features.device,
                      memory_format=suggest_memory_format(en if en is not None else features))
    if out.numel() == 0:
        return out
    padded = F.pad(features, (k // 2,) * 4).unflatten(1, (g, c // g))  # (B, G, C/G, H+2r, W+2r)
    masks = masks.unflatten(1, (g, k * k))  # (B, G, K2, OH, OW)
    for dy, dx, rows, cols in _phases(s, (oh, ow)):
        acc = torch.zeros((b, g, c // g, rows, cols), dtype=acc_dtype, device=features.device)
        for tap in range(k * k):
            i, j = divmod(tap, k)
            acc.addcmul_(padded[:, :, :, i:i + rows, j:j + cols], masks[:, :, tap, dy::s, dx::s].unsqueeze(2))
        acc = acc.flatten(1, 2)
        if gate is not None:
            acc.lerp_(en[:, :, dy::s, dx::s].to(acc_dtype), gate[:, :, :rows, :cols])
        out[:, :, dy::s, dx::s] = acc
    return out


def carafe_torch_backward(dout, features, masks, kernel_size, group_size, scale_factor, gate=None, en=None,
                          need_features=True):
    """Gradients of ``carafe_torch``: ``(d_features, d_masks, d_gate)``.

    d_masks[k] = (1 - g) * sum_c dout * x_k per phase (float32 for half inputs); d_features by
    scattering each phase's ``m_k (1 - g) dout`` onto the zero-padded features (None unless
    ``need_features``); with a gate, d_gate (B, 1, H, W) is the gradient of the gate *after*
    its sigmoid, from sum_c dout * (en - u) with sum_c dout * u = sum_k m_k D_k.
    """
    b, c, h, w = features.shape
    s, k, g = scale_factor, kernel_size, group_size
    r = k // 2
    oh, ow = masks.shape[2:]
    acc_dtype = _accumulate_dtype(features.dtype)
    padded = F.pad(features, (r,) * 4).to(acc_dtype).unflatten(1, (g, c // g))
    d_padded = torch.zeros_like(padded) if need_features else None
    d_masks = torch.empty((b, g * k * k, oh, ow), dtype=acc_dtype, device=features.device)
    d_gate = torch.zeros((b, 1, h, w), dtype=acc_dtype, device=features.device) if gate is not None else None
    masks_g = masks.unflatten(1, (g, k * k))
    d_masks_g = d_masks.unflatten(1, (g, k * k))
    for dy, dx, rows, cols in _phases(s, (oh, ow)):
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


def fade_torch_forward(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias,
                       scale):
    """FADE on the memory-lean torch path: ``(out, masks, gate_logits)``, the last two kept
    for ``fade_torch_backward``.

    Temporaries above inputs and output, in elements, at most (not all alive at once):
    ``B*E*OH*OW`` (enc, freed after its 3x3) + ``2*B*K2*OH*OW`` (logits, masks) +
    ``B*C*(H+2r)*(W+2r)`` (padded de) + ``2*B*C*H*W`` (one phase's accumulator and its
    blend), float32 where the inputs are half. Nothing of size ``B*K2*C*OH*OW`` or ``B*C*K2*H*W``.
    """
    logits = semi_shift_torch(en, de, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale)
    masks = torch.softmax(logits, dim=1, dtype=_accumulate_dtype(logits.dtype))
    del logits
    gate_logits = F.conv2d(de, gate_weight, gate_bias)
    gate = torch.sigmoid(gate_logits.to(masks.dtype))
    out = carafe_torch(de, masks, math.isqrt(kernel_weight.shape[0]), 1, scale, gate=gate, en=en)
    return out, masks, gate_logits


def fade_torch(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale):
    """FADE's output on the torch path (differentiable by autograd through its ops)."""
    return fade_torch_forward(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight,
                              kernel_bias, scale)[0]


def _conv_backward(grad, inp, weight, has_bias, padding, groups, mask):
    """(d_input, d_weight, d_bias) of a stride-1 ``F.conv2d``; entries not in ``mask`` are None."""
    bias_sizes = [weight.shape[0]] if has_bias else None
    return torch.ops.aten.convolution_backward(grad, inp, weight, bias_sizes, [1, 1], [padding, padding], [1, 1],
                                               False, [0, 0], groups, mask)


def fade_torch_backward(dout, en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight,
                        kernel_bias, masks, gate_logits, scale, needs):
    """Gradients of ``fade_torch_forward`` w.r.t. (en, de, gate w, gate b, We, be, Wd, Wk, bk),
    the i-th only where ``needs[i]`` (else a 0-element tensor), from the saved masks and gate
    logits: the reassembly backward phase by phase, the softmax backward, then the
    convolutions' own backward (``aten.convolution_backward``), the encoder and decoder
    compressions recomputed (B*E*OH*OW and B*E*H*W)."""
    k2 = kernel_weight.shape[0]
    groups = k2 if is_depthwise(en_weight, kernel_weight) else 1
    acc = masks.dtype
    oh, ow = en.shape[2:]
    gate = torch.sigmoid(gate_logits.to(acc))
    d_x, d_masks, d_gate = carafe_torch_backward(dout, de, masks, math.isqrt(k2), 1, scale, gate=gate, en=en,
                                                 need_features=needs[1])
    d_logits = masks * (d_masks - (masks * d_masks).sum(1, keepdim=True))
    del d_masks
    d_gate_logits = d_gate * gate * (1 - gate)
    h, w = de.shape[2:]
    d_lo = d_logits.new_zeros((en.shape[0], k2, h, w))
    for dy, dx, rows, cols in _phases(scale, (oh, ow)):
        d_lo[:, :, :rows, :cols] += d_logits[:, :, dy::scale, dx::scale]
    need_en, need_de, need_gw, need_gb, need_we, need_be, need_wd, need_wk, need_bk = needs
    wdt = kernel_weight.dtype
    out = [en.new_empty(0) for _ in range(9)]
    d_enc = d_dec = None
    if need_en or need_we or need_be or need_wk or need_bk:
        enc = F.conv2d(en, en_weight, en_bias)
        d_enc, d_wk1, d_bk1 = _conv_backward(d_logits.to(enc.dtype), enc, kernel_weight, True, 1, groups,
                                             [need_en or need_we or need_be, need_wk, need_bk])
        del enc
    if need_de or need_wd or need_wk or need_bk:
        dec = F.conv2d(de, de_weight)
        d_dec, d_wk2, d_bk2 = _conv_backward(d_lo.to(dec.dtype), dec, kernel_weight, True, 1, groups,
                                             [need_de or need_wd, need_wk, need_bk])
    if need_wk:
        out[7] = (d_wk1 + d_wk2).to(wdt)
    if need_bk:
        out[8] = (d_bk1 + d_bk2).to(wdt)
    if d_enc is not None and (need_en or need_we or need_be):
        d_en, out[4], out[5] = _conv_backward(d_enc, en, en_weight, True, 0, 1, [need_en, need_we, need_be])
        if need_en:
            g_up = upsample_to(gate, scale, (oh, ow))
            out[0] = (d_en.to(acc) + g_up * dout.to(acc)).to(en.dtype)
    if need_de or need_wd:
        d_de, out[6], _ = _conv_backward(d_dec, de, de_weight, False, 0, 1, [need_de, need_wd, False])
    if need_de or need_gw or need_gb:
        d_de_gate, out[2], out[3] = _conv_backward(d_gate_logits.to(de.dtype), de, gate_weight, True, 0, 1,
                                                   [need_de, need_gw, need_gb])
        if need_de:
            out[1] = (d_x.to(acc) + d_de.to(acc) + d_de_gate.to(acc)).to(de.dtype)
    return tuple(o if o is not None else en.new_empty(0) for o in out)


# ----------------------------------------------------------------------------- export
def carafe_export(features, masks, kernel_size, group_size, scale_factor):
    """CARAFE in standard, out-of-place operators: the masks, zero-padded to (s*H, s*W), are
    split into their ``s*s`` sub-pixel phases (space-to-depth); each of the K2 taps multiplies
    one shifted slice of the zero-padded features, (B, 1, G, C/G, H, W), by the tap's masks of
    every phase, (B, s*s, G, 1, H, W); the sum, (B, s*s, C, H, W) (the output's size), is
    stitched back (depth-to-space) and cropped to the masks' size. Accumulates in float32 for
    half inputs. Slices use static offsets from the end, so no size is frozen into a trace."""
    b, c, h, w = features.shape
    s, k, g = scale_factor, kernel_size, group_size
    oh, ow = masks.shape[2:]
    acc_dtype = _accumulate_dtype(features.dtype)
    padded = F.pad(features.to(acc_dtype), (k // 2,) * 4).unflatten(1, (g, -1)).unsqueeze(1)
    phases = F.pad(masks.to(acc_dtype), (0, w * s - ow, 0, h * s - oh))  # (B, G*K2, sH, sW)
    phases = (phases.unflatten(1, (g, k * k)).unflatten(3, (-1, s)).unflatten(5, (-1, s))  # (B, G, K2, H, s, W, s)
              .permute(0, 4, 6, 1, 2, 3, 5).flatten(1, 2))  # (B, s*s, G, K2, H, W)
    out = None
    for tap in range(k * k):
        i, j = divmod(tap, k)
        term = padded[..., i:(i - k + 1) or None, j:(j - k + 1) or None] * phases[:, :, :, tap:tap + 1]
        out = term if out is None else out + term
    out = out.flatten(2, 3).unflatten(1, (s, s)).permute(0, 3, 4, 1, 5, 2)  # (B, C, H, s, W, s)
    return out.flatten(4, 5).flatten(2, 3)[..., :oh, :ow].to(features.dtype)


def fade_export(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale,
                depthwise):
    """FADE for exporters: the naive semi-shift and gate (convolutions, nearest upsampling of
    K2- and 1-channel maps, crop) with ``carafe_export`` as the reassembly. ``depthwise``
    (FADE-Lite) comes from the caller's argument checks: read from the weights' shapes while
    ``torch.jit.trace`` records, it would be recorded as a value that might change."""
    return fade_naive(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias,
                      scale, carafe=carafe_export, depthwise=depthwise)
