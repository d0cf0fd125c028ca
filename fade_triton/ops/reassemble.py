"""Fused softmax-reassembly-gate in Triton (CARAFE semantics), forward and backward.

All three kernels share one tiling: a program owns a tile of TQ *low-resolution* pixels
(TY rows x TX columns) of one image (and one mask group) and loops over channel blocks.
Each low-resolution pixel's s*s output pixels ("phases") live in the same thread, so every
gathered value serves all the output pixels that need it inside the program, and each
pixel's masks are computed once per program (held in registers across the channel loop).
The phases are processed PH at a time ("passes") to keep the masks within the register
budget: PH = s*s at the headline K = 5, s = 2 in NCHW.

Register tiles are (channels, pixels). The compiler lays each load along its contiguous
axis: pixels for NCHW tensors (a warp's 32 lanes on 32 neighbouring pixels of one row,
scalar loads, channels held in-thread), channels for channels_last ones (16-byte vectors).
Phase loads and stores of ``en``/``out``/``dout`` step by s along a row: each request
fetches whole sectors of which the other phases of the same program use the rest (from L1).

- ``reassemble_fwd_kernel``: out = sum_k m_k * x_k (+ the gate blend), m = softmax of the
  logits (FADE) or the masks as given (carafe, with groups).
- ``reassemble_bwd_kernel``: the logit (or mask) gradient with the softmax and gate
  backward fused, the gate-logit gradient, the sum of the logit gradient over each
  pixel's s*s phases (the low-resolution branch's gradient) and the log-sum-exp.
- ``reassemble_bwd_feat_kernel``: the gradient of x, a gather (each program owns its
  low-resolution pixels: no atomics, bitwise deterministic).

Names read forward to backward: ``reassemble_fwd_kernel`` -> ``reassemble_fwd``;
``reassemble_bwd_kernel`` + ``reassemble_bwd_feat_kernel`` -> ``reassemble_bwd``. The torch
ops and autograd that use them are in ``fade.py`` (FADE) and ``carafe.py`` (CARAFE).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from . import _launch
from ..backend import interpreter_enabled
from ._launch import cdiv, next_pow2

MASK_REGISTERS = 100  # fp32 mask values a thread may hold across the channel loop


@triton.jit
def _lowres_tile(H, W, SPLITS, TX: tl.constexpr, TQ: tl.constexpr):
    """The program's low-resolution pixels (rows, columns, in-image mask, TQ each) and its
    channel split (grid axis 0 is split-major: the SPLITS programs of a tile run side by side)."""
    q = tl.arange(0, TQ)
    ly = tl.program_id(1) * (TQ // TX) + q // TX
    lx = (tl.program_id(0) // SPLITS) * TX + q % TX
    return ly, lx, (ly < H) & (lx < W), tl.program_id(0) % SPLITS


@triton.jit
def _program(H, W, R, SPLITS, GROUPS, stride_xh, stride_xw, K: tl.constexpr, TX: tl.constexpr, TQ: tl.constexpr):
    """What a reassembly program owns: batch b, group g, its pixels (rows, columns, mask), its
    channel split, the in-image masks of its tap rows and columns, and the pixels' offsets in x."""
    b = (tl.program_id(2) // GROUPS).to(tl.int64)
    g = tl.program_id(2) % GROUPS
    ly, lx, q_ok, split = _lowres_tile(H, W, SPLITS, TX, TQ)
    rows, cols = _tap_masks(ly, lx, H, W, R, K)
    x_pix = (ly.to(tl.int64) * stride_xh + lx.to(tl.int64) * stride_xw)[None, :]
    return b, g, ly, lx, q_ok, split, rows, cols, x_pix


@triton.jit
def _phase(ly, lx, ok, OH, OW, PHASE: tl.constexpr, S: tl.constexpr):
    """Output row, column and in-image mask of phase PHASE (row-major in s x s) of each pixel."""
    oy = ly * S + PHASE // S
    ox = lx * S + PHASE % S
    return oy.to(tl.int64), ox.to(tl.int64), ok & (oy < OH) & (ox < OW)


@triton.jit
def _pass_masks(m_base, stride_mc, stride_mh, stride_mw, ly, lx, ok, OH, OW,
                PH0: tl.constexpr, PH: tl.constexpr, S: tl.constexpr, K2: tl.constexpr, SOFTMAX: tl.constexpr,
                ACC: tl.constexpr):
    """Masks of phases PH0 .. PH0+PH-1, a tuple indexed ``p * K2 + k``: the max-subtracted
    softmax over k of the logits (SOFTMAX), else the masks as stored. Also returns the
    log-sum-exp per phase (a tuple of PH; zeros without SOFTMAX)."""
    ms = ()
    lses = ()
    for p in tl.static_range(PH):
        oy, ox, pok = _phase(ly, lx, ok, OH, OW, PH0 + p, S)
        ptrs = m_base + oy * stride_mh + ox * stride_mw
        vals = ()
        for k in tl.static_range(K2):
            vals = vals + (tl.load(ptrs + k * stride_mc, mask=pok, other=0.0).to(ACC),)
        if SOFTMAX:
            mx = vals[0]
            for k in tl.static_range(1, K2):
                mx = tl.maximum(mx, vals[k])
            den = tl.zeros_like(mx)
            exps = ()
            for k in tl.static_range(K2):
                e = tl.exp(vals[k] - mx)
                exps = exps + (e,)
                den += e
            inv = 1.0 / den
            for k in tl.static_range(K2):
                ms = ms + (exps[k] * inv,)
            lses = lses + (mx + tl.log(den),)
        else:
            ms = ms + vals
            lses = lses + (tl.zeros_like(vals[0]),)
    return ms, lses


@triton.jit
def _sigmoid_gate(gate_ptr, b, ly, lx, ok, stride_gb, stride_gh, stride_gw, ACC: tl.constexpr):
    gl = tl.load(gate_ptr + b * stride_gb + ly.to(tl.int64) * stride_gh + lx.to(tl.int64) * stride_gw,
                 mask=ok, other=0.0).to(ACC)
    return 1.0 / (1.0 + tl.exp(-gl))


@triton.jit
def _tap_masks(ly, lx, H, W, R, K: tl.constexpr):
    """In-image masks of the K tap rows and K tap columns around (ly, lx). ``R`` (= K // 2)
    is a run-time value on purpose: a compile-time shift would give each tap its own
    alignment, hence its own load layout, and layout conversions inside the channel loop."""
    rows = ()
    cols = ()
    for i in tl.static_range(K):
        rows = rows + ((ly + i - R >= 0) & (ly + i - R < H),)
        cols = cols + ((lx + i - R >= 0) & (lx + i - R < W),)
    return rows, cols


@triton.jit
def _tap_tile(x_ptrs, c_ok, rows, cols, stride_xh, stride_xw, k: tl.constexpr, K: tl.constexpr, ACC: tl.constexpr):
    """Tap ``k``'s (BLOCK_C, TQ) tile of x in ACC (zero outside the image), and the pointer tile
    stepped to tap k + 1: the K x K window is walked row by row, so one pointer tile serves every
    tap and no per-tap address stays live."""
    v = tl.load(x_ptrs, mask=c_ok[:, None] & (rows[k // K] & cols[k % K])[None, :], other=0.0).to(ACC)
    return v, x_ptrs + ((stride_xh - (K - 1) * stride_xw) if k % K == K - 1 else stride_xw)


@triton.jit(do_not_specialize=["R"])
def reassemble_fwd_kernel(
    x_ptr, m_ptr, gate_ptr, en_ptr, out_ptr,
    C_GROUP, GROUPS, H, W, OH, OW, R, SPLITS, C_SPLIT,
    stride_xb, stride_xc, stride_xh, stride_xw,
    stride_mb, stride_mc, stride_mh, stride_mw,
    stride_gb, stride_gh, stride_gw,
    stride_eb, stride_ec, stride_eh, stride_ew,
    stride_ob, stride_oc, stride_oh, stride_ow,
    K: tl.constexpr, S: tl.constexpr, PH: tl.constexpr, SOFTMAX: tl.constexpr, GATE: tl.constexpr,
    ACC_FP64: tl.constexpr, TX: tl.constexpr, TQ: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """out[b, c, oy, ox] = sum_k m[b, g*K2 + k, oy, ox] * x[b, c, oy // S + k // K - R, ox // S + k % K - R]
    (zero outside the image), g = c // C_GROUP; m = softmax over k of the mask input with
    SOFTMAX, else the mask input. With GATE: out = G*en + (1 - G)*out, G = sigmoid(gate[b, oy // S, ox // S]).

    x_ptr: low-resolution features (B, GROUPS*C_GROUP, H, W). m_ptr: logits or masks
    (B, GROUPS*K*K, >= OH, >= OW). gate_ptr: gate logits (B, H, W) (GATE). en_ptr: (B, C, OH, OW)
    (GATE). out_ptr: (B, C, OH, OW), OH <= S*H, OW <= S*W (an encoder map smaller than S x the
    decoder's crops the output). All any strides (stride_<t><d>: element strides of x, m, g(ate),
    e(n), o(ut)). C_GROUP, GROUPS: channels per group, G. R: K // 2 (run time, see _tap_masks).
    K, S: kernel size, scale. PH: phases per pass (divides S*S). SOFTMAX, GATE: as above (FADE
    has GROUPS = 1). Tile: TQ low-resolution pixels (TQ // TX rows x TX columns) x BLOCK_C channels,
    channels C_SPLIT at a time (SPLITS programs per pixel tile). Loads: NCHW tiles pixel-fast
    (a warp's lanes on 32 neighbouring pixels of a row, channels in-thread); channels_last
    tiles channel-fast (16-byte vectors).

    Bytes per output pixel and channel (itemsize e), against the minimum e*(2 + 1/S^2) for en,
    out and x (plus 4*K2/C for the fp32 logits and 4/C for the gate): en and out e each
    (sector-complete over a program's phases); x e/S^2 times the tile's halo from L2,
    ((TQ/TX + 2R)(TX + 2R)/TQ: x2.25 at K = 5 for 4 x 32 and 8 x 8 tiles), and K2 L1 requests
    per x element per pass (one per tap, each serving the pass's PH phases); the logits and
    the gate once per channel split (SPLITS = cdiv(C_GROUP, C_SPLIT): x4 at C = 256).
    ``python -m bench.traffic`` gives the totals at the headline case.
    Grid: (SPLITS * cdiv(W, TX), cdiv(H, TQ // TX), B * GROUPS).
    """
    K2: tl.constexpr = K * K
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    b, g, ly, lx, q_ok, split, rows, cols, x_pix = _program(H, W, R, SPLITS, GROUPS, stride_xh, stride_xw, K, TX, TQ)
    if GATE:
        gate = _sigmoid_gate(gate_ptr, b, ly, lx, q_ok, stride_gb, stride_gh, stride_gw, ACC)
    m_base = m_ptr + b * stride_mb + (g * K2).to(tl.int64) * stride_mc
    for ph0 in tl.static_range(0, S * S, PH):
        ms, _ = _pass_masks(m_base, stride_mc, stride_mh, stride_mw, ly, lx, q_ok, OH, OW, ph0, PH, S, K2, SOFTMAX, ACC)
        for c0 in range(split * C_SPLIT, tl.minimum(split * C_SPLIT + C_SPLIT, C_GROUP), BLOCK_C):
            cg = c0 + tl.arange(0, BLOCK_C)
            c_ok = cg < C_GROUP
            c = (g * C_GROUP + cg).to(tl.int64)[:, None]
            x_ptrs = x_ptr + b * stride_xb + c * stride_xc + x_pix - R * stride_xh - R * stride_xw
            accs = ()
            for p in tl.static_range(PH):
                accs = accs + (tl.zeros((BLOCK_C, TQ), ACC),)
            for k in tl.static_range(K2):
                v, x_ptrs = _tap_tile(x_ptrs, c_ok, rows, cols, stride_xh, stride_xw, k, K, ACC)
                new = ()
                for p in tl.static_range(PH):
                    new = new + (accs[p] + ms[p * K2 + k][None, :] * v,)
                accs = new
            for p in tl.static_range(PH):
                oy, ox, pok = _phase(ly, lx, q_ok, OH, OW, ph0 + p, S)
                io = c_ok[:, None] & pok[None, :]
                val = accs[p]
                if GATE:
                    e = tl.load(en_ptr + b * stride_eb + c * stride_ec + (oy * stride_eh + ox * stride_ew)[None, :],
                                mask=io, other=0.0).to(ACC)
                    val += gate[None, :] * (e - val)
                tl.store(out_ptr + b * stride_ob + c * stride_oc + (oy * stride_oh + ox * stride_ow)[None, :],
                         val.to(out_ptr.dtype.element_ty), mask=io)


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
    NCHW tiles (channels held in-thread) and a 3-step shuffle for channels_last ones. Bytes per
    output pixel and channel (itemsize e): minimum e for dout (+ e for en with GATE) and
    e/S^2 for x; requested, the same with x times its tile halo from L2 (as in the forward),
    plus 4*K2/C for the fp32 logit gradient written once.
    Grid: (cdiv(W, TX), cdiv(H, TQ // TX), B * GROUPS).
    """
    K2: tl.constexpr = K * K
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    b, g, ly, lx, q_ok, _, rows, cols, x_pix = _program(H, W, R, 1, GROUPS, stride_xh, stride_xw, K, TX, TQ)
    if GATE:
        gate = _sigmoid_gate(gate_ptr, b, ly, lx, q_ok, stride_gb, stride_gh, stride_gw, ACC)
        dgate = tl.zeros((TQ,), ACC)
    if SOFTMAX:
        dlo = ()
        for k in tl.static_range(K2):
            dlo = dlo + (tl.zeros((TQ,), ACC),)
    m_base = m_ptr + b * stride_mb + (g * K2).to(tl.int64) * stride_mc
    for ph0 in tl.static_range(0, S * S, PH):
        ms, lses = _pass_masks(m_base, stride_mc, stride_mh, stride_mw, ly, lx, q_ok, OH, OW, ph0, PH, S, K2, SOFTMAX, ACC)
        ds = ()
        for i in tl.static_range(PH * K2):
            ds = ds + (tl.zeros((TQ,), ACC),)
        if GATE:
            edots = ()
            for p in tl.static_range(PH):
                edots = edots + (tl.zeros((TQ,), ACC),)
        for c0 in range(0, C_GROUP, BLOCK_C):
            cg = c0 + tl.arange(0, BLOCK_C)
            c_ok = cg < C_GROUP
            c = (g * C_GROUP + cg).to(tl.int64)[:, None]
            douts = ()
            for p in tl.static_range(PH):
                oy, ox, pok = _phase(ly, lx, q_ok, OH, OW, ph0 + p, S)
                io = c_ok[:, None] & pok[None, :]
                dout = tl.load(dout_ptr + b * stride_db + c * stride_dc + (oy * stride_dh + ox * stride_dw)[None, :],
                               mask=io, other=0.0).to(ACC)
                douts = douts + (dout,)
                if GATE:
                    e = tl.load(en_ptr + b * stride_eb + c * stride_ec + (oy * stride_eh + ox * stride_ew)[None, :],
                                mask=io, other=0.0).to(ACC)
                    edots = edots[:p] + (edots[p] + tl.sum(dout * e, 0),) + edots[p + 1:]
            x_ptrs = x_ptr + b * stride_xb + c * stride_xc + x_pix - R * stride_xh - R * stride_xw
            for k in tl.static_range(K2):
                v, x_ptrs = _tap_tile(x_ptrs, c_ok, rows, cols, stride_xh, stride_xw, k, K, ACC)
                new = ()
                for p in tl.static_range(PH):
                    new = new + (ds[p * K2 + k] + tl.sum(douts[p] * v, 0),)
                for p in tl.static_range(PH):
                    ds = ds[:p * K2 + k] + (new[p],) + ds[p * K2 + k + 1:]
        for p in tl.static_range(PH):
            oy, ox, pok = _phase(ly, lx, q_ok, OH, OW, ph0 + p, S)
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
            pix = (b * GROUPS * K2 + g * K2) * OH * OW + oy * OW + ox
            for k in tl.static_range(K2):
                dk = ds[p * K2 + k] * keep
                if SOFTMAX:
                    dk = ms[p * K2 + k] * (dk - mdm)
                    dlo = dlo[:k] + (dlo[k] + tl.where(pok, dk, 0.0),) + dlo[k + 1:]
                tl.store(dm_ptr + pix + k * OH * OW, dk, mask=pok)
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
    channel block and pass it loads PH*K2 shifted dout tiles (each dout element is
    requested K2 times in all, one per tap, from L1/L2, and read once from DRAM: per output
    pixel and channel, minimum e for dout and e/S^2 for dx; requested, dout times the tile's
    halo, (TQ/TX + 2R)(TX + 2R)/TQ, from L2). Passes after the first add to what the first wrote. lse_ptr: (B, OH, OW) contiguous (SOFTMAX).
    dx_ptr: (B, C, H, W) any strides (stride_x*). Other arguments as in ``reassemble_bwd_kernel``.
    Grid: (cdiv(W, TX), cdiv(H, TQ // TX), B * GROUPS).
    """
    K2: tl.constexpr = K * K
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    b = (tl.program_id(2) // GROUPS).to(tl.int64)
    g = tl.program_id(2) % GROUPS
    ly, lx, q_ok, split = _lowres_tile(H, W, SPLITS, TX, TQ)
    m_base = m_ptr + b * stride_mb + (g * K2).to(tl.int64) * stride_mc
    for ph0 in tl.static_range(0, S * S, PH):
        ws = ()
        for k in tl.static_range(K2):
            ny = ly - (k // K) + R
            nx = lx - (k % K) + R
            n_ok = q_ok & (ny >= 0) & (ny < H) & (nx >= 0) & (nx < W)
            if GATE:
                keep = 1.0 - _sigmoid_gate(gate_ptr, b, ny, nx, n_ok, stride_gb, stride_gh, stride_gw, ACC)
            for p in tl.static_range(PH):
                oy, ox, pok = _phase(ny, nx, n_ok, OH, OW, ph0 + p, S)
                m = tl.load(m_base + k * stride_mc + oy * stride_mh + ox * stride_mw, mask=pok, other=0.0).to(ACC)
                if SOFTMAX:
                    m = tl.exp(m - tl.load(lse_ptr + (b * OH + oy) * OW + ox, mask=pok, other=0.0))
                if GATE:
                    m = m * keep
                ws = ws + (tl.where(pok, m, 0.0),)
        for c0 in range(split * C_SPLIT, tl.minimum(split * C_SPLIT + C_SPLIT, C_GROUP), BLOCK_C):
            cg = c0 + tl.arange(0, BLOCK_C)
            c_ok = cg < C_GROUP
            c = (g * C_GROUP + cg).to(tl.int64)[:, None]
            io = c_ok[:, None] & q_ok[None, :]
            # (lx + R - R: the pixels' alignment hidden from the compiler, so this store takes the
            # gathers' one-pixel-per-thread layout rather than a vectorised one of its own)
            dx_pix = ly.to(tl.int64) * stride_xh + (lx + R - R).to(tl.int64) * stride_xw
            dx_ptrs = dx_ptr + b * stride_xb + c * stride_xc + dx_pix[None, :]
            if ph0 == 0:
                acc = tl.zeros((BLOCK_C, TQ), ACC)
            else:
                acc = tl.load(dx_ptrs, mask=io, other=0.0).to(ACC)
            # one pointer tile stepped across the taps (tap k reads the neighbour q - (i - R, j - R))
            d_ptrs = (dout_ptr + b * stride_db + c * stride_dc
                      + (((ly + R) * S).to(tl.int64) * stride_dh + ((lx + R) * S).to(tl.int64) * stride_dw)[None, :])
            for k in tl.static_range(K2):
                for p in tl.static_range(PH):
                    w = ws[k * PH + p]
                    phase = ((ph0 + p) // S) * stride_dh + ((ph0 + p) % S) * stride_dw
                    d = tl.load(d_ptrs + phase, mask=c_ok[:, None] & (w != 0.0)[None, :], other=0.0)
                    acc += w[None, :] * d.to(ACC)
                d_ptrs -= (S * stride_dh - (K - 1) * S * stride_dw) if k % K == K - 1 else S * stride_dw
            tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=io)


def tile_config(x: torch.Tensor, c_group: int, kernel_size: int, scale: int, kernel: str = "fwd") -> dict:
    """Tile and pass sizes from static properties only (layout, dtype, channels, K, s), so a
    traced or exported call makes no guard on the spatial sizes.

    ``kernel``: "fwd", "bwd" or "feat" (the three kernels). Forward, NCHW-like x (pixel-fast): 4 warps side by side along pixels (TQ = 128 = 4 rows x
    32), each thread one pixel and BLOCK_C = 4 channels. Forward, channels_last x: 16 channels
    of a pixel as 16-byte vectors (2 threads in bf16, 4 in fp32), tiles 8 pixels wide (8 x 8 or
    4 x 8: the K x K windows' halo stays near that of NCHW tiles). Backward, both layouts: one pixel per
    thread and its channels in-thread (the channel sums of the mask gradient stay in-thread):
    1 channel for NCHW (2 spill with triton 3.6 on sm_90), 2 for channels_last (one 4- or
    8-byte vector; 1 for the mask-gradient kernel on sm_80). PH: the most phases whose masks
    (backward: masks and gradients, or neighbour weights) fit ``MASK_REGISTERS``. Each choice is
    the one the compile report (``python -m bench.aot``) shows spill-free at the headline case.
    Under Triton's CPU interpreter (the tests) channel blocks are at least 16 wide: the same
    code, run in a fraction of the time (``test_gpu_tiles_under_the_interpreter`` keeps the
    GPU's own tiles covered).
    """
    channels_last = x.stride(1) == 1 and x.shape[1] > 1
    k2, ss = kernel_size * kernel_size, scale * scale
    budget = MASK_REGISTERS
    if kernel != "fwd":  # 2 channels (one vector) for channels_last, 1 for NCHW, where 2 spill
        # with triton 3.6 on sm_90; sm_80's ptxas spills the mask-gradient kernel at 2 channels
        per_thread = 2 if channels_last and (kernel == "feat" or _launch.compute_capability(x) >= 90) else 1
        cfg = dict(TX=32, TQ=128, BLOCK_C=min(per_thread, next_pow2(c_group)))
        budget //= 2
    elif channels_last:  # 16 channels a pixel in 16-byte vectors: 64 (bf16) or 32 (fp32) pixels, 8 wide
        vec = max(1, 16 // x.element_size())
        block_c = min(16, next_pow2(c_group, vec))
        tq = 4 * (32 * vec // block_c)
        cfg = dict(TX=min(8, tq), TQ=tq, BLOCK_C=block_c)
        budget //= 2 if vec >= 8 else 1
    else:
        cfg = dict(TX=32, TQ=128, BLOCK_C=min(4, next_pow2(c_group)))
    ph = max([d for d in range(1, ss + 1) if ss % d == 0 and d * k2 <= budget] or [1])
    if interpreter_enabled():  # the interpreter's cost is per operation, not per element: wide
        cfg["BLOCK_C"] = max(cfg["BLOCK_C"], min(16, next_pow2(c_group)))  # blocks, same code
    return dict(cfg, PH=ph, num_warps=4)


def _strides(t, n=4):
    return t.stride() if t is not None else (0,) * n


def channel_splits(c_group: int, block_c: int) -> tuple[int, int]:
    """(splits, channels per split): programs per pixel tile along the channels, so that the
    grid has enough programs to fill the GPU (the masks are then computed once per split:
    25 loads and exponentials per output pixel against 64 * 25 multiply-adds)."""
    per = max(block_c, 64)
    return cdiv(c_group, per), per


def _grid(h, w, b_groups, cfg, splits=1):
    return (splits * cdiv(w, cfg["TX"]), cdiv(h, cfg["TQ"] // cfg["TX"]), b_groups)


def reassemble_fwd(x, masks, gate, en, out, kernel_size, group_size, scale, softmax):
    """Launch ``reassemble_fwd_kernel`` into ``out`` (B, C, OH, OW). ``gate``: (B, H, W) gate
    logits or None; ``en`` required with a gate. Softmax or gate need group_size == 1."""
    if (softmax or gate is not None) and group_size != 1:
        raise ValueError("the fused softmax / gate supports group_size == 1 only (FADE); carafe takes groups")
    b, c, h, w = x.shape
    if out.numel() == 0:
        return out
    cfg = tile_config(x, c // group_size, kernel_size, scale)
    splits, per = channel_splits(c // group_size, cfg["BLOCK_C"])
    wrap_triton(reassemble_fwd_kernel)[_grid(h, w, b * group_size, cfg, splits)](
        x, masks, gate, en, out, c // group_size, group_size, h, w, out.shape[2], out.shape[3], kernel_size // 2,
        splits, per,
        *x.stride(), *masks.stride(), *_strides(gate, 3), *_strides(en), *out.stride(),
        K=kernel_size, S=scale, SOFTMAX=softmax, GATE=gate is not None, ACC_FP64=x.dtype == torch.float64, **cfg,
    )
    return out


def reassemble_bwd(dout, x, masks, gate, en, dx, dmasks, dlo, kernel_size, group_size, scale, softmax):
    """Launch both backward kernels. Writes ``dx`` (B, C, H, W), ``dmasks`` (B, G*K2, OH, OW)
    contiguous fp32 and, with softmax (FADE), ``dlo`` (B, KP, H, W) view: the summed logit
    gradient and (with a gate) the gate-logit gradient at channel K2."""
    if (softmax or gate is not None) and group_size != 1:
        raise ValueError("the fused softmax / gate supports group_size == 1 only (FADE); carafe takes groups")
    b, c, h, w = x.shape
    oh, ow = dmasks.shape[2:]
    if dx.numel() == 0 or dmasks.numel() == 0:
        dx.zero_()
        dmasks.zero_()
        return
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    lse = torch.empty((b, oh, ow), dtype=acc, device=x.device) if softmax else None
    flags = dict(K=kernel_size, S=scale, SOFTMAX=softmax, GATE=gate is not None, ACC_FP64=acc == torch.float64)
    cfg = tile_config(x, c // group_size, kernel_size, scale, kernel="bwd")
    grid = _grid(h, w, b * group_size, cfg)
    wrap_triton(reassemble_bwd_kernel)[grid](
        x, masks, gate, en, dout, dmasks, dlo, lse, c // group_size, group_size, h, w, oh, ow, kernel_size // 2,
        *x.stride(), *masks.stride(), *_strides(gate, 3), *_strides(en), *dout.stride(), *_strides(dlo),
        **flags, **cfg,
    )
    cfg = tile_config(dx, c // group_size, kernel_size, scale, kernel="feat")
    splits, per = channel_splits(c // group_size, cfg["BLOCK_C"])
    wrap_triton(reassemble_bwd_feat_kernel)[_grid(h, w, b * group_size, cfg, splits)](
        masks, lse, gate, dout, dx, c // group_size, group_size, h, w, oh, ow, kernel_size // 2, splits, per,
        *masks.stride(), *_strides(gate, 3), *dout.stride(), *dx.stride(), **flags, **cfg,
    )
