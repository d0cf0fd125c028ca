"""CARAFE reassembly on tensor cores: the forward, ``reassemble_fwd_dot_kernel``, and the mask
(logit) gradient, ``reassemble_bwd_dot_kernel``, chosen by ``reassemble.reassemble_fwd`` and
``reassemble_bwd.reassemble_bwd`` for half inputs (and float32 where TF32 is allowed) at s >= 2
(the backward: s a power of two up to 8). The feature gradient on the same band matrices is in
``reassemble_dot_feat.py``.

The reassembly of one output row is a product with a band matrix. Output pixel (oy, ox) sums
``m_k * x[oy // s + i - R, ox // s + j - R]`` over the K*K taps k = i*K + j. For tap row i, the
pixels of a tile of TXO output columns read the low-resolution row ``y_i = oy // s + i - R`` at
the Q columns ``col0 .. col0 + Q - 1`` (col0 = ox0 // s - APAD), so their sum over j is
``M_i @ X_i``, with ``X_i`` the (Q, channels) slab of row y_i and ``M_i`` the (pixels, Q) matrix
holding each pixel's K masks of tap row i on its band (``M_i[p, q] = m_{iK+j}[p]`` where
``q = rel[p] + j``, zero elsewhere). A program owns DY output rows of one low-resolution row
(DY divides s; they read the same x rows) x TXO output columns = ROWS = 64 pixels:

    out[ROWS, C] = sum_i M_i[ROWS, Q] @ X_i[Q, C]

The K matrices (masks softmax-normalised, in x's dtype) are built once per program from the
logits, in registers, and serve every channel block; the channel loop is K loads of a (Q,
BLOCK_C) slab and K dots into one fp32 accumulator, then the gate blend and one store. A mask
register array per pixel (``reassemble_fwd_kernel``'s 100 fp32 values a thread) does not exist.
Where the band leaves most of Q empty the dots do up to Q/K times the useful multiply-adds, on
units that run them an order of magnitude faster than the FMA pipe.

The band matrices come from one (pixels, K2P) tile of each pixel's masks, softmax-normalised in
registers, with ``tl.gather`` along the taps (no layout conversion or memory round trip per tap).
Choices checked in the compile report and the speed model (bench.tools.sass_model, sm_90, bf16
headline): 64 channels a step, two stages of slabs for 2-byte x (one for float32, whose second
stage halves the programs per SM), 4 warps.

Precision: the masks are rounded to x's dtype for the dot (bf16: 8 bits; they lie in [0, 1]),
accumulation is fp32 (fp64 for fp64), as SPEC.md asks; float32 runs its dots in TF32 only where
PyTorch's convolutions would (``helpers.dot_precision``), otherwise the FMA kernel runs.

The mask gradient is the same product transposed: ``D_i = dout @ X_i^T`` (pixels x Q) accumulates
over the channel steps in K fp32 accumulators, and each pixel's K2 values are gathered from its
band columns once at the end (``reassemble_bwd_dot_kernel``).

One difference from a per-tap sum, in the forward only: a slab holds the x columns of all the
tile's pixels, and a pixel's zero band entries multiply the others' columns too, so a non-finite
x value (inf, NaN) turns the outputs of its whole tile row (TXO columns) NaN, not only those
whose window holds it. (The mask gradient reads each pixel's own band columns of D only.)
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .helpers import LaunchPlan, batch_grids, cdiv, channel_fast, check_grid_axis1, next_pow2
from .window import sigmoid_gate

ROWS = 64  # output pixels a program owns (DY rows x TXO columns): one warpgroup's dot rows
MATRIX_BUDGET = 64 * 5 * 32  # elements of the K band matrices a program holds (K=5, Q=32 at s=2)


@triton.jit
def band_program(OH, OW, SPLITS, GROUPS, K: tl.constexpr, S: tl.constexpr, DY: tl.constexpr, TXO: tl.constexpr,
                 APAD: tl.constexpr):
    """What a dot-reassembly program owns: its channel split, batch b, group g, low-resolution row
    ly, the slab's first column col0, and its DY*TXO pixels (rows, columns, in-image mask) with
    ``rel``, each pixel's slab column of tap column j = 0."""
    split = tl.program_id(0) % SPLITS
    ox0 = (tl.program_id(0) // SPLITS) * TXO
    oy0 = tl.program_id(1) * DY
    b = (tl.program_id(2) // GROUPS).to(tl.int64)
    g = tl.program_id(2) % GROUPS
    r = tl.arange(0, DY * TXO)
    oy = oy0 + r // TXO
    ox = ox0 + r % TXO
    rel = ox // S - ox0 // S + (APAD - K // 2)
    return split, b, g, oy0 // S, ox0 // S - APAD, oy, ox, (oy < OH) & (ox < OW), rel


@triton.jit
def pixel_masks(m_ptr, b, g, oy, ox, pix_ok, stride_mb, stride_mc, stride_mh, stride_mw, K2: tl.constexpr,
                K2P: tl.constexpr, SOFTMAX: tl.constexpr, ACC: tl.constexpr):
    """The (pixels, K2P) tile of each pixel's K2 masks in ACC (zero past K2): softmax-normalised
    logits with SOFTMAX, else the masks as stored; and the log-sum-exp per pixel (SOFTMAX)."""
    k = tl.arange(0, K2P)
    tap_ok = (k < K2)[None, :]
    pix_off = (oy.to(tl.int64) * stride_mh + ox.to(tl.int64) * stride_mw)[:, None]
    masks = tl.load(m_ptr + b * stride_mb + (g * K2).to(tl.int64) * stride_mc + pix_off
                    + k.to(tl.int64)[None, :] * stride_mc, mask=pix_ok[:, None] & tap_ok, other=0.0).to(ACC)
    if SOFTMAX:
        masks = tl.where(tap_ok, masks, float("-inf"))
        mx = tl.max(masks, axis=1)
        masks = tl.exp(masks - mx[:, None])
        den = tl.sum(masks, axis=1)
        masks = masks * (1.0 / den)[:, None]
        lse = mx + tl.log(den)
    else:
        lse = tl.zeros_like(oy).to(ACC)  # not used
    return masks, lse


@triton.jit
def slab_load(x_ptrs, col_ok, y, H, c_ok):
    """A (Q, BLOCK_C) slab of x at row y (zero outside the image); ``y`` a (Q,) vector (a scalar &
    a tensor mask is an int in Triton's interpreter)."""
    return tl.load(x_ptrs, mask=(col_ok & (y >= 0) & (y < H))[:, None] & c_ok[None, :], other=0.0)


@triton.jit
def slab_base(x_ptr, b, ly, col0, W, stride_xb, stride_xh, stride_xw, Q: tl.constexpr, R: tl.constexpr):
    """The slab of tap row 0: its (Q, 1) pointers at row ly - R (channel 0), the in-image mask of
    its Q columns, and a (Q,) int zero (``slab_load``'s row vector)."""
    col = col0 + tl.arange(0, Q)
    x_base = x_ptr + b * stride_xb + (col.to(tl.int64) * stride_xw)[:, None] + (ly - R).to(tl.int64) * stride_xh
    return x_base, (col >= 0) & (col < W), tl.zeros((Q,), tl.int32)


@triton.jit
def dot_channels(c0, g, C_GROUP, BLOCK_C: tl.constexpr, EVEN_C: tl.constexpr):
    """Channels c0 .. c0 + BLOCK_C - 1 of group g: the in-group mask (all true with EVEN_C: no
    predicate) and the channel indices as an int64 row (1, BLOCK_C)."""
    cg = c0 + tl.arange(0, BLOCK_C)
    c_ok = (cg >= 0) if EVEN_C else (cg < C_GROUP)
    return c_ok, (g * C_GROUP + cg).to(tl.int64)[None, :]


@triton.jit
def lowres_gate(gate_ptr, b, ly, ox, pix_ok, stride_gb, stride_gh, stride_gw, S: tl.constexpr, ACC: tl.constexpr):
    """sigmoid of each pixel's gate logit gate[b, ly, ox // S], in ACC."""
    return sigmoid_gate(gate_ptr, b, ly, ox // S, pix_ok, stride_gb, stride_gh, stride_gw, ACC)


@triton.jit
def reassemble_fwd_dot_kernel(
    x_ptr, m_ptr, gate_ptr, en_ptr, out_ptr,
    C_GROUP, GROUPS, H, W, OH, OW, SPLITS, C_SPLIT,
    stride_xb, stride_xc, stride_xh, stride_xw,
    stride_mb, stride_mc, stride_mh, stride_mw,
    stride_gb, stride_gh, stride_gw,
    stride_eb, stride_ec, stride_eh, stride_ew,
    stride_ob, stride_oc, stride_oh, stride_ow,
    K: tl.constexpr, S: tl.constexpr, SOFTMAX: tl.constexpr, GATE: tl.constexpr, ACC_FP64: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, DY: tl.constexpr, TXO: tl.constexpr, Q: tl.constexpr, APAD: tl.constexpr,
    BLOCK_C: tl.constexpr, EVEN_C: tl.constexpr, K2P: tl.constexpr, SLABS_FIRST: tl.constexpr,
):
    """The function of ``reassemble.reassemble_fwd_kernel`` (same tensors, strides and flags).

    C_GROUP, GROUPS: channels per mask group, groups. H, W: x's size; OH, OW: out's. SPLITS,
    C_SPLIT: programs per pixel tile along the channels and the channels each takes. K, S: kernel
    size and scale. SOFTMAX: the masks are logits (softmax over the K*K taps). GATE: out =
    G*en + (1-G)*out, G = sigmoid(gate[b, oy // S, ox // S]). ACC_FP64: fp64 inputs (fp64
    accumulation). INPUT_PRECISION: tl.dot's ("tf32" / "ieee"; float32 only). DY, TXO: the
    program's output rows (DY divides S) and columns, DY*TXO pixels. Q: columns of x a tile row
    reads (a power of two >= TXO/S + K - 1 + APAD - K//2). APAD: col0 = ox0 // S - APAD (>= K//2;
    a multiple of the vector width along x's rows, so NCHW slabs load as aligned vectors).
    BLOCK_C: channels a step. EVEN_C: BLOCK_C divides C_SPLIT and C_GROUP (no channel mask). K2P:
    next_pow2(K*K). SLABS_FIRST: a channel step issues its K slab loads (and the en tile's) before
    its first dot, instead of one slab before each dot (each dot waits on its own load).
    Grid: (SPLITS * cdiv(OW, TXO), cdiv(OH, DY), B * GROUPS).
    """
    R: tl.constexpr = K // 2
    K2: tl.constexpr = K * K
    RW: tl.constexpr = DY * TXO
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    split, b, g, ly, col0, oy, ox, pix_ok, rel = band_program(OH, OW, SPLITS, GROUPS, K, S, DY, TXO, APAD)

    # the (RW, K2P) tile of each pixel's K2 masks (softmax-normalised), then the K band matrices
    # (RW, Q) in x's dtype, gathered from it along the taps (tl.gather: no memory round trip)
    masks, _ = pixel_masks(m_ptr, b, g, oy, ox, pix_ok, stride_mb, stride_mc, stride_mh, stride_mw, K2, K2P, SOFTMAX,
                           ACC)
    q = tl.arange(0, Q)
    band = q[None, :] - rel[:, None]  # tap j of a row sits where band == j
    on_band = (band >= 0) & (band < K)
    tap = tl.where(on_band, band, 0)
    mats = ()
    for i in tl.static_range(K):
        mat = tl.gather(masks, tap + i * K, axis=1)
        mats = mats + (tl.where(on_band, mat, 0.0).to(x_ptr.dtype.element_ty),)

    if GATE:
        gate = lowres_gate(gate_ptr, b, ly, ox, pix_ok, stride_gb, stride_gh, stride_gw, S, ACC)

    x_base, col_ok, zero_q = slab_base(x_ptr, b, ly, col0, W, stride_xb, stride_xh, stride_xw, Q, R)
    out_off = (oy.to(tl.int64) * stride_oh + ox.to(tl.int64) * stride_ow)[:, None]
    en_off = (oy.to(tl.int64) * stride_eh + ox.to(tl.int64) * stride_ew)[:, None]
    c_start = split * C_SPLIT
    for c0 in range(c_start, tl.minimum(c_start + C_SPLIT, C_GROUP), BLOCK_C):
        c_ok, c = dot_channels(c0, g, C_GROUP, BLOCK_C, EVEN_C)
        x_ptrs = x_base + c * stride_xc
        acc = tl.zeros((RW, BLOCK_C), ACC)
        if SLABS_FIRST:  # every load of the step in flight before the first dot waits on one
            io = pix_ok[:, None] & c_ok[None, :]
            slabs = ()
            for i in tl.static_range(K):
                slabs = slabs + (slab_load(x_ptrs, col_ok, zero_q + (ly + (i - R)), H, c_ok),)
                x_ptrs += stride_xh
            if GATE:
                en_v = tl.load(en_ptr + b * stride_eb + c * stride_ec + en_off, mask=io, other=0.0).to(ACC)
            for i in tl.static_range(K):
                acc = tl.dot(mats[i], slabs[i], acc, input_precision=INPUT_PRECISION, out_dtype=ACC)
        else:
            for i in tl.static_range(K):
                slab = slab_load(x_ptrs, col_ok, zero_q + (ly + (i - R)), H, c_ok)
                acc = tl.dot(mats[i], slab, acc, input_precision=INPUT_PRECISION, out_dtype=ACC)
                x_ptrs += stride_xh
            io = pix_ok[:, None] & c_ok[None, :]  # after the dots, as before SLABS_FIRST: the same code
            if GATE:
                en_v = tl.load(en_ptr + b * stride_eb + c * stride_ec + en_off, mask=io, other=0.0).to(ACC)
        if GATE:
            acc += gate[:, None] * (en_v - acc)
        tl.store(out_ptr + b * stride_ob + c * stride_oc + out_off, acc.to(out_ptr.dtype.element_ty), mask=io)


@triton.jit
def reassemble_bwd_dot_kernel(
    x_ptr, m_ptr, gate_ptr, en_ptr, dout_ptr, dm_ptr, dlo_ptr, lse_ptr,
    C_GROUP, GROUPS, H, W, OH, OW,
    stride_xb, stride_xc, stride_xh, stride_xw,
    stride_mb, stride_mc, stride_mh, stride_mw,
    stride_gb, stride_gh, stride_gw,
    stride_eb, stride_ec, stride_eh, stride_ew,
    stride_db, stride_dc, stride_dh, stride_dw,
    stride_lob, stride_loc, stride_loh, stride_low,
    K: tl.constexpr, S: tl.constexpr, SOFTMAX: tl.constexpr, GATE: tl.constexpr, ACC_FP64: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, DY: tl.constexpr, TXO: tl.constexpr, Q: tl.constexpr, APAD: tl.constexpr,
    BLOCK_C: tl.constexpr, EVEN_C: tl.constexpr, K2P: tl.constexpr, EN_AFTER_DOTS: tl.constexpr,
):
    """The function of ``reassemble_bwd.reassemble_bwd_kernel`` (same tensors, strides, flags and
    outputs: the mask or logit gradient, the log-sum-exp, the phase-summed logit gradient and
    the gate-logit gradient in ``dlo``) on the forward's band matrices, transposed: per tap row i,
    ``D_i[pixels, Q] = dout[pixels, C] @ X_i[Q, C]^T`` accumulates over the channel steps, and a
    pixel's D[k] for k = i*K + j is D_i at its band column (``tl.gather``). With GATE, sum_c
    dout * en per pixel rides along; sum_c dout * u = sum_k m_k D_k needs no second pass.

    Needs DY == S (a program owns each of its low-resolution pixels' S*S phases, whose
    logit gradients it sums into ``dlo``) and K*K < K2P (the gate column). No channel splits.
    EN_AFTER_DOTS: sum dout * en after a step's dots, not before them (sm_90: the dots then wait
    on the slabs alone; sm_80's mma.sync would hold the en tile in registers across them).
    Other arguments as in ``reassemble_fwd_dot_kernel``. Grid: (cdiv(OW, TXO), cdiv(OH, DY),
    B * GROUPS).
    """
    R: tl.constexpr = K // 2
    K2: tl.constexpr = K * K
    RW: tl.constexpr = DY * TXO
    KL: tl.constexpr = K2 + 1 if GATE else K2  # dlo's channels written: the taps' and the gate's
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    _, b, g, ly, col0, oy, ox, pix_ok, rel = band_program(OH, OW, 1, GROUPS, K, S, DY, TXO, APAD)
    x_base, col_ok, zero_q = slab_base(x_ptr, b, ly, col0, W, stride_xb, stride_xh, stride_xw, Q, R)
    d_off = (oy.to(tl.int64) * stride_dh + ox.to(tl.int64) * stride_dw)[:, None]
    en_off = (oy.to(tl.int64) * stride_eh + ox.to(tl.int64) * stride_ew)[:, None]
    bands = ()  # bands[i]: D_i (RW, Q)
    for i in tl.static_range(K):
        bands = bands + (tl.zeros((RW, Q), ACC),)
    edot = tl.zeros((RW,), ACC)
    for c0 in range(0, C_GROUP, BLOCK_C):
        c_ok, c = dot_channels(c0, g, C_GROUP, BLOCK_C, EVEN_C)
        io = pix_ok[:, None] & c_ok[None, :]
        dout = tl.load(dout_ptr + b * stride_db + c * stride_dc + d_off, mask=io, other=0.0)
        if GATE:
            en_v = tl.load(en_ptr + b * stride_eb + c * stride_ec + en_off, mask=io, other=0.0)
            if not EN_AFTER_DOTS:
                edot += tl.sum(dout.to(ACC) * en_v.to(ACC), axis=1)
        dout_x = dout.to(x_ptr.dtype.element_ty)
        x_ptrs = x_base + c * stride_xc
        new = ()
        for i in tl.static_range(K):
            slab = slab_load(x_ptrs, col_ok, zero_q + (ly + (i - R)), H, c_ok)
            new = new + (tl.dot(dout_x, tl.trans(slab), bands[i], input_precision=INPUT_PRECISION, out_dtype=ACC),)
            x_ptrs += stride_xh
        bands = new
        if GATE and EN_AFTER_DOTS:  # speed model, bf16 headline, sm_90: 49.3 -> 42.7 us
            edot += tl.sum(dout.to(ACC) * en_v.to(ACC), axis=1)

    # each pixel's D[k] (RW, K2P) from its band columns, then the masks (recomputed) and gradients
    k = tl.arange(0, K2P)
    col_of_k = tl.minimum(rel[:, None] + (k % K)[None, :], Q - 1)  # in the slab (clamped past K2)
    d = tl.zeros((RW, K2P), ACC)
    for i in tl.static_range(K):
        d = tl.where((k // K == i)[None, :], tl.gather(bands[i], col_of_k, axis=1), d)
    d = tl.where((k < K2)[None, :], d, 0.0)
    masks, lse = pixel_masks(m_ptr, b, g, oy, ox, pix_ok, stride_mb, stride_mc, stride_mh, stride_mw, K2, K2P, SOFTMAX,
                             ACC)
    if GATE:
        gate = lowres_gate(gate_ptr, b, ly, ox, pix_ok, stride_gb, stride_gh, stride_gw, S, ACC)
        dgate = tl.where(pix_ok, gate * (1.0 - gate) * (edot - tl.sum(masks * d, axis=1)), 0.0)
        d = d * (1.0 - gate)[:, None]
    if SOFTMAX:
        d = masks * (d - tl.sum(masks * d, axis=1)[:, None])
    plane = tl.cast(OH, tl.int64) * OW  # one (OH, OW) plane of dm
    pix = oy.to(tl.int64) * OW + ox
    tl.store(dm_ptr + (b * GROUPS + g) * K2 * plane + k.to(tl.int64)[None, :] * plane + pix[:, None], d,
             mask=pix_ok[:, None] & (k < K2)[None, :])
    if SOFTMAX:
        tl.store(lse_ptr + b * plane + pix, lse, mask=pix_ok)
        # the logit gradient summed over each low-resolution pixel's S*S phases, the gate's at K2
        d = tl.where(pix_ok[:, None], d, 0.0)
        if GATE:
            d = tl.where((k == K2)[None, :], dgate[:, None], d)
        per_pixel = tl.sum(tl.sum(tl.reshape(d, (DY, TXO // S, S, K2P)), axis=2), axis=0)  # (TXO // S, K2P)
        lx = col0 + APAD + tl.arange(0, TXO // S)
        lo_ok = ((lx < W) & (tl.zeros_like(lx) + ly < H))[:, None] & (k < KL)[None, :]
        tl.store(dlo_ptr + b * stride_lob + ly.to(tl.int64) * stride_loh + (lx.to(tl.int64) * stride_low)[:, None]
                 + (k.to(tl.int64) * stride_loc)[None, :], per_pixel, mask=lo_ok)


def dot_tile(x, kernel_size: int, scale: int) -> dict | None:
    """The dot kernel's tile for ``x`` (a tensor or ``helpers.Spec``), K and s, or None where it
    does not apply (s = 1, or a band too wide for the register budget): DY the largest power of
    two dividing s with DY <= ROWS / 8, TXO = ROWS / DY, Q the slab width, APAD the alignment
    pad (a multiple of the 16-byte vector along x's rows for pixel-fast x), K2P = next_pow2(K*K)
    (the width of a pixel's mask tile)."""
    if scale < 2:
        return None
    r = kernel_size // 2
    vec = 1 if channel_fast(x) else max(1, 16 // x.element_size())
    apad = cdiv(r, vec) * vec
    dy = 1
    while scale % (2 * dy) == 0 and 2 * dy <= ROWS // 8:
        dy *= 2
    txo = ROWS // dy
    span = (txo - 1 + scale - 1) // scale  # the most low-resolution columns past a tile's first
    q = next_pow2(span + kernel_size + apad - r, 16)
    if kernel_size * ROWS * q > 2 * MATRIX_BUDGET:
        return None
    return dict(DY=dy, TXO=txo, Q=q, APAD=apad, K2P=next_pow2(kernel_size ** 2))


def dot_meta(x, kernel_size, scale, softmax, gated, precision, tile, block_c, c_group, num_stages,
             num_warps=4) -> dict:
    """The constexpr flags, tile (a dict of the kernel's tile constants) and launch options the
    dot kernels take."""
    return dict(K=kernel_size, S=scale, SOFTMAX=softmax, GATE=gated, ACC_FP64=x.dtype == torch.float64,
                INPUT_PRECISION=precision, BLOCK_C=block_c, EVEN_C=c_group % block_c == 0, **tile,
                num_warps=num_warps, num_stages=num_stages)


def reassemble_fwd_dot_plan(x, m_strides, gated, gate_strides, en_strides, out_shape, out_strides, kernel_size,
                            group_size, scale, softmax, precision, tile: dict, arch: int) -> LaunchPlan:
    """``reassemble_fwd_dot_kernel``'s launches (``x`` a ``Spec``; ``tile`` from ``dot_tile``;
    ``arch``: the target's compute capability)."""
    b, c, h, w = x.shape
    c_group = c // group_size
    # float32 channels_last x on sm_90 (wgmma) past one 64-channel step: every load of a
    # 32-channel step (128-byte slab rows, as 64 channels of 2-byte x) before its dots. Speed
    # model, float32 headline (triton 3.6): 162 -> 126 registers, three programs an SM, 101.0 ->
    # 77.2 us. Not NCHW (64 channels keep four programs an SM there: 74.2 -> 100.3 us), sm_80
    # (mma.sync: 258 -> 412 us), other targets or float64 (not modelled)
    slabs_first = x.dtype == torch.float32 and channel_fast(x) and arch == 90 and c_group > 64
    block_c = min(32 if slabs_first else 64, next_pow2(c_group, 16))
    oh, ow = out_shape[2], out_shape[3]
    col_tiles, row_tiles = cdiv(ow, tile["TXO"]), cdiv(oh, tile["DY"])
    check_grid_axis1(row_tiles, "reassembly (output rows: the height is too large)")
    # channel splits only where the pixel tiles alone leave an H100's 132 SMs short of 4 programs
    # each (each split rebuilds the band matrices); none for symbolic sizes (no guard on them)
    steps, tiles = cdiv(c_group, block_c), col_tiles * row_tiles * b * group_size
    splits = max(1, min(steps, cdiv(4 * 132, tiles))) if isinstance(tiles, int) else 1
    per = cdiv(steps, splits) * block_c
    splits = cdiv(c_group, per)
    args = (c_group, group_size, h, w, oh, ow, splits, per, *x.stride(), *m_strides, *gate_strides, *en_strides,
            *out_strides)
    # two stages of slabs for 2-byte x; float32's would halve the programs per SM
    meta = dot_meta(x, kernel_size, scale, softmax, gated, precision, tile, block_c, c_group,
                    num_stages=2 if x.element_size() <= 2 else 1)
    meta["SLABS_FIRST"] = slabs_first
    return LaunchPlan(batch_grids(b, group_size, "reassembly (mask groups)", (splits * col_tiles, row_tiles)), args,
                      meta, kernel=reassemble_fwd_dot_kernel)


def reassemble_bwd_dot_plan(x, m_strides, gated, gate_strides, en_strides, dout_strides, dlo_strides, dmasks_shape,
                            kernel_size, group_size, scale, softmax, precision, arch: int) -> LaunchPlan | None:
    """``reassemble_bwd_dot_kernel``'s launches, or None where it does not apply: K = 1 (no gate
    column past the taps), s = 1, or a tile that splits a low-resolution pixel's phases (s not a
    power of two up to 8)."""
    tile = dot_tile(x, kernel_size, scale)
    if kernel_size < 2 or tile is None or tile["DY"] != scale:
        return None
    b, c, h, w = x.shape
    c_group = c // group_size
    # 64 channels a step for 2-byte x, 32 for float32 (64 with two stages: 255 registers) and,
    # on sm_90, for channels_last x (bf16 headline, speed model: 53.7 -> 42.7 us, 177 -> 128
    # registers, two programs an SM -> four); two stages, but one for 2-byte x on sm_80 (two spill
    # 64 bytes there, 16-bit NCHW)
    half, hopper = x.element_size() <= 2, arch >= 90
    block_c = min(64 if half and not (hopper and channel_fast(x)) else 32, next_pow2(c_group, 16))
    oh, ow = dmasks_shape[2:]
    check_grid_axis1(cdiv(oh, tile["DY"]), "reassembly (output rows: the height is too large)")
    args = (c_group, group_size, h, w, oh, ow, *x.stride(), *m_strides, *gate_strides, *en_strides, *dout_strides,
            *dlo_strides)
    meta = dot_meta(x, kernel_size, scale, softmax, gated, precision, tile, block_c, c_group,
                    num_stages=1 if half and not hopper else 2)
    meta["EN_AFTER_DOTS"] = hopper
    grids = batch_grids(b, group_size, "reassembly (mask groups)", (cdiv(ow, tile["TXO"]), cdiv(oh, tile["DY"])))
    return LaunchPlan(grids, args, meta, kernel=reassemble_bwd_dot_kernel)

