"""The inverse of the weight fold (``fold.py``) for the backward: the module's seven weight
gradients from the folded 3x3's weight-gradient partials (``ops/conv3x3.py``,
``conv3x3_weight_grad``), summed over the chunks in a fixed order (bitwise deterministic)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..helpers import LaunchPlan, cached_plan, cdiv, launch, next_pow2, slot_plan, target_of


# chunks a step of the chunk sums on sm_90 (half on sm_80): 16 loads in flight per thread (one
# wait on memory per 16 chunks; the speed model, bench.tools.sass_model, puts the headline launch
# at 59 µs against 343 at one a step); the sums stay in the same order
UNFOLD_CHUNKS = 16


@triton.jit
def _chunk_sum(ptr, n_chunks, chunk_stride, offs, mask, acc_dtype: tl.constexpr, CHUNKS: tl.constexpr):
    """sum over chunks, in order, of ptr[chunk * chunk_stride + offs]: CHUNKS chunks a step, their
    loads issued together (in flight at once: a step waits on memory once, not CHUNKS times) and
    added in order (the same sums as one chunk a step)."""
    total = tl.zeros(offs.shape, acc_dtype)
    ptrs = ptr + offs
    step = tl.cast(chunk_stride, tl.int64)
    whole = n_chunks - n_chunks % CHUNKS
    for _ in range(0, whole, CHUNKS):
        for _j in tl.static_range(CHUNKS):
            total += tl.load(ptrs, mask=mask, other=0.0)
            ptrs += step
    if whole < n_chunks:  # the last, partial step: its loads in flight together as well
        index = tl.zeros(offs.shape, tl.int32) + whole  # the chunk index as a tile (a mask operand)
        for j in tl.static_range(CHUNKS):
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
    DEPTHWISE: tl.constexpr, ACC_FP64: tl.constexpr,
    NP: tl.constexpr, EP: tl.constexpr, BLOCK_C: tl.constexpr, CHUNKS: tl.constexpr,
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
    Programs 0 .. cdiv(C, BLOCK_C) - 1 own a channel block (dWe, dWd, dWg); the next 9 own a
    tap t (dWk[:, :, t]); the last the biases. part_*: (n_chunks, 9, C, NP) contiguous;
    tap_hi: (n_hi, 9, NP); tap_lo: (n_lo, 9, NP) (its centre tap is L_lo): the chunks' shares
    of the tap sums, which only their sum over the chunks gives. wk_ptr: Wk
    (K2, E or 1, 3, 3) by stride_wk_k/e/t (t = the flattened 3x3); we, wd: (E, C) by
    stride_we_e/c and stride_wd_e/c; be: (E,) by stride_be (the module's weights, any strides).
    Outputs contiguous in the weights' shapes. E <= EP, K2 < NP. The chunk sums take CHUNKS
    chunks a step (``_chunk_sum``). Tile: (NP, BLOCK_C) partials, loaded along their contiguous
    NP axis (16-byte vectors). The channel programs read all partials once between them, the tap
    programs once more: 2 x (n_hi + n_lo) x 9 x C x NP elements requested against a minimum of
    one read (the weights and tap sums are small).
    """
    acc_dtype: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    pid = tl.program_id(0)
    n_cb = tl.cdiv(C, BLOCK_C)
    k = tl.arange(0, NP)
    e = tl.arange(0, EP)
    k_ok = k < K2
    e_ok = e < E
    k64, e64 = k.to(tl.int64), e.to(tl.int64)  # weight offsets: the weights may be strided views
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
            r_hi = _chunk_sum(part_hi_ptr + t * C * NP, n_hi, 9 * C * NP, offs, rmask, acc_dtype, CHUNKS)
            r_lo = _chunk_sum(part_lo_ptr + t * C * NP, n_lo, 9 * C * NP, offs, rmask, acc_dtype, CHUNKS)
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
        tb = _chunk_sum(tap_hi_ptr + t * NP, n_hi, 9 * NP, k, k < NP, acc_dtype, CHUNKS)  # (NP,)
        if DEPTHWISE:
            d_wk = tb * tl.load(be_ptr + k64 * stride_be, mask=k_ok, other=0.0).to(acc_dtype)
            for c0 in range(0, C, BLOCK_C):
                c = c0 + tl.arange(0, BLOCK_C)
                rmask = (k < NP)[:, None] & (c < C)[None, :]
                offs = t * C * NP + k[:, None] + c[None, :] * NP
                r_hi = _chunk_sum(part_hi_ptr, n_hi, 9 * C * NP, offs, rmask, acc_dtype, CHUNKS)
                r_lo = _chunk_sum(part_lo_ptr, n_lo, 9 * C * NP, offs, rmask, acc_dtype, CHUNKS)
                wmask = k_ok[:, None] & (c < C)[None, :]
                we = tl.load(we_ptr + k64[:, None] * stride_we_e + c.to(tl.int64)[None, :] * stride_we_c, mask=wmask,
                             other=0.0).to(acc_dtype)
                wd = tl.load(wd_ptr + k64[:, None] * stride_wd_e + c.to(tl.int64)[None, :] * stride_wd_c, mask=wmask,
                             other=0.0).to(acc_dtype)
                d_wk += tl.sum(we * r_hi + wd * r_lo, 1)
            tl.store(d_wk_ptr + k * 9 + t, d_wk, mask=k_ok)
        else:
            d_wk = tb[:, None] * tl.load(be_ptr + e64 * stride_be, mask=e_ok, other=0.0).to(acc_dtype)[None, :]  # (NP, EP)
            for c0 in range(0, C, BLOCK_C):
                c = c0 + tl.arange(0, BLOCK_C)
                rmask = (k < NP)[:, None] & (c < C)[None, :]
                offs = t * C * NP + k[:, None] + c[None, :] * NP
                r_hi = _chunk_sum(part_hi_ptr, n_hi, 9 * C * NP, offs, rmask, acc_dtype, CHUNKS)  # (NP, BLOCK_C)
                r_lo = _chunk_sum(part_lo_ptr, n_lo, 9 * C * NP, offs, rmask, acc_dtype, CHUNKS)
                wmask = e_ok[:, None] & (c < C)[None, :]
                we = tl.load(we_ptr + e64[:, None] * stride_we_e + c.to(tl.int64)[None, :] * stride_we_c, mask=wmask,
                             other=0.0).to(acc_dtype)  # (EP, BLOCK_C)
                wd = tl.load(wd_ptr + e64[:, None] * stride_wd_e + c.to(tl.int64)[None, :] * stride_wd_c, mask=wmask,
                             other=0.0).to(acc_dtype)
                d_wk = tl.dot(r_hi, tl.trans(we), d_wk, input_precision="ieee", out_dtype=acc_dtype)
                d_wk = tl.dot(r_lo, tl.trans(wd), d_wk, input_precision="ieee", out_dtype=acc_dtype)
            tl.store(d_wk_ptr + k[:, None] * E * 9 + e[None, :] * 9 + t, d_wk, mask=k_ok[:, None] & e_ok[None, :])
    else:
        tb_c = _chunk_sum(tap_hi_ptr + 4 * NP, n_hi, 9 * NP, k, k < NP, acc_dtype, CHUNKS)
        lo_c = _chunk_sum(tap_lo_ptr + 4 * NP, n_lo, 9 * NP, k, k < NP, acc_dtype, CHUNKS)
        tl.store(d_bk_ptr + k, tb_c + lo_c, mask=k_ok)
        tl.store(d_gb_ptr + k * 0, lo_c, mask=k == K2)
        if DEPTHWISE:
            d_be = tl.zeros((NP,), acc_dtype)
        else:
            d_be = tl.zeros((EP,), acc_dtype)
        for t in tl.static_range(9):
            tb = _chunk_sum(tap_hi_ptr + t * NP, n_hi, 9 * NP, k, k < NP, acc_dtype, CHUNKS)
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
    sm_90: 32 channels a program over 8 warps, UNFOLD_CHUNKS a step; sm_80 (where ptxas gives
    FADE-Lite's 16 chunks a step 128 registers and spills): 16 channels over 4 warps, half the
    chunks a step (the compile report checks both)."""
    n_hi, _, c, np_ = hi_shape
    block_c, warps, chunks = (32, 8, UNFOLD_CHUNKS) if target.arch >= 90 else (16, 4, UNFOLD_CHUNKS // 2)
    return LaunchPlan(((slice(None), (cdiv(c, block_c) + 10,)),), (n_hi, n_lo, c, e, k2, *weight_strides),
                      dict(DEPTHWISE=depthwise, ACC_FP64=acc_dtype == torch.float64, NP=np_, EP=next_pow2(e, 16),
                           BLOCK_C=block_c, CHUNKS=chunks, num_warps=warps))
