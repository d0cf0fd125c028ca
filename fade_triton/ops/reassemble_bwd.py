"""CARAFE reassembly in Triton, backward (the tiling is the forward's: ``reassemble.py``).

- ``reassemble_bwd_kernel``: the logit (or mask) gradient with the softmax and gate backward
  fused, the gate-logit gradient, the sum of the logit gradient over each pixel's s*s phases (the
  low-resolution branch's gradient) and the log-sum-exp. For half inputs and TF32 float32 at s a
  power of two up to 8, ``reassemble_dot.reassemble_bwd_dot_kernel`` computes the same on
  tensor cores (``reassemble_bwd``'s ``kernel`` argument).
- ``reassemble_bwd_feat_kernel``: the gradient of x, a gather (each program owns its
  low-resolution pixels: no atomics, bitwise deterministic); where the mask gradient's dot
  kernel runs and K <= 9, ``reassemble_dot_feat.reassemble_bwd_feat_dot_kernel`` computes it on
  tensor cores (a gather too).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .helpers import (LaunchPlan, accumulator_dtype, cached_plan, dot_precision, launch, slot_plan, spec, strides,
                      target_of)
from .reassemble import channel_splits, check_fusion, dot_kernel_applies, reassembly_grids, tile_config
from .reassemble_dot import reassemble_bwd_dot_plan
from .reassemble_dot_feat import reassemble_bwd_feat_dot_plan
from .window import channel_block, load_tap, lowres_tile, pass_masks, phase, reassembly_program, sigmoid_gate, window_step


@triton.jit(do_not_specialize=["R"])
def reassemble_bwd_kernel(
    x_ptr, m_ptr, gate_ptr, en_ptr, dout_ptr, dm_ptr, dlo_ptr, lse_ptr,
    C_GROUP, GROUPS, H, W, OH, OW, R,
    stride_xb, stride_xc, stride_xh, stride_xw,
    stride_mb, stride_mc, stride_mh, stride_mw,
    stride_gb, stride_gh, stride_gw,
    stride_eb, stride_ec, stride_eh, stride_ew,
    stride_db, stride_dc, stride_dh, stride_dw,
    stride_lob, stride_loc, stride_loh, stride_low,
    K: tl.constexpr, S: tl.constexpr, PH: tl.constexpr, SOFTMAX: tl.constexpr, GATE: tl.constexpr,
    ACC_FP64: tl.constexpr, TX: tl.constexpr, TQ: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Per output pixel: D[k] = sum_c dout[c] * x[nbr_k, c] over the group's channels, then
      dm = (1 - G) * D (carafe: D), pushed through the softmax with SOFTMAX: dl = m * (dm - sum_k m*dm);
      with GATE, the gate-logit gradient G(1-G) * sum_c dout * (en - u), u = sum_k m_k x_k,
      using sum_c dout * u = sum_k m_k D_k (no second pass over the channels).

    dm_ptr: (B, GROUPS*K*K, OH, OW) contiguous fp32 (the logit or mask gradient). With SOFTMAX
    (FADE): lse_ptr (B, OH, OW) contiguous fp32, the log-sum-exp of the logits, for
    ``reassemble_bwd_feat_kernel``; dlo_ptr (B, KP, H, W) any strides (stride_lo*): channel k <
    K2 the sum of dl[k] over the pixel's S*S phases (the decoder branch's logit gradient),
    channel K2 the gate-logit gradient. dout_ptr: (B, C, OH, OW), any strides (stride_d*).
    Other arguments as in ``reassemble_fwd_kernel``. Loads per channel block and pass: K2
    x tiles, PH dout tiles (and PH en tiles with GATE); the sums over c are in-thread for
    NCHW tiles (channels held in-thread) and a 3-step shuffle for channels_last ones.
    Grid: (cdiv(W, TX), cdiv(H, TQ // TX), B * GROUPS).
    """
    K2: tl.constexpr = K * K
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    b, g, ly, lx, q_ok, _, rows, cols, x_pix = reassembly_program(H, W, R, 1, GROUPS, stride_xh, stride_xw, K, TX, TQ)
    if GATE:
        gate = sigmoid_gate(gate_ptr, b, ly, lx, q_ok, stride_gb, stride_gh, stride_gw, ACC)
        dgate = tl.zeros((TQ,), ACC)
    if SOFTMAX:
        dlo = ()  # dlo[k]: the logit gradient of tap k summed over the pixel's phases
        for k in tl.static_range(K2):
            dlo = dlo + (tl.zeros((TQ,), ACC),)
    m_base = m_ptr + b * stride_mb + (g * K2).to(tl.int64) * stride_mc
    for ph0 in tl.static_range(0, S * S, PH):
        ms, lses = pass_masks(m_base, stride_mc, stride_mh, stride_mw, ly, lx, q_ok, OH, OW, ph0, PH, S, K2, SOFTMAX,
                              ACC)
        ds = ()  # ds[p * K2 + k]: D[k] of phase p, summed over the channel blocks
        for i in tl.static_range(PH * K2):
            ds = ds + (tl.zeros((TQ,), ACC),)
        if GATE:
            edots = ()  # edots[p]: sum_c dout * en of phase p
            for p in tl.static_range(PH):
                edots = edots + (tl.zeros((TQ,), ACC),)
        for c0 in range(0, C_GROUP, BLOCK_C):
            c_ok, c = channel_block(c0, g, C_GROUP, BLOCK_C)
            douts = ()
            for p in tl.static_range(PH):
                oy, ox, pok = phase(ly, lx, q_ok, OH, OW, ph0 + p, S)
                io = c_ok[:, None] & pok[None, :]
                dout = tl.load(dout_ptr + b * stride_db + c * stride_dc + (oy * stride_dh + ox * stride_dw)[None, :],
                               mask=io, other=0.0).to(ACC)
                douts = douts + (dout,)
                if GATE:
                    e = tl.load(en_ptr + b * stride_eb + c * stride_ec + (oy * stride_eh + ox * stride_ew)[None, :],
                                mask=io, other=0.0).to(ACC)
                    edots = edots[:p] + (edots[p] + tl.sum(dout * e, 0),) + edots[p + 1:]
            x_ptrs = x_ptr + b * stride_xb + c * stride_xc + x_pix - tl.cast(R, tl.int64) * stride_xh - tl.cast(R, tl.int64) * stride_xw
            for k in tl.static_range(K2):
                v, x_ptrs = load_tap(x_ptrs, c_ok, rows, cols, stride_xh, stride_xw, k, K, ACC)
                new = ()
                for p in tl.static_range(PH):
                    new = new + (ds[p * K2 + k] + tl.sum(douts[p] * v, 0),)
                for p in tl.static_range(PH):  # a tuple entry is replaced by slicing around it
                    ds = ds[:p * K2 + k] + (new[p],) + ds[p * K2 + k + 1:]
        # per phase: the gate-logit gradient, then the mask (softmax: logit) gradient, stored once
        for p in tl.static_range(PH):
            oy, ox, pok = phase(ly, lx, q_ok, OH, OW, ph0 + p, S)
            if GATE:
                md = tl.zeros((TQ,), ACC)
                for k in tl.static_range(K2):
                    md += ms[p * K2 + k] * ds[p * K2 + k]
                dgate += tl.where(pok, gate * (1.0 - gate) * (edots[p] - md), 0.0)
            keep = (1.0 - gate) if GATE else 1.0
            if SOFTMAX:
                mdm = tl.zeros((TQ,), ACC)
                for k in tl.static_range(K2):
                    mdm += ms[p * K2 + k] * ds[p * K2 + k]
                mdm = mdm * keep
                tl.store(lse_ptr + (b * OH + oy) * OW + ox, lses[p], mask=pok)
            plane = tl.cast(OH, tl.int64) * OW  # one (OH, OW) plane of dm
            pix = (b * GROUPS * K2 + g * K2) * plane + oy * OW + ox
            for k in tl.static_range(K2):
                dk = ds[p * K2 + k] * keep
                if SOFTMAX:
                    dk = ms[p * K2 + k] * (dk - mdm)
                    dlo = dlo[:k] + (dlo[k] + tl.where(pok, dk, 0.0),) + dlo[k + 1:]
                tl.store(dm_ptr + pix + k * plane, dk, mask=pok)
    if SOFTMAX:
        lo_ptrs = dlo_ptr + b * stride_lob + ly.to(tl.int64) * stride_loh + lx.to(tl.int64) * stride_low
        for k in tl.static_range(K2):
            tl.store(lo_ptrs + k * stride_loc, dlo[k], mask=q_ok)
        if GATE:
            tl.store(lo_ptrs + K2 * stride_loc, dgate, mask=q_ok)


