"""Shared ``@triton.jit`` helpers: the K x K window walk every kernel makes, and the tile a
reassembly program owns.

The window walk: a kernel visits the taps of a K x K window (K = 3 for the convolutions, any odd
K for the reassembly) row by row, tap k = i*K + j at offset (i - R, j - R). Instead of one pointer
tile per tap (K*K 64-bit address tiles live at once: registers, then spills) it keeps ONE pointer
tile and steps it from tap to tap (``window_step``); the in-image test of a tap is the AND of a
row mask and a column mask computed once per program (``tap_masks``: 2K masks, not K*K).

Reassembly tiles are (channels, pixels): a program owns TQ low-resolution pixels (TQ // TX rows x
TX columns) of one image and one mask group (``reassembly_program``), each pixel's s*s output
pixels ("phases") in the same thread (``phase``), and walks the channels in blocks
(``channel_block``).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def tap_masks(y, x, H, W, R, K: tl.constexpr, STATIC_R: tl.constexpr = False):
    """In-image masks of the K tap rows and K tap columns around (y, x): two tuples of K. Tap
    k = i*K + j is inside the image where ``rows[i] & cols[j]``, i.e. 0 <= y + i - R < H.

    In the reassembly ``R`` (= K // 2) is a run-time value on purpose: a compile-time shift would
    give each tap its own alignment, hence its own load layout, and layout conversions inside the
    channel loop. The convolutions pass a constant R with ``STATIC_R``: each bound is then written
    on the side that needs no addition (y >= 1 rather than y - 1 >= 0), which the compiler cannot
    do by itself (32-bit wrap-around) and which ptxas needs on sm_80 to keep the 3x3 weight
    gradient spill-free."""
    rows = ()
    cols = ()
    for i in tl.static_range(K):
        if STATIC_R:
            if i < R:
                rows = rows + ((y >= R - i) & (y - (R - i) < H),)
                cols = cols + ((x >= R - i) & (x - (R - i) < W),)
            else:
                rows = rows + ((y + (i - R) >= 0) & (y + (i - R) < H),)
                cols = cols + ((x + (i - R) >= 0) & (x + (i - R) < W),)
        else:
            rows = rows + ((y + i - R >= 0) & (y + i - R < H),)
            cols = cols + ((x + i - R >= 0) & (x + i - R < W),)
    return rows, cols


@triton.jit
def window_step(ptrs, k: tl.constexpr, K: tl.constexpr, step_h, step_w, WIDE: tl.constexpr = True):
    """``ptrs`` moved from tap k to tap k + 1 of a window walked row by row: one column right
    (``step_w``), or, after the last tap of a row, to the first tap of the next row. ``step_h``,
    ``step_w``: the element strides of one window row and column (negative to walk it mirrored,
    as the feature gradient's gather does)."""
    if WIDE:  # the row-end step's product in 64 bits
        return ptrs + ((step_h - (K - 1) * tl.cast(step_w, tl.int64)) if k % K == K - 1 else step_w)
    # 32 bits, for a caller that bounds (K - 1) * step_w on the host (the feature gradient: 64-bit
    # costs sm_80 a spill there)
    return ptrs + ((step_h - (K - 1) * step_w) if k % K == K - 1 else step_w)


@triton.jit
def load_tap(x_ptrs, c_ok, rows, cols, stride_xh, stride_xw, k: tl.constexpr, K: tl.constexpr, ACC: tl.constexpr):
    """Tap k's (BLOCK_C, TQ) tile of x in ACC (zero outside the image), and the pointer tile
    stepped to tap k + 1."""
    v = tl.load(x_ptrs, mask=c_ok[:, None] & (rows[k // K] & cols[k % K])[None, :], other=0.0).to(ACC)
    return v, window_step(x_ptrs, k, K, stride_xh, stride_xw)


@triton.jit
def lowres_tile(H, W, SPLITS, TX: tl.constexpr, TQ: tl.constexpr):
    """The program's low-resolution pixels (rows, columns, in-image mask, TQ each) and its
    channel split (grid axis 0 is split-major: the SPLITS programs of a tile run side by side)."""
    q = tl.arange(0, TQ)
    ly = tl.program_id(1) * (TQ // TX) + q // TX
    lx = (tl.program_id(0) // SPLITS) * TX + q % TX
    return ly, lx, (ly < H) & (lx < W), tl.program_id(0) % SPLITS


@triton.jit
def reassembly_program(H, W, R, SPLITS, GROUPS, stride_xh, stride_xw, K: tl.constexpr, TX: tl.constexpr,
                       TQ: tl.constexpr):
    """What a reassembly program owns: batch b, group g, its pixels (rows, columns, mask), its
    channel split, the in-image masks of its tap rows and columns, and the pixels' offsets in x."""
    b = (tl.program_id(2) // GROUPS).to(tl.int64)
    g = tl.program_id(2) % GROUPS
    ly, lx, q_ok, split = lowres_tile(H, W, SPLITS, TX, TQ)
    rows, cols = tap_masks(ly, lx, H, W, R, K)
    x_pix = (ly.to(tl.int64) * stride_xh + lx.to(tl.int64) * stride_xw)[None, :]
    return b, g, ly, lx, q_ok, split, rows, cols, x_pix


@triton.jit
def channel_block(c0, g, C_GROUP, BLOCK_C: tl.constexpr):
    """Channels c0 .. c0 + BLOCK_C - 1 of group g: the in-group mask (BLOCK_C,) and the channel
    indices as an int64 column (BLOCK_C, 1), ready to multiply a channel stride."""
    cg = c0 + tl.arange(0, BLOCK_C)
    return cg < C_GROUP, (g * C_GROUP + cg).to(tl.int64)[:, None]


@triton.jit
def phase(ly, lx, ok, OH, OW, PHASE: tl.constexpr, S: tl.constexpr):
    """Output row, column and in-image mask of phase PHASE (row-major in s x s) of each pixel."""
    oy = ly * S + PHASE // S
    ox = lx * S + PHASE % S
    return oy.to(tl.int64), ox.to(tl.int64), ok & (oy < OH) & (ox < OW)


@triton.jit
def pass_masks(m_base, stride_mc, stride_mh, stride_mw, ly, lx, ok, OH, OW,
               PH0: tl.constexpr, PH: tl.constexpr, S: tl.constexpr, K2: tl.constexpr, SOFTMAX: tl.constexpr,
               ACC: tl.constexpr):
    """Masks of phases PH0 .. PH0+PH-1, a tuple indexed ``p * K2 + k`` (a tuple of tensors is how a
    Triton kernel holds a register array: each entry is a (TQ,) tensor, indices are compile-time):
    the max-subtracted softmax over k of the logits (SOFTMAX), else the masks as stored. Also
    returns the log-sum-exp per phase (a tuple of PH; zeros without SOFTMAX)."""
    ms = ()
    lses = ()
    for p in tl.static_range(PH):
        oy, ox, pok = phase(ly, lx, ok, OH, OW, PH0 + p, S)
        ptrs = m_base + oy * stride_mh + ox * stride_mw
        vals = ()
        for k in tl.static_range(K2):  # the pointer tile stepped channel to channel: no k * stride product
            vals = vals + (tl.load(ptrs, mask=pok, other=0.0).to(ACC),)
            ptrs += stride_mc
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
def sigmoid_gate(gate_ptr, b, ly, lx, ok, stride_gb, stride_gh, stride_gw, ACC: tl.constexpr):
    """sigmoid of the gate logit at each low-resolution pixel (B, H, W), in ACC."""
    gl = tl.load(gate_ptr + b * stride_gb + ly.to(tl.int64) * stride_gh + lx.to(tl.int64) * stride_gw,
                 mask=ok, other=0.0).to(ACC)
    return 1.0 / (1.0 + tl.exp(-gl))
