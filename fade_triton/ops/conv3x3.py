"""A generic 3x3 'same' convolution in Triton (implicit GEMM on ``tl.dot``), forward and backward.

- ``conv3x3_kernel``: out = conv3x3(x; w) with optional epilogue terms (bias, per-tap bias counted
  only inside the image, a low-resolution addend read at (y // s, x // s), a gated addend). With
  ``FLIP`` it reads the weights mirrored: the transposed convolution, i.e. the input gradient.
- ``conv3x3_weight_grad_kernel``: the weight gradient's partial sums over chunks of rows (one
  tap row a program: its 3 taps from one read of each input tile, the gradient tile shifted per
  tap), reduced in a fixed order by the caller (no atomics).

FADE's semi-shift runs on these (``ops/fade/triton_impl.py``) with its 1x1 compressors folded into
the 3x3 (``ops/fade/fold.py``). Names read forward to backward: ``conv3x3_kernel`` ->
``conv3x3`` -> ``conv3x3_input_grad``; ``conv3x3_weight_grad_kernel`` -> ``conv3x3_weight_grad``.
Bytes each launch requests against its minimum: ``python -m bench.tools.traffic``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .helpers import (LaunchPlan, accumulator_dtype, batch_grids, cached_plan, cdiv, channel_fast, check_grid_axis1,
                      dot_precision, launch, next_pow2, slot_plan, spec, strides, target_of)
from . import helpers
from .window import tap_masks, window_step


@triton.jit
def tap_offset(t: tl.constexpr, stride_h, stride_w):
    """The element offset of 3x3 tap t (row-major, centre 4) from the window's centre, as sums of
    the strides (no products); a zero shift adds nothing, so the centre column keeps its
    pointer's alignment."""
    dy: tl.constexpr = t // 3 - 1
    dx: tl.constexpr = t % 3 - 1
    if dy == 0:
        if dx == 0:
            return 0
        return stride_w if dx > 0 else -stride_w
    row = stride_h if dy > 0 else -stride_h
    if dx == 0:
        return row
    return row + stride_w if dx > 0 else row - stride_w


