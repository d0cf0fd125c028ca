"""Fused softmax-reassembly-gate in Triton (CARAFE semantics), forward and backward.

Forward, one program per (BLOCK_P output pixels, batch x group): the max-subtracted softmax
statistics of the K2 logits are computed once per pixel and kept in registers while the
program loops over channel blocks; each channel block gathers the KxK low-resolution
neighbourhood of ``x``, accumulates in fp32 and, for FADE, applies the gate epilogue
``g*en + (1-g)*acc`` before the single store. The masks tensor never exists.
Without SOFTMAX/GATE the same kernel is the standalone ``carafe`` (normalised masks in).

Backward, deterministic (gathers, no atomics), in two kernels:
- ``reassemble_bwd_mask_kernel`` (per output pixel): D[p, k] = sum_c dout[p, c] x[nbr_k(p), c];
  the mask/logit gradient (softmax backward fused), the gate-logit gradient per output pixel,
  ``grad_en = g * dout``, and the log-sum-exp of the logits for the next kernel.
- ``reassemble_bwd_feat_kernel`` (per low-resolution pixel q): each q gathers the
  s*s*K2 output pixels whose windows cover it: grad_x[q, c] = sum m[p, k] (1-g) dout[p, c].

Names read forward to backward: ``reassemble_fwd_kernel`` -> ``reassemble_fwd`` ->
``reassemble_bwd_*_kernel`` -> ``reassemble_bwd`` (both custom ops, ``fade_triton::``, opaque to
torch.compile, autograd registered) -> ``reassemble`` and ``carafe_triton``.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..checks import suggest_memory_format
from ._launch import next_pow2

BLOCK_P = 64  # output pixels per program
BLOCK_Q = 32  # low-resolution pixels per program (feature gradient)


@triton.jit
def _output_pixels(pid, H, W, SCALE, BLOCK_P: tl.constexpr):
    """A block of flattened output pixels: (p, in-range mask, output y/x, low-resolution y/x)."""
    ow_ = W * SCALE
    p = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    oy = p // ow_
    ox = p % ow_
    return p, p < H * SCALE * ow_, oy, ox, oy // SCALE, ox // SCALE


@triton.jit
def _gate_at(gate_ptr, b, ly, lx, stride_gb, stride_gh, stride_gw, mask, acc_dtype: tl.constexpr):
    """sigmoid of the gate logits (B, 1, H, W) at low-resolution pixels (ly, lx)."""
    gl = tl.load(gate_ptr + b * stride_gb + ly.to(tl.int64) * stride_gh + lx.to(tl.int64) * stride_gw,
                 mask=mask, other=0.0).to(acc_dtype)
    return 1.0 / (1.0 + tl.exp(-gl))


@triton.jit
def _load_tap(x_base, ly, lx, k, K: tl.constexpr, H, W, c_off, c_mask, p_mask,
              stride_xc, stride_xh, stride_xw, acc_dtype: tl.constexpr):
    """Tap k of the K x K window around (ly, lx): x[c, ly + k//K - r, lx + k%K - r] as a
    (pixels, channels) tile, zero outside the image."""
    yy = ly + (k // K - K // 2)
    xx = lx + (k % K - K // 2)
    inside = p_mask & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
    v = tl.load(x_base + (yy.to(tl.int64) * stride_xh + xx.to(tl.int64) * stride_xw)[:, None]
                + c_off[None, :] * stride_xc, mask=inside[:, None] & c_mask[None, :], other=0.0)
    return v.to(acc_dtype)


@triton.jit
def reassemble_fwd_kernel(
    x_ptr, mask_ptr, gate_ptr, en_ptr, out_ptr,
    C_GROUP, GROUPS, H, W, SCALE,
    stride_xb, stride_xc, stride_xh, stride_xw,
    stride_mb, stride_mc, stride_mh, stride_mw,
    stride_gb, stride_gh, stride_gw,
    stride_eb, stride_ec, stride_eh, stride_ew,
    stride_ob, stride_oc, stride_oh, stride_ow,
    K: tl.constexpr, SOFTMAX: tl.constexpr, GATE: tl.constexpr, ACC_FP64: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """out[b, c, p] = sum_k m[b, g*K2 + k, p] * x[b, c, p // SCALE + (k // K - R, k % K - R)],
    R = K // 2, g = c // C_GROUP, zero outside the image; m = softmax over k of the mask input if SOFTMAX,
    else the mask input itself. With GATE: out = s*en + (1-s)*out, s = sigmoid(gate[b, p // SCALE]).

    x_ptr: low-resolution features (B, GROUPS*C_GROUP, H, W). mask_ptr: masks or logits
    (B, GROUPS*K*K, H*SCALE, W*SCALE). gate_ptr: gate logits (B, 1, H, W) (GATE only).
    en_ptr: encoder feature (B, C, H*SCALE, W*SCALE) (GATE only). out_ptr: (B, C, H*SCALE, W*SCALE).
    All any strides: stride_<t><d> are the element strides of x, m(asks), g(ate), e(n) and
    o(ut) along (b, c, h, w) (the gate's channel dim has size 1 and no stride argument).
    C_GROUP: channels per group; GROUPS: G; H, W: the low-resolution size; SCALE: s.
    K: kernel size; SOFTMAX, GATE: as above (gate_ptr/en_ptr may be None without GATE);
    ACC_FP64: accumulate in fp64 (float64 inputs). BLOCK_P output pixels x BLOCK_C channels a tile.
    Grid: (cdiv(H*SCALE*W*SCALE, BLOCK_P), B * GROUPS).
    """
    acc_dtype: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    b = (tl.program_id(1) // GROUPS).to(tl.int64)
    g = tl.program_id(1) % GROUPS
    p, p_mask, oy, ox, ly, lx = _output_pixels(tl.program_id(0), H, W, SCALE, BLOCK_P)
    m_ptrs = (mask_ptr + b * stride_mb + (g * K * K).to(tl.int64) * stride_mc
              + oy.to(tl.int64) * stride_mh + ox.to(tl.int64) * stride_mw)
    if SOFTMAX:
        row_max = tl.full((BLOCK_P,), float("-inf"), acc_dtype)
        for k in tl.static_range(K * K):
            row_max = tl.maximum(row_max, tl.load(m_ptrs + k * stride_mc, mask=p_mask, other=0.0).to(acc_dtype))
        row_sum = tl.zeros((BLOCK_P,), acc_dtype)
        for k in tl.static_range(K * K):
            row_sum += tl.exp(tl.load(m_ptrs + k * stride_mc, mask=p_mask, other=0.0).to(acc_dtype) - row_max)
        inv_sum = 1.0 / row_sum
    if GATE:
        gate = _gate_at(gate_ptr, b, ly, lx, stride_gb, stride_gh, stride_gw, p_mask, acc_dtype)
    x_base = x_ptr + b * stride_xb
    for c0 in range(0, C_GROUP, BLOCK_C):
        cg = c0 + tl.arange(0, BLOCK_C)
        c_mask = cg < C_GROUP
        c_off = (g * C_GROUP + cg).to(tl.int64)
        acc = tl.zeros((BLOCK_P, BLOCK_C), acc_dtype)
        for k in tl.static_range(K * K):
            m = tl.load(m_ptrs + k * stride_mc, mask=p_mask, other=0.0).to(acc_dtype)
            if SOFTMAX:
                m = tl.exp(m - row_max) * inv_sum
            acc += m[:, None] * _load_tap(x_base, ly, lx, k, K, H, W, c_off, c_mask, p_mask,
                                          stride_xc, stride_xh, stride_xw, acc_dtype)
        io_mask = p_mask[:, None] & c_mask[None, :]
        if GATE:
            e = tl.load(en_ptr + b * stride_eb + (oy.to(tl.int64) * stride_eh + ox.to(tl.int64) * stride_ew)[:, None]
                        + c_off[None, :] * stride_ec, mask=io_mask, other=0.0).to(acc_dtype)
            acc += gate[:, None] * (e - acc)
        tl.store(out_ptr + b * stride_ob + (oy.to(tl.int64) * stride_oh + ox.to(tl.int64) * stride_ow)[:, None]
                 + c_off[None, :] * stride_oc, acc.to(out_ptr.dtype.element_ty), mask=io_mask)


@triton.jit
def reassemble_bwd_mask_kernel(
    x_ptr, mask_ptr, gate_ptr, en_ptr, dout_ptr,
    dmask_ptr, den_ptr, dgate_ptr, lse_ptr,
    C_GROUP, GROUPS, H, W, SCALE,
    stride_xb, stride_xc, stride_xh, stride_xw,
    stride_mb, stride_mc, stride_mh, stride_mw,
    stride_gb, stride_gh, stride_gw,
    stride_eb, stride_ec, stride_eh, stride_ew,
    stride_db, stride_dc, stride_dh, stride_dw,
    stride_nb, stride_nc, stride_nh, stride_nw,
    K: tl.constexpr, K2_PAD: tl.constexpr, SOFTMAX: tl.constexpr, GATE: tl.constexpr,
    ACC_FP64: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Per output pixel p: D[p, k] = sum_c dout[p, c] * x[nbr_k(p), c] over the group's channels.

    Writes dmask_ptr (B, GROUPS*K*K, OH, OW) contiguous: the mask gradient ``(1-s)*D`` (carafe:
    D), pushed through the softmax if SOFTMAX. With GATE also writes den_ptr (B, C, OH, OW), any
    strides: ``s * dout``; dgate_ptr (B, OH*OW) contiguous: s(1-s) * sum_c dout*(en - u), the
    gate-logit gradient before the sum over each pixel's s*s copies. With SOFTMAX writes
    lse_ptr (B, OH*OW) contiguous: the log-sum-exp of the logits. dout_ptr: (B, C, OH, OW)
    any strides (stride_d*), den any strides (stride_n*); other arguments as in
    ``reassemble_fwd_kernel``. K2_PAD: K*K rounded up to a power of two (the register tile of
    masks and D). The channel loop is the outer loop, so each dout tile is read once.
    Grid: (cdiv(OH*OW, BLOCK_P), B * GROUPS).
    """
    acc_dtype: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    b = (tl.program_id(1) // GROUPS).to(tl.int64)
    g = tl.program_id(1) % GROUPS
    n_pix = H * SCALE * W * SCALE
    p, p_mask, oy, ox, ly, lx = _output_pixels(tl.program_id(0), H, W, SCALE, BLOCK_P)
    kk = tl.arange(0, K2_PAD)
    k_mask = kk < K * K
    tile_mask = p_mask[:, None] & k_mask[None, :]
    m = tl.load(mask_ptr + b * stride_mb + (g * K * K + kk[None, :]).to(tl.int64) * stride_mc
                + (oy.to(tl.int64) * stride_mh + ox.to(tl.int64) * stride_mw)[:, None],
                mask=tile_mask, other=0.0).to(acc_dtype)
    if SOFTMAX:
        m = tl.where(k_mask[None, :], m, float("-inf"))
        row_max = tl.max(m, 1)
        m = tl.exp(m - row_max[:, None])
        row_sum = tl.sum(m, 1)
        m = m / row_sum[:, None]
        tl.store(lse_ptr + b * n_pix + p, row_max + tl.log(row_sum), mask=p_mask)
    if GATE:
        gate = _gate_at(gate_ptr, b, ly, lx, stride_gb, stride_gh, stride_gw, p_mask, acc_dtype)
        en_dot = tl.zeros((BLOCK_P,), acc_dtype)
    d = tl.zeros((BLOCK_P, K2_PAD), acc_dtype)
    x_base = x_ptr + b * stride_xb
    pix_d = oy.to(tl.int64) * stride_dh + ox.to(tl.int64) * stride_dw
    for c0 in range(0, C_GROUP, BLOCK_C):
        cg = c0 + tl.arange(0, BLOCK_C)
        c_mask = cg < C_GROUP
        c_off = (g * C_GROUP + cg).to(tl.int64)
        io_mask = p_mask[:, None] & c_mask[None, :]
        dout = tl.load(dout_ptr + b * stride_db + pix_d[:, None] + c_off[None, :] * stride_dc,
                       mask=io_mask, other=0.0).to(acc_dtype)
        if GATE:
            e = tl.load(en_ptr + b * stride_eb + (oy.to(tl.int64) * stride_eh + ox.to(tl.int64) * stride_ew)[:, None]
                        + c_off[None, :] * stride_ec, mask=io_mask, other=0.0).to(acc_dtype)
            en_dot += tl.sum(dout * e, 1)
            tl.store(den_ptr + b * stride_nb + (oy.to(tl.int64) * stride_nh + ox.to(tl.int64) * stride_nw)[:, None]
                     + c_off[None, :] * stride_nc, (gate[:, None] * dout).to(den_ptr.dtype.element_ty), mask=io_mask)
        for k in tl.static_range(K * K):
            v = _load_tap(x_base, ly, lx, k, K, H, W, c_off, c_mask, p_mask, stride_xc, stride_xh, stride_xw, acc_dtype)
            d += tl.where(kk[None, :] == k, tl.sum(dout * v, 1)[:, None], 0.0)
    if GATE:
        # sum_c dout * u = sum_k m_k D_k, so the gate needs no second pass over the channels
        md = tl.sum(m * d, 1)
        tl.store(dgate_ptr + b * n_pix + p, gate * (1.0 - gate) * (en_dot - md), mask=p_mask)
        d = d * (1.0 - gate)[:, None]
    if SOFTMAX:
        d = m * (d - tl.sum(m * d, 1)[:, None])
    tl.store(dmask_ptr + (b * GROUPS * K * K + g * K * K + kk[None, :]).to(tl.int64) * n_pix + p[:, None],
             d.to(dmask_ptr.dtype.element_ty), mask=tile_mask)


@triton.jit
def reassemble_bwd_feat_kernel(
    mask_ptr, lse_ptr, gate_ptr, dout_ptr, dx_ptr,
    C_GROUP, GROUPS, H, W, SCALE,
    stride_mb, stride_mc, stride_mh, stride_mw,
    stride_gb, stride_gh, stride_gw,
    stride_db, stride_dc, stride_dh, stride_dw,
    stride_xb, stride_xc, stride_xh, stride_xw,
    K: tl.constexpr, SOFTMAX: tl.constexpr, GATE: tl.constexpr, ACC_FP64: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """dx[b, c, q] = sum over taps k and the s*s output pixels p of the low-resolution pixel
    q - (k // K - R, k % K - R) of  m[b, g*K2 + k, p] * (1 - s[p]) * dout[b, c, p].

    A gather: each program owns its low-resolution pixels, so no two programs write one
    element. m = exp(logit - lse) if SOFTMAX (lse_ptr: (B, OH*OW) contiguous), else the mask
    input. (1 - s) only with GATE. dx_ptr: (B, C, H, W), any strides (stride_x*); other
    arguments as in ``reassemble_fwd_kernel``; BLOCK_Q low-resolution pixels x BLOCK_C channels.
    Grid: (cdiv(H*W, BLOCK_Q), B * GROUPS).
    """
    R: tl.constexpr = K // 2
    acc_dtype: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    pid_q = tl.program_id(0)
    b = (tl.program_id(1) // GROUPS).to(tl.int64)
    g = tl.program_id(1) % GROUPS
    ow_ = W * SCALE
    q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_mask = q < H * W
    qy = q // W
    qx = q % W
    m_base = mask_ptr + b * stride_mb + (g * K * K).to(tl.int64) * stride_mc
    for c0 in range(0, C_GROUP, BLOCK_C):
        cg = c0 + tl.arange(0, BLOCK_C)
        c_mask = cg < C_GROUP
        c_off = (g * C_GROUP + cg).to(tl.int64)
        acc = tl.zeros((BLOCK_Q, BLOCK_C), acc_dtype)
        for k in tl.static_range(K * K):
            ly = qy - (k // K - R)
            lx = qx - (k % K - R)
            inside = q_mask & (ly >= 0) & (ly < H) & (lx >= 0) & (lx < W)
            if GATE:
                keep = 1.0 - _gate_at(gate_ptr, b, ly, lx, stride_gb, stride_gh, stride_gw, inside, acc_dtype)
            for sub in range(0, SCALE * SCALE):
                oy = (ly * SCALE + sub // SCALE).to(tl.int64)
                ox = (lx * SCALE + sub % SCALE).to(tl.int64)
                m = tl.load(m_base + k * stride_mc + oy * stride_mh + ox * stride_mw,
                            mask=inside, other=0.0).to(acc_dtype)
                if SOFTMAX:
                    lse = tl.load(lse_ptr + b * H * SCALE * ow_ + oy * ow_ + ox, mask=inside, other=0.0)
                    m = tl.exp(m - lse)
                if GATE:
                    m = m * keep
                dout = tl.load(dout_ptr + b * stride_db + (oy * stride_dh + ox * stride_dw)[:, None]
                               + c_off[None, :] * stride_dc, mask=inside[:, None] & c_mask[None, :], other=0.0)
                acc += m[:, None] * dout.to(acc_dtype)
        tl.store(dx_ptr + b * stride_xb + (qy.to(tl.int64) * stride_xh + qx.to(tl.int64) * stride_xw)[:, None]
                 + c_off[None, :] * stride_xc, acc.to(dx_ptr.dtype.element_ty),
                 mask=q_mask[:, None] & c_mask[None, :])


def _strides(t, n=4):
    return t.stride() if t is not None else (0,) * n


def _gate_strides(gate):
    return (gate.stride(0), gate.stride(2), gate.stride(3)) if gate is not None else (0, 0, 0)


def _empty_output(x, en, scale):
    """(B, C, sH, sW) in x's dtype, laid out like ``en`` (FADE) or ``x`` (carafe)."""
    b, c, h, w = x.shape
    return torch.empty((b, c, h * scale, w * scale), dtype=x.dtype, device=x.device,
                       memory_format=suggest_memory_format(en if en is not None else x))


@torch.library.custom_op("fade_triton::reassemble_fwd", mutates_args=())
def reassemble_fwd(x: torch.Tensor, masks: torch.Tensor, gate: Optional[torch.Tensor], en: Optional[torch.Tensor],
                   kernel_size: int, group_size: int, scale: int, softmax: bool) -> torch.Tensor:
    """Launch ``reassemble_fwd_kernel``: CARAFE of ``x`` with ``masks`` (softmax of them if
    ``softmax``), gated with ``en`` if ``gate`` is given. channels_last in, channels_last out."""
    b, c, h, w = x.shape
    out = _empty_output(x, en, scale)
    if out.numel() == 0:
        return out
    c_group = c // group_size
    grid = (triton.cdiv(out.shape[2] * out.shape[3], BLOCK_P), b * group_size)
    reassemble_fwd_kernel[grid](
        x, masks, gate, en, out, c_group, group_size, h, w, scale,
        *x.stride(), *masks.stride(), *_gate_strides(gate), *_strides(en), *out.stride(),
        K=kernel_size, SOFTMAX=softmax, GATE=gate is not None, ACC_FP64=x.dtype == torch.float64,
        BLOCK_P=BLOCK_P, BLOCK_C=min(64, next_pow2(c_group, 16)),
    )
    return out


@reassemble_fwd.register_fake
def _(x, masks, gate, en, kernel_size, group_size, scale, softmax):
    return _empty_output(x, en, scale)


@torch.library.custom_op("fade_triton::reassemble_bwd", mutates_args=())
def reassemble_bwd(dout: torch.Tensor, x: torch.Tensor, masks: torch.Tensor, gate: Optional[torch.Tensor],
                   en: Optional[torch.Tensor], kernel_size: int, group_size: int, scale: int,
                   softmax: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients ``(dx, dmasks, dgate, den)`` of ``reassemble_fwd``; without a gate, dgate and
    den are empty (0-element) tensors.

    Temporaries besides the gradients: the log-sum-exp (B*sH*sW, fp32) with softmax, and the
    per-output-pixel gate gradient (B*sH*sW, fp32) with gate.
    """
    b, c, h, w = x.shape
    oh, ow = h * scale, w * scale
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    dx = torch.empty_like(x)
    dmasks = torch.empty(masks.shape, dtype=masks.dtype, device=masks.device)
    den = torch.empty_like(en) if en is not None else None
    dgate_hi = torch.empty((b, oh * ow), dtype=acc, device=x.device) if gate is not None else None
    lse = torch.empty((b, oh * ow), dtype=acc, device=x.device) if softmax else None
    if dx.numel() and dmasks.numel():
        c_group = c // group_size
        block_c = min(64, next_pow2(c_group, 16))
        flags = dict(K=kernel_size, SOFTMAX=softmax, GATE=gate is not None, ACC_FP64=acc == torch.float64)
        reassemble_bwd_mask_kernel[(triton.cdiv(oh * ow, BLOCK_P), b * group_size)](
            x, masks, gate, en, dout, dmasks, den, dgate_hi, lse, c_group, group_size, h, w, scale,
            *x.stride(), *masks.stride(), *_gate_strides(gate), *_strides(en), *dout.stride(), *_strides(den),
            K2_PAD=next_pow2(kernel_size**2, 16), BLOCK_P=BLOCK_P, BLOCK_C=block_c, **flags,
        )
        reassemble_bwd_feat_kernel[(triton.cdiv(h * w, BLOCK_Q), b * group_size)](
            masks, lse, gate, dout, dx, c_group, group_size, h, w, scale,
            *masks.stride(), *_gate_strides(gate), *dout.stride(), *dx.stride(),
            BLOCK_Q=BLOCK_Q, BLOCK_C=block_c, **flags,
        )
    else:  # nothing to reduce over: every gradient is zero
        for t in (dx, dmasks, den, dgate_hi):
            if t is not None:
                t.zero_()
    # each low-resolution gate logit feeds its s*s output pixels (custom-op outputs may not
    # alias one another, so each absent gradient is its own 0-element tensor)
    dgate = dgate_hi.view(b, 1, h, scale, w, scale).sum((3, 5)).to(gate.dtype) if gate is not None else x.new_empty(0)
    return dx, dmasks, dgate, den if den is not None else x.new_empty(0)


@reassemble_bwd.register_fake
def _(dout, x, masks, gate, en, kernel_size, group_size, scale, softmax):
    return (torch.empty_like(x), masks.new_empty(masks.shape), gate.new_empty(gate.shape) if gate is not None else
            x.new_empty(0), torch.empty_like(en) if en is not None else x.new_empty(0))


def _reassemble_setup_context(ctx, inputs, output):
    x, masks, gate, en, *config = inputs
    ctx.save_for_backward(x, masks, gate, en)  # the inputs only: nothing of size C*sH*sW or K2*C
    ctx.config = config


def _reassemble_backward(ctx, dout):
    x, masks, gate, en = ctx.saved_tensors
    dx, dmasks, dgate, den = reassemble_bwd(dout, x, masks, gate, en, *ctx.config)
    return dx, dmasks, dgate if gate is not None else None, den if en is not None else None, None, None, None, None


reassemble_fwd.register_autograd(_reassemble_backward, setup_context=_reassemble_setup_context)


def reassemble(x, logits, gate, en, kernel_size, scale):
    """FADE's ``gate*en + (1-gate)*carafe(x, softmax(logits))``, gate = sigmoid(up(gate logits))."""
    return reassemble_fwd(x, logits, gate, en, kernel_size, 1, scale, True)


def carafe_triton(features, masks, kernel_size, group_size, scale_factor):
    """Standalone CARAFE (masks already normalised), as ``mmcv.ops.carafe``."""
    return reassemble_fwd(features, masks, None, None, kernel_size, group_size, scale_factor, False)
