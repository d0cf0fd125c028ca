"""Semi-shift convolution in Triton: ``conv3x3(conv1x1(en)) + up(conv3x3(conv1x1(de)))``.

The 1x1 compressors are folded into the shared 3x3 content encoder once per weight version
(``pack_semi_shift_weights``), so the kernels read ``en`` and ``de`` themselves: neither
``enc`` (E channels at high resolution) nor ``up(dec)`` nor ``up(conv3x3(dec))`` is ever
written. One generic implicit-GEMM kernel, ``conv3x3_kernel``, runs every 3x3 of the op:

- forward, low resolution: ``lo = conv3x3(de; w_lo) + bias_lo``, laid out (B, H, W, KP) fp32.
  Channel K2 of ``w_lo`` holds the gate's 1x1 at the centre tap, so ``lo[..., K2]`` is the
  gate logit: the gate costs no launch of its own.
- forward, high resolution: ``logits = conv3x3(en; w_hi) + in-image tap biases + bias_hi +
  lo[y // s, x // s, :K2]``, (B, K2, OH, OW) fp32.
- backward, input gradients: the same kernel over the logit gradient with the packed
  weights read transposed and flipped (strides, no copy), plus an epilogue addend (the gated
  ``dout`` for ``en``; the reassembly's feature gradient for ``de``).

Cost model (per output pixel, C channels, K2 = K*K): folding does 9*K2*C multiply-adds
against E*C + 9*E*K2 unfolded, but reads only ``en`` (C values) where the unfolded form
must also write and re-read ``enc`` (E values) or recompute it per tap. Its arithmetic
intensity is 9*K2 MACs per input element whatever C is: 225 at K = 5, i.e. 225 FLOP/B in
bf16 and 112 FLOP/B in TF32, at or below an H100's ridge (about 295 and 148 FLOP/B), so the
folded kernel stays memory-bound on tensor cores at every C; only IEEE float32 (no tensor
cores, ridge about 20 FLOP/B) would be compute-bound. The README gives the table.

Weight-gradient partials (``conv3x3_weight_grad_kernel``) read each gradient tile once for
all 9 taps; ``unfold_weight_grad_kernel`` sums them in a fixed order and unfolds the folded
gradients back to the module's seven weights. Names read forward to backward:
``conv3x3_kernel`` -> ``semi_shift_lo`` / ``semi_shift_hi`` -> ``semi_shift_input_grad``;
``conv3x3_weight_grad_kernel`` -> ``semi_shift_weight_grad``; ``unfold_weight_grad_kernel``
-> ``unfold_weight_grad``. The operators that compose them are in ``fade.py``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from . import _launch
from ._launch import cdiv, dot_precision, next_pow2
from .packing import PackedWeights


@triton.jit
def _tap_rows_cols(y, x, H, W):
    """In-image masks of the 3 tap rows and 3 tap columns around (y, x): 2 tuples of 3."""
    rows = ((y >= 1) & (y - 1 < H), (y >= 0) & (y < H), (y + 1 >= 0) & (y + 1 < H))
    cols = ((x >= 1) & (x - 1 < W), (x >= 0) & (x < W), (x + 1 >= 0) & (x + 1 < W))
    return rows, cols


@triton.jit
def conv3x3_kernel(
    x_ptr, w_ptr, out_ptr, bias_ptr, tap_bias_ptr, lo_ptr, add_ptr, gate_ptr,
    C_IN, C_OUT, H, W,
    stride_xb, stride_xc, stride_xh, stride_xw,
    stride_wt, stride_wi, stride_wo,
    stride_ob, stride_oc, stride_oh, stride_ow,
    stride_lb, stride_lc, stride_lh, stride_lw,
    stride_ab, stride_ac, stride_ah, stride_aw,
    stride_gb, stride_gh, stride_gw, stride_tb,
    SCALE: tl.constexpr, FLIP: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_TAP_BIAS: tl.constexpr,
    HAS_LO: tl.constexpr, HAS_ADD: tl.constexpr, GATED_ADD: tl.constexpr,
    ACC_FP64: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    TX: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """out[b, n, y, x] = sum_{t, i} x[b, i, (y, x) + t] * w[t', i, n]  (3x3, zero padding 1)
                         + bias[n] + sum_{t in image} tap_bias[t, n] + lo[b, n, y // SCALE, x // SCALE]
                         + g * add[b, n, y, x],   g = sigmoid(gate[b, y // SCALE, x // SCALE]) or 1;
    t' = t, or 8 - t with FLIP (a transposed convolution, for input gradients). Every optional
    term is on only with its HAS_* flag (its pointer may then be None).

    x_ptr: input (B, C_IN, H, W), any strides; cast to w's dtype for the dot. w_ptr: weights
    indexed (tap, in, out) by stride_wt/wi/wo (the packed (9, C, KP) tensor, or the same read
    transposed). out_ptr: (B, C_OUT, H, W), any strides (the logits' planes, ``lo``'s
    channels-last (B, H, W, KP), or a gradient in the caller's layout). bias_ptr: (C_OUT,).
    tap_bias_ptr: (9, >= C_OUT), row stride stride_tb. lo_ptr: low-resolution addend (B, C_OUT, H', W'),
    any strides. add_ptr: (B, C_OUT, H, W) any strides. gate_ptr: gate logits (B, H', W'),
    any strides. C_IN, C_OUT, H, W: sizes; stride_<t><d>: element strides of x, w, out,
    l(o), a(dd), g(ate). ACC_FP64: accumulate in fp64 (fp64 inputs). INPUT_PRECISION: tl.dot's
    for fp32 ("tf32" or "ieee").

    Tile: BLOCK_P output pixels as (BLOCK_P // TX) rows x TX columns, times BLOCK_N output
    channels; the reduction runs over input-channel blocks of BLOCK_K (outer loop) and the
    9 taps (inner, unrolled): the 9 shifted (BLOCK_P x BLOCK_K) tiles of one channel block
    are requested back to back, so the tile and its 1-pixel halo come from L2/DRAM once and
    8 of the 9 requests hit L1. Loads along the contiguous axis: pixels for NCHW inputs,
    channels (vectorised) for channels_last; weights along their packed output channels.
    Bytes per output pixel: minimum C_IN input elements and C_OUT outputs; requested, the
    input times its halo ((TY+2)(TX+2)/(TY*TX): x1.59 for 4 x 32 tiles) plus the weights,
    9*C_IN*BLOCK_N elements from L2 once per program, i.e. 9*C_IN*BLOCK_N/BLOCK_P per pixel
    (at C_IN = 256, BLOCK_N = 32 in bf16: 147 KB per 128-pixel program, the largest share of the
    requested bytes; ``python -m bench.traffic`` gives the totals). Grid: (cdiv(W, TX), cdiv(H, TY), B * cdiv(C_OUT, BLOCK_N)).
    """
    TY: tl.constexpr = BLOCK_P // TX
    acc_dtype: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    n_blocks = tl.cdiv(C_OUT, BLOCK_N)
    b = (tl.program_id(2) // n_blocks).to(tl.int64)
    n = (tl.program_id(2) % n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < C_OUT
    p = tl.arange(0, BLOCK_P)
    y = tl.program_id(1) * TY + p // TX
    x = tl.program_id(0) * TX + p % TX
    rows, cols = _tap_rows_cols(y, x, H, W)
    pix = (y.to(tl.int64) * stride_xh + x.to(tl.int64) * stride_xw)[:, None]
    acc = tl.zeros((BLOCK_P, BLOCK_N), dtype=acc_dtype)
    for i0 in range(0, C_IN, BLOCK_K):
        i = i0 + tl.arange(0, BLOCK_K)
        i_ok = i < C_IN
        # one pointer tile, stepped across the taps: no per-tap address stays live
        a_ptrs = x_ptr + b * stride_xb + i.to(tl.int64)[None, :] * stride_xc + pix - stride_xh - stride_xw
        w_ptrs = w_ptr + i.to(tl.int64)[:, None] * stride_wi + n[None, :] * stride_wo
        for t in tl.static_range(9):
            inside = rows[t // 3] & cols[t % 3]
            a = tl.load(a_ptrs, mask=inside[:, None] & i_ok[None, :], other=0.0)
            wt = tl.load(w_ptrs + ((8 - t) if FLIP else t) * stride_wt, mask=i_ok[:, None] & n_ok[None, :], other=0.0)
            acc = tl.dot(a.to(wt.dtype), wt, acc, input_precision=INPUT_PRECISION, out_dtype=acc_dtype)
            a_ptrs += (stride_xh - 2 * stride_xw) if t % 3 == 2 else stride_xw
    if HAS_BIAS:
        acc += tl.load(bias_ptr + n, mask=n_ok, other=0.0).to(acc_dtype)[None, :]
    if HAS_TAP_BIAS:
        for t in tl.static_range(9):
            tb = tl.load(tap_bias_ptr + t * stride_tb + n, mask=n_ok, other=0.0).to(acc_dtype)
            acc += tl.where((rows[t // 3] & cols[t % 3])[:, None], tb[None, :], 0.0)
    p_ok = (y < H) & (x < W)
    io = p_ok[:, None] & n_ok[None, :]
    ly = (y // SCALE).to(tl.int64)
    lx = (x // SCALE).to(tl.int64)
    if HAS_LO:
        acc += tl.load(lo_ptr + b * stride_lb + (ly * stride_lh + lx * stride_lw)[:, None] + n[None, :] * stride_lc,
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


def conv3x3_config(x: torch.Tensor, c_out: int) -> dict:
    """Tile sizes for ``conv3x3_kernel`` from static properties only (channels, layout), so a
    traced or exported call makes no guard on the spatial sizes.

    128 pixels (4 rows x 32 columns; 8 x 16 for channels_last) per program halve the weight
    traffic against 64 (each program streams the whole packed weight, 9*C*KP elements, from
    L2: 9*KP/BLOCK_P weight bytes per input byte); 8 warps and no software pipelining
    (num_stages=1) keep it at 128 registers and 16 KB of shared memory on sm_90; sm_80's
    ptxas caps 8-warp programs at 80 registers and spills, so there 4 warps hold the tile and
    at most 32 output channels (mma.sync keeps the accumulator and both operands in registers).
    """
    channels_last = x.stride(1) == 1 and x.shape[1] > 1
    hopper = _launch.compute_capability(x) >= 90
    return dict(TX=16 if channels_last else 32, BLOCK_P=128, BLOCK_K=min(32, next_pow2(x.shape[1], 16)),
                BLOCK_N=min(64 if hopper else 32, next_pow2(c_out, 16)), num_warps=8 if hopper else 4, num_stages=1)


def _strides(t, n=4):
    return t.stride() if t is not None else (0,) * n


def conv3x3(x, w, w_strides, c_out, out, *, flip=False, bias=None, tap_bias=None, lo=None, add=None, gate=None,
            scale=1):
    """Launch ``conv3x3_kernel`` writing ``out`` (B, c_out, H, W); returns ``out``.
    ``w_strides``: (tap, in, out) element strides of ``w``. ``gate``: (B, H', W') view."""
    b, c_in, h, wd = x.shape
    if out.numel() == 0:
        return out
    cfg = conv3x3_config(x, c_out)
    grid = (cdiv(wd, cfg["TX"]), cdiv(h, cfg["BLOCK_P"] // cfg["TX"]),
            b * cdiv(c_out, cfg["BLOCK_N"]))
    wrap_triton(conv3x3_kernel)[grid](
        x, w, out, bias, tap_bias, lo, add, gate,
        c_in, c_out, h, wd,
        *x.stride(), *w_strides, *out.stride(), *_strides(lo), *_strides(add), *_strides(gate, 3),
        tap_bias.stride(0) if tap_bias is not None else 0,
        SCALE=scale, FLIP=flip, HAS_BIAS=bias is not None, HAS_TAP_BIAS=tap_bias is not None,
        HAS_LO=lo is not None, HAS_ADD=add is not None, GATED_ADD=gate is not None,
        ACC_FP64=x.dtype == torch.float64, INPUT_PRECISION=dot_precision(x), **cfg,
    )
    return out


def semi_shift_lo(de: torch.Tensor, packed: PackedWeights) -> torch.Tensor:
    """The low-resolution branch and the gate: (B, H, W, KP) fp32 (fp64), channels 0..K2-1 the
    decoder logits ``conv3x3(conv1x1(de; Wd); Wk) + bk``, channel K2 the gate logit."""
    b, _, h, w = de.shape
    kp = packed.w_lo.shape[2]
    acc = packed.bias_lo.dtype
    lo = torch.empty((b, h, w, kp), dtype=acc, device=de.device)
    out_view = lo.permute(0, 3, 1, 2)  # (B, KP, H, W) strides of the channels-last buffer
    conv3x3(de, packed.w_lo, packed.w_lo.stride(), kp, out_view, bias=packed.bias_lo)
    return lo


def semi_shift_hi(en: torch.Tensor, lo: torch.Tensor, packed: PackedWeights, k2: int, scale: int) -> torch.Tensor:
    """FADE's logits (B, K2, OH, OW) fp32 (fp64): the encoder branch plus ``lo`` read at
    (y // scale, x // scale)."""
    b, _, oh, ow = en.shape
    logits = torch.empty((b, k2, oh, ow), dtype=lo.dtype, device=en.device)
    conv3x3(en, packed.w_hi, packed.w_hi.stride(), k2, logits, bias=packed.bias_hi, tap_bias=packed.tap_bias,
            lo=lo.permute(0, 3, 1, 2), scale=scale)
    return logits


@triton.jit
def conv3x3_weight_grad_kernel(
    g_ptr, x_ptr, part_ptr, tap_part_ptr,
    N, C, H, W, ROWS,
    stride_gb, stride_gc, stride_gh, stride_gw,
    stride_xb, stride_xc, stride_xh, stride_xw,
    ACC_FP64: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    TX: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, NP: tl.constexpr,
):
    """Partial weight gradient of a 3x3 'same' convolution over one chunk of pixels:
      part[chunk, t, c, n] = sum_{p in chunk} x[b, c, p + t] * g[b, n, p]       (all 9 taps t)
      tap_part[chunk, t, n] = sum_{p in chunk, p + t in image} g[b, n, p]      (channel block 0)
    A chunk is ROWS rows of one image (b = chunk // cdiv(H, ROWS)). Each gradient tile is read
    once for all 9 taps (the 9 accumulators are a tuple); the input tile is requested per tap
    (its 8 shifted requests hit L1). No atomics: ``unfold_weight_grad_kernel`` sums the
    chunks in a fixed order.

    g_ptr: gradient (B, N, H, W), any strides, N <= NP; cast to x's dtype for the dot (fp32
    stays fp32: TF32 or IEEE as INPUT_PRECISION says). x_ptr: the convolution's input
    (B, C, H, W), any strides. part_ptr: (n_chunks, 9, C, NP) contiguous fp32 (fp64).
    tap_part_ptr: (n_chunks, 9, NP) contiguous. Tile: BLOCK_P pixels as (BLOCK_P // TX) rows
    x TX columns; BLOCK_C input channels (the dot's M) x NP (N). Minimum bytes: the input and
    the gradient once; requested: the gradient once, the input once from L2 (+ halo) and 9
    times from L1. Grid: (n_chunks, cdiv(C, BLOCK_C)).
    """
    TY: tl.constexpr = BLOCK_P // TX
    acc_dtype: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    chunk = tl.program_id(0)
    row_chunks = tl.cdiv(H, ROWS)
    b = (chunk // row_chunks).to(tl.int64)
    r0 = (chunk % row_chunks) * ROWS
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    n = tl.arange(0, NP)
    n_ok = n < N
    p = tl.arange(0, BLOCK_P)
    accs = ()
    for t in tl.static_range(9):
        accs = accs + (tl.zeros((BLOCK_C, NP), acc_dtype),)
    taps = ()
    for t in tl.static_range(9):
        taps = taps + (tl.zeros((NP,), acc_dtype),)
    for y0 in range(r0, r0 + ROWS, TY):
        for x0 in range(0, W, TX):
            y = y0 + p // TX
            x = x0 + p % TX
            p_ok = (y < r0 + ROWS) & (y < H) & (x < W)
            rows, cols = _tap_rows_cols(y, x, H, W)
            gt = tl.load(g_ptr + b * stride_gb + (y.to(tl.int64) * stride_gh + x.to(tl.int64) * stride_gw)[:, None]
                         + n[None, :] * stride_gc, mask=p_ok[:, None] & n_ok[None, :], other=0.0)
            a_ptrs = (x_ptr + b * stride_xb + c.to(tl.int64)[None, :] * stride_xc
                      + (y.to(tl.int64) * stride_xh + x.to(tl.int64) * stride_xw)[:, None] - stride_xh - stride_xw)
            new = ()
            for t in tl.static_range(9):
                inside = rows[t // 3] & cols[t % 3]
                a = tl.load(a_ptrs, mask=(p_ok & inside)[:, None] & c_ok[None, :], other=0.0)
                new = new + (tl.dot(tl.trans(a), gt.to(a.dtype), accs[t], input_precision=INPUT_PRECISION,
                                    out_dtype=acc_dtype),)
                a_ptrs += (stride_xh - 2 * stride_xw) if t % 3 == 2 else stride_xw
            accs = new
            if tl.program_id(1) == 0:
                sums = ()
                for t in tl.static_range(9):
                    inside = p_ok & rows[t // 3] & cols[t % 3]
                    sums = sums + (taps[t] + tl.sum(tl.where(inside[:, None], gt.to(acc_dtype), 0.0), 0),)
                taps = sums
    out = part_ptr + chunk.to(tl.int64) * 9 * C * NP + c.to(tl.int64)[:, None] * NP + n[None, :]
    for t in tl.static_range(9):
        tl.store(out + t * C * NP, accs[t], mask=c_ok[:, None] & (n < NP)[None, :])
    if tl.program_id(1) == 0:
        for t in tl.static_range(9):
            tl.store(tap_part_ptr + (chunk * 9 + t) * NP + n, taps[t])


@triton.jit
def _chunk_sum(ptr, n_chunks, chunk_stride, offs, mask, acc_dtype: tl.constexpr):
    """sum over chunks (in order) of ptr[chunk * chunk_stride + offs]."""
    total = tl.zeros(offs.shape, acc_dtype)
    for i in range(0, n_chunks):
        total += tl.load(ptr + i * chunk_stride + offs, mask=mask, other=0.0)
    return total


@triton.jit
def unfold_weight_grad_kernel(
    part_hi_ptr, tap_hi_ptr, part_lo_ptr, tap_lo_ptr,
    wk_ptr, we_ptr, wd_ptr, be_ptr,
    d_gw_ptr, d_gb_ptr, d_we_ptr, d_be_ptr, d_wd_ptr, d_wk_ptr, d_bk_ptr,
    n_hi, n_lo, C, E, K2,
    stride_wk_k, stride_wk_e, stride_wk_t,
    DEPTHWISE: tl.constexpr, ACC_FP64: tl.constexpr,
    NP: tl.constexpr, EP: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """The module's weight gradients from the folded ones, summed over chunks in a fixed order.

    With R_hi[t, c, k], R_lo[t, c, k] the chunk sums of ``conv3x3_weight_grad_kernel``'s
    partials (encoder branch over the logit gradient; decoder branch over the low-resolution
    gradient, whose channel K2 is the gate), TB[t, k] and L[k] the tap sums:
      dWe[e, c] = sum_{t, k} Wk[k, e, t] R_hi[t, c, k]     dWd likewise with R_lo
      dWk[k, e, t] = sum_c (We[e, c] R_hi[t, c, k] + Wd[e, c] R_lo[t, c, k]) + be[e] TB_hi[t, k]
      dbe[e] = sum_{t, k} Wk[k, e, t] TB_hi[t, k]     dbk[k] = TB_hi[4, k] + L_lo[k]
      dWg[c] = R_lo[4, c, K2]                           dbg = L_lo[K2]
    (FADE-Lite, DEPTHWISE: e = k and Wk[k, 0, t], so the sums over e or k drop.)
    Programs 0 .. cdiv(C, BLOCK_C) - 1 own a channel block (dWe, dWd, dWg); the next 9 own a
    tap t (dWk[:, :, t]); the last the biases. part_*: (n_chunks, 9, C, NP) contiguous;
    tap_hi: (n_hi, 9, NP); tap_lo: (n_lo, 9, NP) (its centre tap is L_lo). wk_ptr: Wk
    (K2, E or 1, 3, 3) by stride_wk_k/e/t (t = the flattened 3x3); we, wd: (E, C) contiguous;
    be: (E,). Outputs contiguous in the weights' shapes. E <= EP, K2 < NP.
    """
    acc_dtype: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    pid = tl.program_id(0)
    n_cb = tl.cdiv(C, BLOCK_C)
    k = tl.arange(0, NP)
    e = tl.arange(0, EP)
    k_ok = k < K2
    e_ok = e < E
    if pid < n_cb:
        c = pid * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        offs = k[:, None] + c[None, :] * NP  # (NP, BLOCK_C): R[t, c, k] transposed
        rmask = (k < NP)[:, None] & c_ok[None, :]
        if DEPTHWISE:
            d_we = tl.zeros((NP, BLOCK_C), acc_dtype)
            d_wd = tl.zeros((NP, BLOCK_C), acc_dtype)
        else:
            d_we = tl.zeros((EP, BLOCK_C), acc_dtype)
            d_wd = tl.zeros((EP, BLOCK_C), acc_dtype)
        for t in tl.static_range(9):
            r_hi = _chunk_sum(part_hi_ptr + t * C * NP, n_hi, 9 * C * NP, offs, rmask, acc_dtype)
            r_lo = _chunk_sum(part_lo_ptr + t * C * NP, n_lo, 9 * C * NP, offs, rmask, acc_dtype)
            if t == 4:
                tl.store(d_gw_ptr + c, tl.sum(tl.where((k == K2)[:, None], r_lo, 0.0), 0), mask=c_ok)
            if DEPTHWISE:
                wk_t = tl.load(wk_ptr + k * stride_wk_k + t * stride_wk_t, mask=k_ok, other=0.0).to(acc_dtype)
                d_we += wk_t[:, None] * r_hi
                d_wd += wk_t[:, None] * r_lo
            else:
                wk_t = tl.load(wk_ptr + k[None, :] * stride_wk_k + e[:, None] * stride_wk_e + t * stride_wk_t,
                               mask=e_ok[:, None] & k_ok[None, :], other=0.0).to(acc_dtype)  # (EP, NP)
                d_we = tl.dot(wk_t, tl.where(k_ok[:, None], r_hi, 0.0), d_we, input_precision="ieee", out_dtype=acc_dtype)
                d_wd = tl.dot(wk_t, tl.where(k_ok[:, None], r_lo, 0.0), d_wd, input_precision="ieee", out_dtype=acc_dtype)
        if DEPTHWISE:
            wmask = k_ok[:, None] & c_ok[None, :]
            tl.store(d_we_ptr + k[:, None] * C + c[None, :], d_we, mask=wmask)
            tl.store(d_wd_ptr + k[:, None] * C + c[None, :], d_wd, mask=wmask)
        else:
            wmask = e_ok[:, None] & c_ok[None, :]
            tl.store(d_we_ptr + e[:, None] * C + c[None, :], d_we, mask=wmask)
            tl.store(d_wd_ptr + e[:, None] * C + c[None, :], d_wd, mask=wmask)
    elif pid < n_cb + 9:
        t = pid - n_cb
        tb = _chunk_sum(tap_hi_ptr + t * NP, n_hi, 9 * NP, k, k < NP, acc_dtype)  # (NP,)
        if DEPTHWISE:
            d_wk = tb * tl.load(be_ptr + k, mask=k_ok, other=0.0).to(acc_dtype)
            for c0 in range(0, C, BLOCK_C):
                c = c0 + tl.arange(0, BLOCK_C)
                rmask = (k < NP)[:, None] & (c < C)[None, :]
                offs = t * C * NP + k[:, None] + c[None, :] * NP
                r_hi = _chunk_sum(part_hi_ptr, n_hi, 9 * C * NP, offs, rmask, acc_dtype)
                r_lo = _chunk_sum(part_lo_ptr, n_lo, 9 * C * NP, offs, rmask, acc_dtype)
                wmask = k_ok[:, None] & (c < C)[None, :]
                we = tl.load(we_ptr + k[:, None] * C + c[None, :], mask=wmask, other=0.0).to(acc_dtype)
                wd = tl.load(wd_ptr + k[:, None] * C + c[None, :], mask=wmask, other=0.0).to(acc_dtype)
                d_wk += tl.sum(we * r_hi + wd * r_lo, 1)
            tl.store(d_wk_ptr + k * 9 + t, d_wk, mask=k_ok)
        else:
            d_wk = tb[:, None] * tl.load(be_ptr + e, mask=e_ok, other=0.0).to(acc_dtype)[None, :]  # (NP, EP)
            for c0 in range(0, C, BLOCK_C):
                c = c0 + tl.arange(0, BLOCK_C)
                rmask = (k < NP)[:, None] & (c < C)[None, :]
                offs = t * C * NP + k[:, None] + c[None, :] * NP
                r_hi = _chunk_sum(part_hi_ptr, n_hi, 9 * C * NP, offs, rmask, acc_dtype)  # (NP, BLOCK_C)
                r_lo = _chunk_sum(part_lo_ptr, n_lo, 9 * C * NP, offs, rmask, acc_dtype)
                wmask = e_ok[:, None] & (c < C)[None, :]
                we = tl.load(we_ptr + e[:, None] * C + c[None, :], mask=wmask, other=0.0).to(acc_dtype)  # (EP, BLOCK_C)
                wd = tl.load(wd_ptr + e[:, None] * C + c[None, :], mask=wmask, other=0.0).to(acc_dtype)
                d_wk = tl.dot(r_hi, tl.trans(we), d_wk, input_precision="ieee", out_dtype=acc_dtype)
                d_wk = tl.dot(r_lo, tl.trans(wd), d_wk, input_precision="ieee", out_dtype=acc_dtype)
            tl.store(d_wk_ptr + k[:, None] * E * 9 + e[None, :] * 9 + t, d_wk, mask=k_ok[:, None] & e_ok[None, :])
    else:
        tb_c = _chunk_sum(tap_hi_ptr + 4 * NP, n_hi, 9 * NP, k, k < NP, acc_dtype)
        lo_c = _chunk_sum(tap_lo_ptr + 4 * NP, n_lo, 9 * NP, k, k < NP, acc_dtype)
        tl.store(d_bk_ptr + k, tb_c + lo_c, mask=k_ok)
        tl.store(d_gb_ptr + k * 0, lo_c, mask=k == K2)
        if DEPTHWISE:
            d_be = tl.zeros((NP,), acc_dtype)
        else:
            d_be = tl.zeros((EP,), acc_dtype)
        for t in tl.static_range(9):
            tb = _chunk_sum(tap_hi_ptr + t * NP, n_hi, 9 * NP, k, k < NP, acc_dtype)
            if DEPTHWISE:
                d_be += tl.load(wk_ptr + k * stride_wk_k + t * stride_wk_t, mask=k_ok, other=0.0).to(acc_dtype) * tb
            else:
                wk_t = tl.load(wk_ptr + k[None, :] * stride_wk_k + e[:, None] * stride_wk_e + t * stride_wk_t,
                               mask=e_ok[:, None] & k_ok[None, :], other=0.0).to(acc_dtype)
                d_be += tl.sum(wk_t * tb[None, :], 1)
        if DEPTHWISE:
            tl.store(d_be_ptr + k, d_be, mask=k_ok)
        else:
            tl.store(d_be_ptr + e, d_be, mask=e_ok)


WGRAD_ROWS = 16  # rows of one image per weight-gradient chunk


def semi_shift_input_grad(g, w, c_out, out, *, add=None, gate=None, scale=1):
    """conv3x3 transposed: the gradient of the 3x3's input from its output gradient ``g``
    (B, N, H, W) and the packed weights ``w`` (9, C, KP), read transposed and flipped. Adds
    ``add`` (times sigmoid(``gate``) when given) in the epilogue; writes ``out`` (may be ``add``)."""
    return conv3x3(g, w, (w.stride(0), w.stride(2), w.stride(1)), c_out, out, flip=True, add=add, gate=gate,
                   scale=scale)


def weight_grad_config(x: torch.Tensor, np_: int) -> dict:
    """Tiles of ``conv3x3_weight_grad_kernel`` (static properties only). sm_90: 64 input
    channels x NP per accumulator (the dot's M = 64 takes wgmma), 9 accumulators over 8 warps.
    sm_80 (mma.sync keeps both operands in registers): 16 x NP over 4 warps, one row of 32
    pixels a step (16 in float32 or channels_last: what compiles there without spills)."""
    channels_last = x.stride(1) == 1 and x.shape[1] > 1
    if _launch.compute_capability(x) >= 90:
        return dict(TX=16 if channels_last else 32, BLOCK_P=64, BLOCK_C=min(64, next_pow2(x.shape[1], 16)), NP=np_,
                    num_warps=8, num_stages=1)
    block_p = 32 if x.element_size() <= 2 and not channels_last else 16
    return dict(TX=block_p, BLOCK_P=block_p, BLOCK_C=16, NP=np_, num_warps=4, num_stages=1)


def semi_shift_weight_grad(g, x):
    """Partials (n_chunks, 9, C, NP) and tap sums (n_chunks, 9, NP) of the folded weight gradient."""
    b, n, h, w = g.shape
    c = x.shape[1]
    np_ = next_pow2(n, 16)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    n_chunks = b * cdiv(h, WGRAD_ROWS)
    part = torch.empty((n_chunks, 9, c, np_), dtype=acc, device=x.device)
    taps = torch.empty((n_chunks, 9, np_), dtype=acc, device=x.device)
    if n_chunks == 0:
        return part, taps
    cfg = weight_grad_config(x, np_)
    wrap_triton(conv3x3_weight_grad_kernel)[(n_chunks, cdiv(c, cfg["BLOCK_C"]))](
        g, x, part, taps, n, c, h, w, WGRAD_ROWS, *g.stride(), *x.stride(),
        ACC_FP64=acc == torch.float64, INPUT_PRECISION=dot_precision(x), **cfg,
    )
    return part, taps


def unfold_weight_grad(hi, lo, en_weight, en_bias, de_weight, kernel_weight, k2, depthwise):
    """The module's weight gradients (gate w, gate b, We, be, Wd, Wk, bk) from the partials."""
    (part_hi, tap_hi), (part_lo, tap_lo) = hi, lo
    e, c = en_weight.shape[:2]
    dtype, dev = en_weight.dtype, en_weight.device
    grads = [torch.empty(s, dtype=dtype, device=dev) for s in
             ((1, c, 1, 1), (1,), (e, c, 1, 1), (e,), (e, c, 1, 1), tuple(kernel_weight.shape), (k2,))]
    np_ = part_hi.shape[3]
    block_c = min(32, next_pow2(c, 16))
    wk = kernel_weight.flatten(2)
    wrap_triton(unfold_weight_grad_kernel)[(cdiv(c, block_c) + 10,)](
        part_hi, tap_hi, part_lo, tap_lo, wk, en_weight, de_weight, en_bias, *grads,
        part_hi.shape[0], part_lo.shape[0], c, e, k2, *wk.stride(),
        DEPTHWISE=depthwise, ACC_FP64=part_hi.dtype == torch.float64, NP=np_, EP=next_pow2(e, 16),
        BLOCK_C=block_c, num_warps=4,
    )
    return grads