@triton.jit(do_not_specialize=["R"])
def reassemble_bwd_feat_kernel(
    m_ptr, lse_ptr, gate_ptr, dout_ptr, dx_ptr,
    C_GROUP, GROUPS, H, W, OH, OW, R, SPLITS, C_SPLIT,
    stride_mb, stride_mc, stride_mh, stride_mw,
    stride_gb, stride_gh, stride_gw,
    stride_db, stride_dc, stride_dh, stride_dw,
    stride_xb, stride_xc, stride_xh, stride_xw,
    K: tl.constexpr, S: tl.constexpr, PH: tl.constexpr, SOFTMAX: tl.constexpr, GATE: tl.constexpr,
    ACC_FP64: tl.constexpr, TX: tl.constexpr, TQ: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """dx[b, c, q] = sum over taps k and phases p of w[q', p, k] * dout[b, c, phase p of q'],
    q' = q - (k // K - R, k % K - R), w = m * (1 - G(q')) (m = exp(logit - lse) with SOFTMAX,
    the mask input otherwise; (1 - G) only with GATE).

    A gather: each program owns its low-resolution pixels, so no two programs write one
    element. The weights of a pass (PH*K2 per pixel) are computed once per program; per
    channel block and pass it loads PH*K2 shifted dout tiles (each dout element is requested K2
    times in all, one per tap, from L1/L2, and read once from DRAM). Passes after the first add
    to what the first wrote. lse_ptr: (B, OH, OW) contiguous (SOFTMAX). dx_ptr: (B, C, H, W) any
    strides (stride_x*). Other arguments as in ``reassemble_bwd_kernel``.
    Grid: (SPLITS * cdiv(W, TX), cdiv(H, TQ // TX), B * GROUPS).
    """
    K2: tl.constexpr = K * K
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    b = (tl.program_id(2) // GROUPS).to(tl.int64)
    g = tl.program_id(2) % GROUPS
    ly, lx, q_ok, split = lowres_tile(H, W, SPLITS, TX, TQ)
    m_base = m_ptr + b * stride_mb + (g * K2).to(tl.int64) * stride_mc
    for ph0 in tl.static_range(0, S * S, PH):
        # ws[k * PH + p]: the weight neighbour q' = q - (tap k's offset) gives pixel q in phase p
        ws = ()
        for k in tl.static_range(K2):
            ny = ly - (k // K) + R
            nx = lx - (k % K) + R
            n_ok = q_ok & (ny >= 0) & (ny < H) & (nx >= 0) & (nx < W)
            if GATE:
                keep = 1.0 - sigmoid_gate(gate_ptr, b, ny, nx, n_ok, stride_gb, stride_gh, stride_gw, ACC)
            for p in tl.static_range(PH):
                oy, ox, pok = phase(ny, nx, n_ok, OH, OW, ph0 + p, S)
                # k * stride_mc in 32 bits, bounded on the host (64-bit costs sm_80 a spill here)
                m = tl.load(m_base + k * stride_mc + oy * stride_mh + ox * stride_mw, mask=pok, other=0.0).to(ACC)
                if SOFTMAX:
                    m = tl.exp(m - tl.load(lse_ptr + (b * OH + oy) * OW + ox, mask=pok, other=0.0))
                if GATE:
                    m = m * keep
                ws = ws + (tl.where(pok, m, 0.0),)
        for c0 in range(split * C_SPLIT, tl.minimum(split * C_SPLIT + C_SPLIT, C_GROUP), BLOCK_C):
            c_ok, c = channel_block(c0, g, C_GROUP, BLOCK_C)
            io = c_ok[:, None] & q_ok[None, :]
            # (lx + R - R: the pixels' alignment hidden from the compiler, so this store takes the
            # gathers' one-pixel-per-thread layout rather than a vectorised one of its own)
            dx_pix = ly.to(tl.int64) * stride_xh + (lx + R - R).to(tl.int64) * stride_xw
            dx_ptrs = dx_ptr + b * stride_xb + c * stride_xc + dx_pix[None, :]
            if ph0 == 0:
                acc = tl.zeros((BLOCK_C, TQ), ACC)
            else:
                acc = tl.load(dx_ptrs, mask=io, other=0.0).to(ACC)
            # one pointer tile, at neighbour q' = q + (R, R) (tap 0), walked mirrored and s-strided
            d_ptrs = (dout_ptr + b * stride_db + c * stride_dc
                      + (((ly + R) * S).to(tl.int64) * stride_dh + ((lx + R) * S).to(tl.int64) * stride_dw)[None, :])
            for k in tl.static_range(K2):
                for p in tl.static_range(PH):
                    w = ws[k * PH + p]
                    ph_off = ((ph0 + p) // S) * stride_dh + ((ph0 + p) % S) * stride_dw
                    d = tl.load(d_ptrs + ph_off, mask=c_ok[:, None] & (w != 0.0)[None, :], other=0.0)
                    acc += w[None, :] * d.to(ACC)
                d_ptrs = window_step(d_ptrs, k, K, -S * stride_dh, -S * stride_dw, False)  # bounded on the host
            tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=io)


def reassemble_bwd(dout, x, masks, gate, en, dx, dmasks, dlo, kernel_size, group_size, scale, softmax, slot=None,
                   kernel="auto"):
    """Launch both backward kernels. Writes ``dx`` (B, C, H, W), ``dmasks`` (B, G*K2, OH, OW)
    contiguous fp32 and, with softmax (FADE), ``dlo`` (B, KP, H, W) view: the summed logit
    gradient and (with a gate) the gate-logit gradient at channel K2. ``slot``: where the calling
    operator keeps these launches' plans (``helpers.slot_plan``), or None. ``kernel``: both
    kernels', "dot" (``reassemble_dot.reassemble_bwd_dot_kernel`` and
    ``reassemble_bwd_feat_dot_kernel``; ValueError where either does not apply), "fma" or "auto"
    (as ``reassemble.reassemble_fwd`` chooses, each dot kernel where its tile applies)."""
    check_fusion(softmax, gate, group_size)
    if dx.numel() == 0 or dmasks.numel() == 0:
        dx.zero_()
        dmasks.zero_()
        return
    mask_plan, feat_plan = slot_plan(slot, lambda: reassemble_bwd_plans(
        spec(x), masks.stride(), gate is not None, strides(gate, 3), strides(en), dout.stride(), strides(dlo), spec(dx),
        dmasks.shape, kernel_size, group_size, scale, softmax, target_of(x), kernel))
    b, _, oh, ow = dmasks.shape
    lse = torch.empty((b, oh, ow), dtype=accumulator_dtype(x.dtype), device=x.device) if softmax else None
    launch(reassemble_bwd_kernel, mask_plan, (x, masks, gate, en, dout, dmasks, dlo, lse), (True,) * 8)
    launch(reassemble_bwd_feat_kernel, feat_plan, (masks, lse, gate, dout, dx), (True,) * 5)


@cached_plan
def reassemble_bwd_plans(x, m_strides, gated, gate_strides, en_strides, dout_strides, dlo_strides, dx, dmasks_shape,
                         kernel_size, group_size, scale, softmax, target, kernel="auto") -> tuple[LaunchPlan, LaunchPlan]:
    """``reassemble_bwd``'s launches for one signature, (mask gradient, feature gradient): ``x``
    and ``dx`` ``Spec``s, the other tensors by their strides (``gated``: a gate is given;
    ``kernel``: as ``reassemble_bwd``'s)."""
    k2g = kernel_size * kernel_size * group_size
    if k2g * abs(m_strides[1]) >= 2**31:
        # the feature gradient reads mask channel k at k * stride in 32 bits (64-bit products spill
        # on sm_80): bench.tools.aot, BOUNDED_ARGS
        raise ValueError(f"masks: channel stride {m_strides[1]} times {k2g} channels passes 2**31 elements "
                         "(an output plane past about 2**31 / K**2 pixels)")
    if kernel_size * scale * max(abs(dout_strides[2]), abs(dout_strides[3])) >= 2**31:
        # the feature gradient walks dout's window K*s rows or columns at a time with 32-bit steps
        # (64-bit steps cost registers that spill): bench.tools.aot, BOUNDED_ARGS
        raise ValueError(f"dout: strides {dout_strides} times kernel_size * scale = {kernel_size * scale} "
                         "pass 2**31 elements; make the output gradient contiguous")
    precision = dot_precision(x.dtype, target)
    mask_plan = feat_plan = None
    if kernel == "dot" or (kernel == "auto" and dot_kernel_applies(x, kernel_size, scale, precision)):
        mask_plan = reassemble_bwd_dot_plan(x, m_strides, gated, gate_strides, en_strides, dout_strides, dlo_strides,
                                            dmasks_shape, kernel_size, group_size, scale, softmax, precision,
                                            target.arch)
        feat_plan = reassemble_bwd_feat_dot_plan(dx, m_strides, gated, gate_strides, dout_strides, dmasks_shape,
                                                 kernel_size, group_size, scale, softmax, precision)
        if kernel == "dot" and (mask_plan is None or feat_plan is None):
            raise ValueError(f"the dot reassembly backward needs 1 < K <= 9 and s a power of two up to 8 "
                             f"(K={kernel_size}, s={scale})")
    b, c, h, w = x.shape
    oh, ow = dmasks_shape[2:]
    flags = dict(K=kernel_size, S=scale, SOFTMAX=softmax, GATE=gated, ACC_FP64=x.dtype == torch.float64)
    sizes = (c // group_size, group_size, h, w, oh, ow, kernel_size // 2)
    if feat_plan is None:
        feat_cfg = tile_config(dx, c // group_size, kernel_size, scale, target, kernel="feat")
        splits, per = channel_splits(c // group_size, feat_cfg["BLOCK_C"])
        feat_plan = LaunchPlan(reassembly_grids(b, group_size, h, w, feat_cfg, splits),
                               (*sizes, splits, per, *m_strides, *gate_strides, *dout_strides, *dx.stride()),
                               dict(flags, **feat_cfg))
    if mask_plan is None:
        cfg = tile_config(x, c // group_size, kernel_size, scale, target, kernel="bwd")
        mask_plan = LaunchPlan(reassembly_grids(b, group_size, h, w, cfg),
                               (*sizes, *x.stride(), *m_strides, *gate_strides, *en_strides, *dout_strides,
                                *dlo_strides), dict(flags, **cfg))
    return mask_plan, feat_plan