@triton.jit
def conv3x3_rows(x_ptr, pix, w_ptr, y, x, H, W, C_IN, W_OUT, n, stride_xc, stride_xh, stride_wt, stride_wi, stride_wo,
                 acc_dtype: tl.constexpr, FLIP: tl.constexpr, INPUT_PRECISION: tl.constexpr, EVEN_K: tl.constexpr,
                 EVEN_WK: tl.constexpr, EVEN_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """``conv3x3_kernel``'s reduction where its tile spans whole rows (FOLD_X): the (BLOCK_P,
    BLOCK_N) sum over the input channels and the 9 taps for pixels (y, x) of one image, x < W <=
    the tile's width; ``x_ptr``: the image's origin, ``pix``: (BLOCK_P, 1) element offsets of
    (y, x) from it.

    A channel step loads the tile at the 3 tap rows (row shifts keep the tile's alignment) and
    multiplies each by the weights of its 3 tap columns, into the accumulator of that column
    (``left``, ``centre``, ``right``: the column's taps summed at the input pixel p). The output
    is ``centre[p] + left[p - 1] + right[p + 1]`` within the row (zero past its ends: the image's
    padding), shifted once, after the loop."""
    BLOCK_P: tl.constexpr = y.shape[0]
    BLOCK_N: tl.constexpr = n.shape[0]
    x_ok = x < W
    left = tl.zeros((BLOCK_P, BLOCK_N), dtype=acc_dtype)
    centre = tl.zeros((BLOCK_P, BLOCK_N), dtype=acc_dtype)
    right = tl.zeros((BLOCK_P, BLOCK_N), dtype=acc_dtype)
    for i0 in tl.range(0, C_IN, BLOCK_K):
        i = i0 + tl.arange(0, BLOCK_K)
        i_ok = (i < C_IN) | EVEN_K
        a_ptrs = x_ptr + i.to(tl.int64)[None, :] * stride_xc + pix - stride_xh
        w_ptrs = w_ptr + i.to(tl.int64)[:, None] * stride_wi + n[None, :] * stride_wo
        w_ok = (i_ok | EVEN_WK)[:, None] & ((n < W_OUT) | EVEN_N)[None, :]
        for r in tl.static_range(3):
            row_ok = x_ok & (y >= 1 - r) & (y + (r - 1) < H)
            a = tl.load(a_ptrs, mask=row_ok[:, None] & i_ok[None, :], other=0.0)
            for j in tl.static_range(3):
                t = 3 * r + j
                wt = tl.load(w_ptrs + ((8 - t) if FLIP else t) * tl.cast(stride_wt, tl.int64), mask=w_ok, other=0.0)
                if j == 0:
                    left = tl.dot(a.to(wt.dtype), wt, left, input_precision=INPUT_PRECISION, out_dtype=acc_dtype)
                elif j == 1:
                    centre = tl.dot(a.to(wt.dtype), wt, centre, input_precision=INPUT_PRECISION, out_dtype=acc_dtype)
                else:
                    right = tl.dot(a.to(wt.dtype), wt, right, input_precision=INPUT_PRECISION, out_dtype=acc_dtype)
            a_ptrs += stride_xh
    p = tl.arange(0, BLOCK_P)
    before = tl.broadcast_to(tl.maximum(p - 1, 0)[:, None], (BLOCK_P, BLOCK_N))
    after = tl.broadcast_to(tl.minimum(p + 1, BLOCK_P - 1)[:, None], (BLOCK_P, BLOCK_N))
    centre += tl.where((x >= 1)[:, None], tl.gather(left, before, 0), 0.0)
    centre += tl.where((x + 1 < W)[:, None], tl.gather(right, after, 0), 0.0)
    return centre


WGRAD_ROWS = 16  # rows of one image per weight-gradient chunk (twice as many in large launches)
# programs a weight-gradient launch keeps with chunks of 2 * WGRAD_ROWS rows for it to take them
# (two programs an SM of a 132-SM GPU): half the partials for the unfold to read, half the tap
# sums' edge work, and enough programs left to fill the GPU
WGRAD_LONG_CHUNK_PROGRAMS = 264


@triton.jit
def conv3x3_kernel(
    x_ptr, w_ptr, out_ptr, bias_ptr, tap_bias_ptr, lo_ptr, add_ptr, gate_ptr,
    C_IN, C_OUT, W_OUT, H, W,
    stride_xb, stride_xc, stride_xh, stride_xw,
    stride_wt, stride_wi, stride_wo,
    stride_ob, stride_oc, stride_oh, stride_ow,
    stride_lb, stride_lc, stride_lh, stride_lw,
    stride_ab, stride_ac, stride_ah, stride_aw,
    stride_gb, stride_gh, stride_gw, stride_tb,
    SCALE: tl.constexpr, FLIP: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_TAP_BIAS: tl.constexpr,
    HAS_LO: tl.constexpr, HAS_ADD: tl.constexpr, GATED_ADD: tl.constexpr,
    ACC_FP64: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    EVEN_K: tl.constexpr, EVEN_WK: tl.constexpr, EVEN_N: tl.constexpr, CENTRED: tl.constexpr, FOLD_X: tl.constexpr,
    TX: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """out[b, n, y, x] = sum_{t, i} x[b, i, (y, x) + t] * w[t', i, n]  (3x3, zero padding 1)
                         + bias[n] + tap_bias[edge(y, x), n] + lo[b, n, y // SCALE, x // SCALE]
                         + g * add[b, n, y, x],   g = sigmoid(gate[b, y // SCALE, x // SCALE]) or 1;
    t' = t, or 8 - t with FLIP (a transposed convolution, for input gradients). Every optional
    term is on only with its HAS_* flag (its pointer may then be None).

    x_ptr: input (B, C_IN, H, W), any strides; cast to w's dtype for the dot. w_ptr: weights
    indexed (tap, in, out) by stride_wt/wi/wo (a packed (9, C, KP) tensor, or the same read
    transposed). out_ptr: (B, C_OUT, H, W), any strides. bias_ptr: (C_OUT,). tap_bias_ptr:
    (16, >= C_OUT), row stride stride_tb: per-tap biases summed over the taps inside the image,
    by the pixel's edge state edge(y, x) = 4 * (y == 0 | 2 (y == H - 1)) + (x == 0 | 2 (x == W - 1))
    (``ops/fade/fold.edge_bias_table``). lo_ptr: low-resolution addend (B, C_OUT, H', W'), any
    strides. add_ptr: (B, C_OUT, H, W) any strides. gate_ptr: gate logits (B, H', W'), any strides.
    C_IN, C_OUT, H, W: sizes; W_OUT: the weights' extent along out (>= C_OUT: packed weights are
    zero-padded to KP columns, so the weight load needs no column mask when BLOCK_N divides it);
    stride_<t><d>: element strides of x, w, out, l(o), a(dd), g(ate).
    ACC_FP64: accumulate in fp64 (fp64 inputs). INPUT_PRECISION: tl.dot's for fp32 ("tf32"/"ieee").
    EVEN_K: BLOCK_K divides C_IN (no channel mask in the loop); EVEN_WK: BLOCK_K divides the
    weights' extent along in (zero-padded past C_IN: no row mask on the weight loads, which then
    vectorise along a transposed view's contiguous in axis); EVEN_N: BLOCK_N divides W_OUT.
    CENTRED: each tap's tile is addressed from the window's centre (``tap_offset``), so the 3
    centre-column taps of a pixel-fast input keep its alignment (vector loads); otherwise one
    pointer tile walks the 9 taps (``window_step``: channel-fast inputs are aligned at every tap,
    and the walk holds fewer registers there).
    FOLD_X: the tile spans whole image rows (TX >= W, grid axis 0 of 1), so no tap column leaves
    it: each channel step loads the 3 row-shifted tiles only (vector loads along W for
    pixel-fast inputs, whose alignment a row shift keeps, along the channels for channel-fast
    ones; software-pipelined with num_stages >= 2) and each feeds 3 dots, one per
    tap column, into 3 accumulators; the epilogue shifts the two side columns' accumulators by one
    pixel (``tl.gather``, once per program) and adds them. Without it, every tap is a load.

    Tile: BLOCK_P output pixels as (BLOCK_P // TX) rows x TX columns, times BLOCK_N output
    channels; the reduction runs over input-channel blocks of BLOCK_K (outer loop) and the
    9 taps (inner, unrolled): the 9 shifted (BLOCK_P x BLOCK_K) tiles of one channel block
    are requested back to back, so the tile and its 1-pixel halo come from L2/DRAM once and
    8 of the 9 requests hit L1. Loads run along the contiguous axis: pixels for NCHW inputs,
    channels (vectorised) for channels_last; weights along their packed output channels, the
    whole packed weight once per program from L2.
    Grid: (cdiv(W, TX), cdiv(H, BLOCK_P // TX), B * cdiv(C_OUT, BLOCK_N)).
    """
    TY: tl.constexpr = BLOCK_P // TX
    acc_dtype: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    # which pixels (a TY x TX tile), which output channels (a block of BLOCK_N) and which image
    n_blocks = tl.cdiv(C_OUT, BLOCK_N)
    b = (tl.program_id(2) // n_blocks).to(tl.int64)
    n = (tl.program_id(2) % n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < C_OUT
    p = tl.arange(0, BLOCK_P)
    y = tl.program_id(1) * TY + p // TX
    x = tl.program_id(0) * TX + p % TX
    pix = (y.to(tl.int64) * stride_xh + x.to(tl.int64) * stride_xw)[:, None]
    acc = tl.zeros((BLOCK_P, BLOCK_N), dtype=acc_dtype)
    if FOLD_X:
        acc = conv3x3_rows(x_ptr + b * stride_xb, pix, w_ptr, y, x, H, W, C_IN, W_OUT, n, stride_xc, stride_xh,
                           stride_wt, stride_wi, stride_wo, acc_dtype, FLIP, INPUT_PRECISION, EVEN_K, EVEN_WK, EVEN_N,
                           BLOCK_K)
    else:
        rows, cols = tap_masks(y, x, H, W, 1, 3, True)
        for i0 in range(0, C_IN, BLOCK_K):
            i = i0 + tl.arange(0, BLOCK_K)
            i_ok = i < C_IN
            # one pointer tile at the window's centre; tap t adds its (row, column) shift, so the
            # centre column's taps keep the tile's alignment (vector loads along an aligned W)
            a_ptrs = x_ptr + b * stride_xb + i.to(tl.int64)[None, :] * stride_xc + pix
            if not CENTRED:  # walked from the top-left tap (channel-fast inputs: every tap is aligned)
                a_ptrs = a_ptrs - stride_xh - stride_xw
            w_ptrs = w_ptr + i.to(tl.int64)[:, None] * stride_wi + n[None, :] * stride_wo
            w_ok = (i_ok | EVEN_K | EVEN_WK)[:, None] & ((n < W_OUT) | EVEN_N)[None, :]
            for t in tl.static_range(9):
                inside = rows[t // 3] & cols[t % 3]
                a = tl.load(a_ptrs + tap_offset(t, stride_xh, stride_xw) if CENTRED else a_ptrs,
                            mask=inside[:, None] & (i_ok | EVEN_K)[None, :], other=0.0)
                wt = tl.load(w_ptrs + ((8 - t) if FLIP else t) * tl.cast(stride_wt, tl.int64), mask=w_ok, other=0.0)
                acc = tl.dot(a.to(wt.dtype), wt, acc, input_precision=INPUT_PRECISION, out_dtype=acc_dtype)
                if not CENTRED:
                    a_ptrs = window_step(a_ptrs, t, 3, stride_xh, stride_xw)
    # epilogue: the optional terms, then one store
    if HAS_BIAS:
        acc += tl.load(bias_ptr + n, mask=n_ok, other=0.0).to(acc_dtype)[None, :]
    p_ok = (y < H) & (x < W)
    io = p_ok[:, None] & n_ok[None, :]
    if HAS_TAP_BIAS:  # one gather from the (16, >= C_OUT) table of in-image tap-bias sums per edge state
        edge = (((y == 0).to(tl.int32) + 2 * (y == H - 1).to(tl.int32)) * 4
                + (x == 0).to(tl.int32) + 2 * (x == W - 1).to(tl.int32))
        acc += tl.load(tap_bias_ptr + edge[:, None] * stride_tb + n[None, :], mask=io, other=0.0).to(acc_dtype)
    ly = (y // SCALE).to(tl.int64)
    lx = (x // SCALE).to(tl.int64)
    if HAS_LO:
        acc += tl.load(lo_ptr + b * stride_lb + (ly * stride_lh + lx * stride_lw)[:, None] + n.to(tl.int64)[None, :] * stride_lc,
                       mask=io, other=0.0).to(acc_dtype)
    if HAS_ADD:
        extra = tl.load(add_ptr + b * stride_ab + (y.to(tl.int64) * stride_ah + x.to(tl.int64) * stride_aw)[:, None]
                        + n.to(tl.int64)[None, :] * stride_ac, mask=io, other=0.0).to(acc_dtype)
        if GATED_ADD:
            gl = tl.load(gate_ptr + b * stride_gb + ly * stride_gh + lx * stride_gw, mask=p_ok, other=0.0).to(acc_dtype)
            extra = extra / (1.0 + tl.exp(-gl))[:, None]
        acc += extra
    tl.store(out_ptr + b * stride_ob + (y.to(tl.int64) * stride_oh + x.to(tl.int64) * stride_ow)[:, None]
             + n.to(tl.int64)[None, :] * stride_oc, acc.to(out_ptr.dtype.element_ty), mask=io)


def conv3x3_config(x: torch.Tensor, c_out: int, target, flip: bool = False, gated: bool = False,
                   w_dtype: torch.dtype | None = None) -> dict:
    """Tile sizes for ``conv3x3_kernel`` from static properties (channels, layout, dtype,
    direction, target) and the width where it is a plain int, so a traced or exported call with
    symbolic sizes makes no guard on them.

    An input at most MAX_FOLD_WIDTH wide, in either layout, folds the tap columns on sm_90
    (FOLD_X): a tile of whole rows, next_pow2(W) wide and at least 128 pixels, 8 warps, two
    pipeline stages (cp.async), 64 bytes of input channels a step, which leaves two programs an
    SM in shared memory (86 KB a program in bf16 and float32 forwards; 64 bf16 input channels
    would take 172 KB and one program; tiles of 256 columns, for images 129-256 wide, take 135-172
    KB and one program). Not for: input gradients wider than 128 and float64 (they spill), images
    whose row tiles pass grid axis 1's limit. Speed model, headline case (sm_90, triton 3.6, bf16
    NCHW): the high-resolution semi-shift 143.7 -> 21.7 us, the low-resolution 35.0 -> 5.0 us,
    the encoder's input gradient 198 -> 74.2 us (32 output channels a program; 4 warps with
    16-bit weights, ``w_dtype``: float32 ones take 8, with 4 the model puts them at 124-128
    against 86-90 us), the decoder's 55.5 -> 22 us (docs/PERFORMANCE.md has every layout and
    dtype). sm_80 (mma.sync holds the operands and the three accumulators in registers) folds
    the forward only, with 4 warps and 16 output channels a program: the model, not calibrated
    there, puts the high-resolution semi-shift at 338 -> 42 us (bf16 NCHW) and its folded input
    gradients slower (489 -> 610 us).

    Otherwise (figures from before the fold, for the launches that keep these tiles) 128 pixels
    (4 rows x 32 columns; 8 x 16 for channels_last) per program halve the weight
    traffic against 64 (each program streams the whole packed weight from L2); 8 warps and no
    software pipelining (num_stages=1) on sm_90; sm_80's ptxas caps 8-warp programs at 80
    registers and spills, so there 4 warps hold the tile and at most 32 output channels
    (mma.sync keeps the accumulator and both operands in registers). The forward of 16-bit inputs
    on sm_90 takes 64 input channels a step: twice the loads in flight per wait, at the same
    blocks per SM with triton 3.6 (the speed model, ``bench.tools.sass_model``, puts the
    high-resolution semi-shift at 144 instead of 256 µs on an H200; float32 would drop to one
    block per SM, and the input gradients reduce over only K2 + 1 channels). An ungated input
    gradient (the decoder's) on sm_90 runs 4 warps: one warpgroup issues both 64-row halves of the
    tile, two independent wgmma chains (the model: 94 -> 55 µs in bf16); the gated one (the
    encoder's) would hold 233 registers that way and lose.
    """
    hopper = target.arch >= 90
    wide_k = hopper and not flip and x.element_size() <= 2
    warps = 4 if not hopper or (flip and not gated) else 8
    height, width = x.shape[2:]
    tx = next_pow2(width, 16) if isinstance(width, int) else 0  # whole rows a tile: the tap columns fold
    block_p = max(128, tx)
    widest = MAX_FOLD_WIDTH if not flip else min(MAX_FOLD_WIDTH, 128)
    if (tx and width <= widest and (hopper or not flip) and x.element_size() <= 4
            and isinstance(height, int) and cdiv(height, block_p // tx) <= helpers.MAX_GRID_YZ):
        block_k = min(max(16, 64 // x.element_size()), next_pow2(x.shape[1], 16))  # 64 bytes of channels
        # the gated input gradient (the encoder's, C output channels) 32 a program: 114 registers
        # and two programs an SM, where 64 held 158 and one
        block_n = min((32 if flip and gated else 64) if hopper else 16, next_pow2(c_out, 16))
        # the gated input gradient with 16-bit weights: 4 warps (one warpgroup issues both halves)
        small = flip and gated and w_dtype is not None and w_dtype.itemsize <= 2
        return dict(TX=tx, BLOCK_P=block_p, BLOCK_K=block_k, BLOCK_N=block_n, FOLD_X=True,
                    num_warps=8 if hopper and not small else 4, num_stages=2)
    return dict(TX=16 if channel_fast(x) else 32, BLOCK_P=128, BLOCK_K=min(64 if wide_k else 32, next_pow2(x.shape[1], 16)),
                BLOCK_N=min(64 if hopper else 32, next_pow2(c_out, 16)), FOLD_X=False, num_warps=warps, num_stages=1)


MAX_FOLD_WIDTH = 256  # widest image a FOLD_X tile spans (its tile: next_pow2(W) x BLOCK_N accumulators, three)


def conv3x3(x, w, c_out, out, *, flip=False, bias=None, tap_bias=None, lo=None, add=None, gate=None, scale=1,
            slot=None):
    """Launch ``conv3x3_kernel`` writing ``out`` (B, c_out, H, W); returns ``out``.
    ``w``: the weights as (tap, in, out), any strides (a packed tensor, or a transposed view of
    one). ``gate``: (B, H', W') view. ``slot``: where the calling operator keeps this launch's
    plan (``helpers.slot_plan``), or None."""
    if out.numel() == 0:
        return out

    def build():
        target = target_of(x)
        return conv3x3_plan(spec(x), w.shape, w.stride(), w.dtype, c_out, out.stride(), strides(lo), strides(add),
                            strides(gate, 3), tap_bias.stride(0) if tap_bias is not None else 0,
                            (flip, bias is not None, tap_bias is not None, lo is not None, add is not None,
                             gate is not None), scale, target, dot_precision(x.dtype, target))

    plan = slot_plan(slot, build)
    launch(conv3x3_kernel, plan, (x, w, out, bias, tap_bias, lo, add, gate), CONV3X3_BATCHED)
    return out


# which of conv3x3_kernel's tensors (x, w, out, bias, tap_bias, lo, add, gate) have a batch axis
CONV3X3_BATCHED = (True, False, True, False, False, True, True, True)


@cached_plan
def conv3x3_plan(x, w_shape, w_strides, w_dtype, c_out, out_strides, lo_strides, add_strides, gate_strides,
                 tap_bias_stride, flags, scale, target, precision) -> LaunchPlan:
    """``conv3x3``'s launches for one signature: ``x`` a ``Spec``, the other tensors by their strides
    (``flags``: flip, then whether bias, tap_bias, lo, add and gate are given)."""
    flip, has_bias, has_tap_bias, has_lo, has_add, gated = flags
    b, c_in, h, wd = x.shape
    cfg = conv3x3_config(x, c_out, target, flip, gated, w_dtype)
    pixel_fast, w_out = not channel_fast(x), w_shape[2]
    grid_rows = cdiv(h, cfg["BLOCK_P"] // cfg["TX"])
    check_grid_axis1(grid_rows, "conv3x3 (tiles of image rows: the height is too large)")
    grids = batch_grids(b, cdiv(c_out, cfg["BLOCK_N"]), "conv3x3 (output channels)", (cdiv(wd, cfg["TX"]), grid_rows))
    args = (c_in, c_out, w_out, h, wd, *x.stride(), *w_strides, *out_strides, *lo_strides, *add_strides, *gate_strides,
            tap_bias_stride)
    meta = dict(SCALE=scale, FLIP=flip, HAS_BIAS=has_bias, HAS_TAP_BIAS=has_tap_bias, HAS_LO=has_lo, HAS_ADD=has_add,
                GATED_ADD=gated, ACC_FP64=x.dtype == torch.float64, INPUT_PRECISION=precision,
                # each flag where the compile report shows it pays (with triton 3.6, the GPU image's,
                # unmasked channel-fast loads and unmasked transposed weight columns hold more
                # registers; on sm_80 unmasked weight rows spill 8 bytes in one input gradient)
                EVEN_K=pixel_fast and c_in % cfg["BLOCK_K"] == 0,
                EVEN_WK=flip and w_shape[1] % cfg["BLOCK_K"] == 0 and target.arch >= 90,
                EVEN_N=not flip and w_out % cfg["BLOCK_N"] == 0, CENTRED=pixel_fast, **cfg)
    return LaunchPlan(grids, args, meta)


def conv3x3_input_grad(g, w, c_out, out, *, add=None, gate=None, scale=1, slot=None):
    """The gradient of a 3x3's input from its output gradient ``g`` (B, N, H, W) and the weights
    ``w`` (9, C, KP) (tap, in, out): the transposed convolution, ``w`` read transposed and
    flipped (a view, no copy). Adds ``add`` (times sigmoid(``gate``) when given) in the
    epilogue; writes ``out`` (may be ``add``)."""
    return conv3x3(g, w.transpose(1, 2), c_out, out, flip=True, add=add, gate=gate, scale=scale, slot=slot)


@triton.jit
def row_sum(g_ptrs, W, n_ok, stride_gw, acc_dtype: tl.constexpr, TX: tl.constexpr):
    """(sum over the row, first element, last element) of the image row at ``g_ptrs`` ((NP,)
    pointers to its channels at column 0), W columns, TX a step."""
    x = tl.arange(0, TX)
    total = tl.zeros(g_ptrs.shape, acc_dtype)
    for x0 in range(0, W, TX):
        row = tl.load(g_ptrs[None, :] + (x0 + x).to(tl.int64)[:, None] * stride_gw,
                      mask=(x0 + x < W)[:, None] & n_ok[None, :], other=0.0)
        total += tl.sum(row.to(acc_dtype), 0)
    first = tl.load(g_ptrs, mask=n_ok, other=0.0).to(acc_dtype)
    last = tl.load(g_ptrs + (W - 1) * tl.cast(stride_gw, tl.int64), mask=n_ok, other=0.0).to(acc_dtype)
    return total, first, last


@triton.jit
def tap_sum_shares(g_ptrs, out_ptrs, total, r0, r1, H, W, n_ok, stride_gh, stride_gw, acc_dtype: tl.constexpr,
                   TX: tl.constexpr, ROWS: tl.constexpr):
    """Write one chunk's share of the 9 tap sums, sum_{r in image, r + (i - 1, j - 1) in image}
    g[r], to out_ptrs + t * NP (t = 3i + j): the chunk's total minus the image row and column
    that tap t leaves out where the chunk holds them, plus their corner (subtracted twice). The
    chunks' shares add up to the tap sums; each is not the sum over its own shifted window. So
    the channel loop only adds the centre tile, element by element (summing the 9 shifted tiles
    across threads every step took about 430 of the low-resolution launch's 850-950 a step).
    g_ptrs: (NP,) pointers to the gradient's channels at the image's origin; total: the gradient
    summed over the chunk's rows r0 .. r1 - 1 (all columns)."""
    NP: tl.constexpr = total.shape[0]
    # the first and the last column over the chunk's rows: (ROWS, NP) tiles
    y = r0 + tl.arange(0, ROWS)
    col_ptrs = g_ptrs[None, :] + y.to(tl.int64)[:, None] * stride_gh
    col_ok = (y < r1)[:, None] & n_ok[None, :]
    first_col = tl.sum(tl.load(col_ptrs, mask=col_ok, other=0.0).to(acc_dtype), 0)
    last_col = tl.load(col_ptrs + (W - 1) * tl.cast(stride_gw, tl.int64), mask=col_ok, other=0.0)
    last_col = tl.sum(last_col.to(acc_dtype), 0)
    # the image's first row (if this chunk holds it) and last row (likewise)
    zero = tl.zeros((NP,), acc_dtype)
    top, bottom, top_left, top_right, bottom_left, bottom_right = zero, zero, zero, zero, zero, zero
    if r0 == 0:
        top, top_left, top_right = row_sum(g_ptrs, W, n_ok, stride_gw, acc_dtype, TX)
    if r1 == H:
        bottom, bottom_left, bottom_right = row_sum(g_ptrs + (H - 1) * tl.cast(stride_gh, tl.int64), W, n_ok, stride_gw,
                                                    acc_dtype, TX)
    for t in tl.static_range(9):
        # tap t = 3i + j reads g at q - (i - 1, j - 1): i = 0 leaves out the first row, i = 2 the
        # last; j likewise with the columns
        share = total
        if t // 3 == 0:
            share -= top
        if t // 3 == 2:
            share -= bottom
        if t % 3 == 0:
            share -= first_col
        if t % 3 == 2:
            share -= last_col
        if t == 0:
            share += top_left
        if t == 2:
            share += top_right
        if t == 6:
            share += bottom_left
        if t == 8:
            share += bottom_right
        tl.store(out_ptrs + t * NP, share)


@triton.jit
def conv3x3_weight_grad_kernel(
    g_ptr, x_ptr, part_ptr, tap_part_ptr,
    N, C, H, W,
    stride_gb, stride_gc, stride_gh, stride_gw,
    stride_xb, stride_xc, stride_xh, stride_xw,
    ACC_FP64: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    ROWS: tl.constexpr, TX: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, NP: tl.constexpr,
):
    """Partial weight gradient of a 3x3 'same' convolution over one chunk of input pixels q:
      part[chunk, t, c, n] = sum_{q in chunk} x[b, c, q] * g[b, n, q - t]       (all 9 taps t)
    with g zero outside the image: summed over the chunks, sum_p x[p + t] * g[p] (x zero outside);
    and tap_part[chunk, t, n], the chunk's share of the tap sums sum_{p in image, p + t in image}
    g[b, n, p] (``tap_sum_shares``: written by the program with the centre tap and channel block 0).
    A chunk is ROWS rows of one image (b = chunk // cdiv(H, ROWS)). The shift is on g, not x: each
    input tile is loaded unshifted (vector loads along the contiguous axis) and is the dot's A
    operand for the program's 3 taps; the shifted gradient tiles (N <= NP channels, fewer than
    BLOCK_C) are the B operands, their requests hitting L1 after the first (the accumulators are a
    tuple: a register array). No atomics: the caller sums the chunks in a fixed order.

    g_ptr: gradient (B, N, H, W), any strides, N <= NP; cast to x's dtype for the dot (fp32
    stays fp32: TF32 or IEEE as INPUT_PRECISION says). x_ptr: the convolution's input
    (B, C, H, W), any strides. part_ptr: (n_chunks, 9, C, NP) contiguous fp32 (fp64).
    tap_part_ptr: (n_chunks, 9, NP) contiguous. A program owns one tap row i (its 3 taps, 3
    accumulators: 111-168 registers on sm_90 and 64-96 on sm_80 in the compile reports, where
    all 9 held 177-252 and 128-247; two to four programs an SM on sm_90):
    program_id(0) = 3 * chunk + i. Tile: BLOCK_P pixels as (BLOCK_P // TX) rows x TX columns;
    BLOCK_C input channels (the dot's M) x NP (N). Grid: (3 * n_chunks, cdiv(C, BLOCK_C)).

    Loads: the x tile in 16-byte vectors along its contiguous axis (pixels for NCHW, channels for
    channels_last); the gradient tiles one 4-byte element a lane (FADE's logit gradient is NCHW,
    and a shift of one pixel breaks a vector's alignment along pixels). Bytes requested against
    the minimum (x and g read once, the partials written once): x 3 times (the three tap-row
    programs of a chunk run side by side, so the second and third reads should come from L2);
    g 9 x cdiv(C, BLOCK_C) times (after the first tap from L1, after the first program
    from L2), and once more the image's edge rows and each chunk's edge columns (the tap sums).
    """
    TY: tl.constexpr = BLOCK_P // TX
    acc_dtype: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    chunk = tl.program_id(0) // 3
    tap_row = tl.program_id(0) % 3  # i: the program's taps are t = 3i + j, j = 0, 1, 2
    sums_here = (tl.program_id(1) == 0) & (tap_row == 1)  # the program with the centre tap
    row_chunks = tl.cdiv(H, ROWS)
    b = (chunk // row_chunks).to(tl.int64)
    r0 = (chunk % row_chunks) * ROWS
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    n = tl.arange(0, NP)
    n_ok = n < N
    p = tl.arange(0, BLOCK_P)
    accs = ()  # accs[j]: the (BLOCK_C, NP) gradient of tap 3i + j
    for j in tl.static_range(3):
        accs = accs + (tl.zeros((BLOCK_C, NP), acc_dtype),)
    total = tl.zeros((BLOCK_P, NP), acc_dtype)  # the gradient summed over the chunk, pixel by pixel
    for y0 in range(r0, r0 + ROWS, TY):
        for x0 in range(0, W, TX):
            y = y0 + p // TX
            x = x0 + p % TX
            q_ok = (y < r0 + ROWS) & (y < H) & (x < W)
            # cols[j]: q + (0, j - 1) in the image; tap 3i + j reads g at q - (i - 1, j - 1), in the
            # image where row_in & cols[2 - j]
            _, cols = tap_masks(y, x, H, W, 1, 3, True)
            row_in = (y >= tap_row - 1) & (y - (tap_row - 1) < H)
            a = tl.load(x_ptr + b * stride_xb + c.to(tl.int64)[None, :] * stride_xc
                        + (y.to(tl.int64) * stride_xh + x.to(tl.int64) * stride_xw)[:, None],
                        mask=q_ok[:, None] & c_ok[None, :], other=0.0)
            # g at q - (i - 1, -1), walked mirrored (steps -stride_gw); the row offset on y: no
            # 32-bit product with a stride, and (in the compile report) no registers more
            g_ptrs = (g_ptr + b * stride_gb + n.to(tl.int64)[None, :] * stride_gc
                      + ((y + 1 - tap_row).to(tl.int64) * stride_gh + x.to(tl.int64) * stride_gw)[:, None]
                      + stride_gw)
            gs = ()  # the 3 shifted gradient tiles, all requested before the first dot
            for j in tl.static_range(3):
                inside = q_ok & row_in & cols[2 - j]
                gs = gs + (tl.load(g_ptrs, mask=inside[:, None] & n_ok[None, :], other=0.0),)
                g_ptrs -= stride_gw
            new = ()
            for j in tl.static_range(3):
                new = new + (tl.dot(tl.trans(a), gs[j].to(a.dtype), accs[j], input_precision=INPUT_PRECISION,
                                    out_dtype=acc_dtype),)
            accs = new
            if sums_here:
                total += gs[1].to(acc_dtype)  # the centre tap: g at q, zero outside the chunk
    out = (part_ptr + chunk.to(tl.int64) * 9 * C * NP + (3 * tap_row) * C * NP + c.to(tl.int64)[:, None] * NP
           + n[None, :])
    for j in tl.static_range(3):
        tl.store(out + j * C * NP, accs[j], mask=c_ok[:, None] & (n < NP)[None, :])
    if sums_here:
        tap_sum_shares(g_ptr + b * stride_gb + n.to(tl.int64) * stride_gc, tap_part_ptr + chunk * 9 * NP + n,
                       tl.sum(total, 0), r0, tl.minimum(r0 + ROWS, H), H, W, n_ok, stride_gh, stride_gw, acc_dtype, TX,
                       ROWS)


def weight_grad_config(x, g, np_: int, target) -> dict:
    """Tiles of ``conv3x3_weight_grad_kernel`` (static properties of ``x`` and the gradient
    ``g``, tensors or ``Spec``s). sm_90: 64 input channels x NP per accumulator (the dot's M = 64
    takes wgmma) over 4 warps, 64 pixels a step (32 in float32) in tile rows of 32 (16 for
    channel-fast x, except 16-bit channel-fast x with a channel-fast gradient: the low-resolution
    branch on channels_last, where the speed model, bf16 headline, puts 32-wide rows over 4 warps
    at 22.4 us against 29.1 for 16-wide ones over 8 warps and 41.8 over 4), two pipeline
    stages (the gradient tiles' 4-byte float32 loads become cp.async even where a one-pixel shift
    breaks their vectors). sm_80 (mma.sync keeps both operands in registers): 16 x NP over 4
    warps, one row of 32 pixels a step (16 in float32 or channels_last)."""
    if target.arch >= 90:
        wide = channel_fast(x) and channel_fast(g) and x.element_size() <= 2
        return dict(TX=16 if channel_fast(x) and not wide else 32, BLOCK_P=64 if x.element_size() <= 2 else 32,
                    BLOCK_C=min(64, next_pow2(x.shape[1], 16)), NP=np_, num_warps=4, num_stages=2)
    block_p = 32 if x.element_size() <= 2 and not channel_fast(x) else 16
    return dict(TX=block_p, BLOCK_P=block_p, BLOCK_C=16, NP=np_, num_warps=4, num_stages=1)


def conv3x3_weight_grad(g, x, slot=None):
    """Partials (n_chunks, 9, C, NP) and tap-sum shares (n_chunks, 9, NP: summed over the chunks,
    the tap sums; one chunk's entry alone means nothing) of the weight gradient of a
    3x3 with input ``x`` (B, C, H, W) and output gradient ``g`` (B, N, H, W), NP = N rounded up to
    a power of two >= 16; n_chunks = B * cdiv(H, rows), rows WGRAD_ROWS or twice that in a
    large launch (``weight_grad_plan``). ``slot``: as for ``conv3x3``."""

    def build():
        target = target_of(x)
        return weight_grad_plan(spec(g), spec(x), target, dot_precision(x.dtype, target))

    plan = slot_plan(slot, build)
    n_chunks, np_ = plan.grids[0][1][0] // 3, plan.meta["NP"]
    part = torch.empty((n_chunks, 9, x.shape[1], np_), dtype=accumulator_dtype(x.dtype), device=x.device)
    taps = torch.empty((n_chunks, 9, np_), dtype=part.dtype, device=x.device)
    if n_chunks:
        launch(conv3x3_weight_grad_kernel, plan, (g, x, part, taps), (True, True, True, True))
    return part, taps


@cached_plan
def weight_grad_plan(g, x, target, precision) -> LaunchPlan:
    """``conv3x3_weight_grad``'s launch for one signature (``g``, ``x``: ``Spec``s); the
    number of chunks is its grid's axis 0 over 3 (a program per tap row), ``meta["NP"]`` the
    partials' padded width. A chunk is 2 * WGRAD_ROWS rows on sm_90 where the launch still has
    WGRAD_LONG_CHUNK_PROGRAMS programs that way, else WGRAD_ROWS (the speed model, headline, bf16
    NCHW: the high-resolution launch 72.1 -> 66.1 us and the unfold 17.1 -> 13.3; the
    low-resolution one, half a wave at 32 rows, 22.0 -> 44.1)."""
    b, n, h, w = g.shape
    c = x.shape[1]
    np_ = next_pow2(n, 16)
    if 9 * c * np_ >= 2**31:  # one chunk's partials are indexed in 32 bits (bench.tools.aot, BOUNDED_ARGS)
        raise ValueError(f"x: {c} channels make a weight-gradient chunk 9 x {c} x {np_} >= 2**31 elements")
    cfg = weight_grad_config(x, g, np_, target)
    check_grid_axis1(cdiv(c, cfg["BLOCK_C"]), "conv3x3 weight gradient (blocks of input channels)")
    # sm_90 only: on sm_80 (triton 3.9) float32 channels_last spills 8 bytes with them
    long = target.arch >= 90 and 3 * b * cdiv(h, 2 * WGRAD_ROWS) * cdiv(c, cfg["BLOCK_C"]) >= WGRAD_LONG_CHUNK_PROGRAMS
    rows = 2 * WGRAD_ROWS if long else WGRAD_ROWS
    n_chunks = b * cdiv(h, rows)
    grid = (3 * n_chunks, cdiv(c, cfg["BLOCK_C"]))
    return LaunchPlan(((slice(None), grid),), (n, c, h, w, *g.stride(), *x.stride()),
                      dict(ACC_FP64=x.dtype == torch.float64, INPUT_PRECISION=precision, ROWS=rows, **cfg))
