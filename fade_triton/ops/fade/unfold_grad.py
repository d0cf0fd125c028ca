"""The inverse of the weight fold (``fold.py``) for the backward: the module's seven weight
gradients from the folded 3x3's weight-gradient partials (``ops/conv3x3.py``,
``conv3x3_weight_grad``), summed over the chunks in a fixed order (bitwise deterministic)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..helpers import LaunchPlan, cached_plan, cdiv, launch, next_pow2, slot_plan, target_of


# most chunks a step of the chunk sums (``unfold_plan`` takes fewer where a tile is wide): their
# loads in flight together, one wait on memory a step; the sums stay in the same order
UNFOLD_CHUNKS = 32


@triton.jit
def _chunk_sum(ptr, n_chunks, chunk_stride, offs, mask, acc_dtype: tl.constexpr, CHUNKS: tl.constexpr,
               EVEN: tl.constexpr):
    """sum over chunks, in order, of ptr[chunk * chunk_stride + offs]: CHUNKS chunks a step, their
    loads issued together (in flight at once: a step waits on memory once, not CHUNKS times) and
    added in order (the same sums as one chunk a step). EVEN: CHUNKS divides n_chunks (no chunk
    mask; else every step masks its chunks, and there is no separate last step)."""
    total = tl.zeros(offs.shape, acc_dtype)
    ptrs = ptr + offs
    step = tl.cast(chunk_stride, tl.int64)
    for first in range(0, n_chunks, CHUNKS):
        index = tl.zeros(offs.shape, tl.int32) + first  # the chunk index as a tile (a mask operand)
        for j in tl.static_range(CHUNKS):
            if EVEN:
                total += tl.load(ptrs, mask=mask, other=0.0)
            else:
                total += tl.load(ptrs, mask=mask & (index + j < n_chunks), other=0.0)
            ptrs += step
    return total


@triton.jit
def unfold_weight_grad_kernel(
    part_hi_ptr, tap_hi_ptr, part_lo_ptr, tap_lo_ptr,
    wk_ptr, we_ptr, wd_ptr, be_ptr,
    d_gw_ptr, d_gb_ptr, d_we_ptr, d_be_ptr, d_wd_ptr, d_wk_ptr, d_bk_ptr,
    n_hi, n_lo, C, E, K2,
    stride_wk_k, stride_wk_e, stride_wk_t, stride_we_e, stride_we_c, stride_wd_e, stride_wd_c, stride_be,
    DEPTHWISE: tl.constexpr, ACC_FP64: tl.constexpr, NP: tl.constexpr, EP: tl.constexpr,
    BLOCK_C: tl.constexpr, CHUNKS_C: tl.constexpr, BLOCK_K: tl.constexpr, TAP_C: tl.constexpr,
    CHUNKS_T: tl.constexpr, EVEN_C: tl.constexpr, EVEN_T: tl.constexpr,
):
    """The module's weight gradients from the folded ones, summed over chunks in a fixed order.

    With R_hi[t, c, k], R_lo[t, c, k] the chunk sums of ``conv3x3_weight_grad_kernel``'s (``ops/conv3x3.py``)
    partials (encoder branch over the logit gradient; decoder branch over the low-resolution
    gradient, whose channel K2 is the gate), TB[t, k] and L[k] the tap sums:
      dWe[e, c] = sum_{t, k} Wk[k, e, t] R_hi[t, c, k]     dWd likewise with R_lo
      dWk[k, e, t] = sum_c (We[e, c] R_hi[t, c, k] + Wd[e, c] R_lo[t, c, k]) + be[e] TB_hi[t, k]
      dbe[e] = sum_{t, k} Wk[k, e, t] TB_hi[t, k]     dbk[k] = TB_hi[4, k] + L_lo[k]
      dWg[c] = R_lo[4, c, K2]                           dbg = L_lo[K2]
    (FADE-Lite, DEPTHWISE: e = k and Wk[k, 0, t], so the sums over e or k drop.)
    Three kinds of program, each reading its own share of the partials once:
    - 2 * cdiv(C, BLOCK_C) channel programs: an even pid the encoder branch (dWe), an odd one the
      decoder branch (dWd, dWg) of channel block pid // 2, over the 9 taps;
    - 9 * cdiv(K2, BLOCK_K) tap programs: dWk[k, :, t] for BLOCK_K kernel rows k of tap t, over
      all channels, TAP_C a step;
    - the last: the biases.
    part_*: (n_chunks, 9, C, NP) contiguous; tap_hi: (n_hi, 9, NP); tap_lo: (n_lo, 9, NP) (its
    centre tap is L_lo): the chunks' shares of the tap sums, which only their sum over the chunks
    gives. wk_ptr: Wk (K2, E or 1, 3, 3) by stride_wk_k/e/t (t = the flattened 3x3); we, wd:
    (E, C) by stride_we_e/c and stride_wd_e/c; be: (E,) by stride_be (the module's weights, any
    strides). Outputs contiguous in the weights' shapes. E <= EP, K2 < NP. Tiles: (NP, BLOCK_C)
    and (BLOCK_K, TAP_C) partials, loaded along their contiguous NP axis, CHUNKS_C and CHUNKS_T
    chunks a step (``_chunk_sum``); only the rows k < K2 (K2 + 1 in the decoder branch) are
    read, rounded up to a multiple of 4 (whole 16-byte vectors; the padding rows this reads
    are finite, ``conv3x3_weight_grad`` writes all NP, and their products are masked off).
    Between them the programs read the partials twice (the channel programs once, the tap
    programs once), each program about as much as another: 2 x (n_hi + n_lo) x 9 x C x
    (K2 rounded up to 4) elements requested against a minimum of one read (the weights and the
    tap-sum shares are small).
    """
    acc_dtype: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    pid = tl.program_id(0)
    n_channel = 2 * tl.cdiv(C, BLOCK_C)
    n_tap = 9 * tl.cdiv(K2, BLOCK_K)
    e = tl.arange(0, EP)
    e_ok = e < E
    e64 = e.to(tl.int64)  # weight offsets: the weights may be strided views
    if pid < n_channel:
        is_lo = pid % 2
        decoder = is_lo == 1
        part_ptr = tl.where(decoder, part_lo_ptr, part_hi_ptr)
        n_chunks = tl.where(decoder, n_lo, n_hi)
        d_w_ptr = tl.where(decoder, d_wd_ptr, d_we_ptr)
        k = tl.arange(0, NP)
        k_ok = k < K2
        c = pid // 2 * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        offs = k[:, None] + c[None, :] * NP  # (NP, BLOCK_C): R[t, c, k] transposed
        # rows k < K2 (the decoder's row K2, the gate, too), rounded up to whole 16-byte vectors
        rmask = (k < (K2 + is_lo + 3) // 4 * 4)[:, None] & c_ok[None, :]
        if DEPTHWISE:
            d_w = tl.zeros((NP, BLOCK_C), acc_dtype)
        else:
            d_w = tl.zeros((EP, BLOCK_C), acc_dtype)
        for t in range(9):
            if DEPTHWISE:  # the weights requested first: their wait overlaps the chunk sum's
                wk_t = tl.load(wk_ptr + k * stride_wk_k + t * stride_wk_t, mask=k_ok, other=0.0).to(acc_dtype)
            else:
                wk_t = tl.load(wk_ptr + k[None, :] * stride_wk_k + e[:, None] * stride_wk_e + t * stride_wk_t,
                               mask=e_ok[:, None] & k_ok[None, :], other=0.0).to(acc_dtype)  # (EP, NP)
            r = _chunk_sum(part_ptr + t * C * NP, n_chunks, 9 * C * NP, offs, rmask, acc_dtype, CHUNKS_C, EVEN_C)
            if decoder & (t == 4):
                tl.store(d_gw_ptr + c, tl.sum(tl.where((k == K2)[:, None], r, 0.0), 0), mask=c_ok)
            if DEPTHWISE:
                d_w += wk_t[:, None] * r
            else:
                d_w = tl.dot(wk_t, tl.where(k_ok[:, None], r, 0.0), d_w, input_precision="ieee", out_dtype=acc_dtype)
        if DEPTHWISE:
            tl.store(d_w_ptr + k[:, None] * C + c[None, :], d_w, mask=k_ok[:, None] & c_ok[None, :])
        else:
            tl.store(d_w_ptr + e[:, None] * C + c[None, :], d_w, mask=e_ok[:, None] & c_ok[None, :])
    elif pid < n_channel + n_tap:
        t = (pid - n_channel) % 9
        kt = (pid - n_channel) // 9 * BLOCK_K + tl.arange(0, BLOCK_K)
        kt_ok = kt < K2
        kt64 = kt.to(tl.int64)
        tbk = _chunk_sum(tap_hi_ptr + t * NP, n_hi, 9 * NP, kt, kt_ok, acc_dtype, CHUNKS_T, EVEN_T)  # (BLOCK_K,)
        if DEPTHWISE:
            d_wk = tbk * tl.load(be_ptr + kt64 * stride_be, mask=kt_ok, other=0.0).to(acc_dtype)
        else:
            d_wk = tbk[:, None] * tl.load(be_ptr + e64 * stride_be, mask=e_ok, other=0.0).to(acc_dtype)[None, :]
        for c0 in range(0, C, TAP_C):
            ct = c0 + tl.arange(0, TAP_C)
            ct_ok = ct < C
            tmask = (kt < (K2 + 3) // 4 * 4)[:, None] & ct_ok[None, :]  # whole 16-byte vectors
            offs_t = t * C * NP + kt[:, None] + ct[None, :] * NP  # (BLOCK_K, TAP_C)
            if DEPTHWISE:  # the weights requested first: their wait overlaps the chunk sums'
                wmask = kt_ok[:, None] & ct_ok[None, :]
                we = tl.load(we_ptr + kt64[:, None] * stride_we_e + ct.to(tl.int64)[None, :] * stride_we_c,
                             mask=wmask, other=0.0).to(acc_dtype)
                wd = tl.load(wd_ptr + kt64[:, None] * stride_wd_e + ct.to(tl.int64)[None, :] * stride_wd_c,
                             mask=wmask, other=0.0).to(acc_dtype)
            else:
                wmask = e_ok[:, None] & ct_ok[None, :]
                we = tl.load(we_ptr + e64[:, None] * stride_we_e + ct.to(tl.int64)[None, :] * stride_we_c, mask=wmask,
                             other=0.0).to(acc_dtype)  # (EP, TAP_C)
                wd = tl.load(wd_ptr + e64[:, None] * stride_wd_e + ct.to(tl.int64)[None, :] * stride_wd_c, mask=wmask,
                             other=0.0).to(acc_dtype)
            r_hi = _chunk_sum(part_hi_ptr, n_hi, 9 * C * NP, offs_t, tmask, acc_dtype, CHUNKS_T, EVEN_T)
            r_lo = _chunk_sum(part_lo_ptr, n_lo, 9 * C * NP, offs_t, tmask, acc_dtype, CHUNKS_T, EVEN_T)
            if DEPTHWISE:
                d_wk += tl.sum(we * r_hi + wd * r_lo, 1)
            else:
                d_wk = tl.dot(r_hi, tl.trans(we), d_wk, input_precision="ieee", out_dtype=acc_dtype)
                d_wk = tl.dot(r_lo, tl.trans(wd), d_wk, input_precision="ieee", out_dtype=acc_dtype)
        if DEPTHWISE:
            tl.store(d_wk_ptr + kt * 9 + t, d_wk, mask=kt_ok)
        else:
            tl.store(d_wk_ptr + kt[:, None] * E * 9 + e[None, :] * 9 + t, d_wk, mask=kt_ok[:, None] & e_ok[None, :])
    else:
        k = tl.arange(0, NP)
        k_ok = k < K2
        tb_c = _chunk_sum(tap_hi_ptr + 4 * NP, n_hi, 9 * NP, k, k_ok, acc_dtype, CHUNKS_T, EVEN_T)
        lo_c = _chunk_sum(tap_lo_ptr + 4 * NP, n_lo, 9 * NP, k, k < K2 + 1, acc_dtype, CHUNKS_T, EVEN_T)
        tl.store(d_bk_ptr + k, tb_c + lo_c, mask=k_ok)
        tl.store(d_gb_ptr + k * 0, lo_c, mask=k == K2)
        if DEPTHWISE:
            d_be = tl.zeros((NP,), acc_dtype)
        else:
            d_be = tl.zeros((EP,), acc_dtype)
        for t in range(9):
            tb = _chunk_sum(tap_hi_ptr + t * NP, n_hi, 9 * NP, k, k_ok, acc_dtype, CHUNKS_T, EVEN_T)
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


def unfold_weight_grad(hi, lo, weights: tuple, depthwise, slot=None):
    """The module's weight gradients (gate w, gate b, We, be, Wd, Wk, bk) from the partials;
    ``weights``: the seven weights in that order.
    ``slot``: where the calling operator keeps this launch's plan (``helpers.slot_plan``), or None."""
    (part_hi, tap_hi), (part_lo, tap_lo) = hi, lo
    _, _, en_weight, en_bias, de_weight, kernel_weight, _ = weights
    e, k2 = en_weight.shape[0], kernel_weight.shape[0]
    # each gradient in its weight's shape and dtype, contiguous (the kernel writes them so)
    grads = [torch.empty_like(w, memory_format=torch.contiguous_format) for w in weights]
    wk = kernel_weight.flatten(2)
    weight_strides = (*wk.stride(), *en_weight.stride()[:2], *de_weight.stride()[:2], en_bias.stride(0))
    plan = slot_plan(slot, lambda: unfold_plan(part_hi.shape, part_hi.dtype, part_lo.shape[0], e, k2, weight_strides,
                                               depthwise, target_of(part_hi)))
    tensors = (part_hi, tap_hi, part_lo, tap_lo, wk, en_weight, de_weight, en_bias, *grads)
    launch(unfold_weight_grad_kernel, plan, tensors, (False,) * len(tensors))
    return grads


@cached_plan
def unfold_plan(hi_shape, acc_dtype, n_lo, e, k2, weight_strides, depthwise, target) -> LaunchPlan:
    """``unfold_weight_grad``'s launch for one signature (``hi_shape``, ``acc_dtype``: the encoder
    partials' (n_hi, 9, C, NP) and dtype; ``weight_strides``: the kernel's stride arguments).
    Channel programs of 16 channels and tap programs of 16 kernel rows, TAP_C channels a step
    (fewer when E is wide: the weights' (EP, TAP_C) tiles); the chunks a step keep 16,384 loaded
    elements a program in flight in both on sm_90 (64 a thread over 8 warps), 8,192 on sm_80 (4
    warps). FADE-Lite's (DEPTHWISE) take the same chunks over 4 warps on sm_90: with 8, ptxas
    (triton 3.6) gave it 48 registers and spilled 8 bytes in float16.
    Headline (B=8, C=256, K=5), sm_90, triton 3.6, the speed model: 51 programs, 75.4 -> 17.1 us
    against 18 programs that each summed all chunks of 32 channels or of a whole tap (13.3 with
    the high-resolution gradient's 32-row chunks)."""
    n_hi, _, c, np_ = hi_shape
    ep = next_pow2(e, 16)
    in_flight = 16384 if target.arch >= 90 else 8192  # loaded elements a program in flight
    warps = 8 if target.arch >= 90 and not depthwise else 4
    block_c, block_k, tap_c = 16, 16, max(16, min(64, 4096 // ep))
    chunks_c = max(1, min(UNFOLD_CHUNKS, in_flight // (np_ * block_c)))
    chunks_t = max(1, min(UNFOLD_CHUNKS, in_flight // (block_k * tap_c)))
    grid = 2 * cdiv(c, block_c) + 9 * cdiv(k2, block_k) + 1
    return LaunchPlan(((slice(None), (grid,)),), (n_hi, n_lo, c, e, k2, *weight_strides),
                      dict(DEPTHWISE=depthwise, ACC_FP64=acc_dtype == torch.float64, NP=np_, EP=ep,
                           BLOCK_C=block_c, CHUNKS_C=chunks_c, BLOCK_K=block_k, TAP_C=tap_c, CHUNKS_T=chunks_t,
                           EVEN_C=n_hi % chunks_c == 0 and n_lo % chunks_c == 0,
                           EVEN_T=n_hi % chunks_t == 0 and n_lo % chunks_t == 0, num_warps=warps))
