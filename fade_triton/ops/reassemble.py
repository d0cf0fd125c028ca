"""CARAFE reassembly in Triton, forward: ``out = sum_k m_k * x_k``, with FADE's softmax of the
logits and its gate blend fused in when asked. The backward kernels are in ``reassemble_bwd.py``.

The forward has two kernels: ``reassemble_fwd_dot_kernel`` (``reassemble_dot.py``: band-matrix
products on tensor cores, for half inputs and TF32 float32 at s >= 2) and, for the rest (float32
IEEE, float64, s = 1), ``reassemble_fwd_kernel`` here; ``reassemble_fwd`` picks one per call
signature. ``reassemble_fwd_kernel`` and the backward kernels share one tiling
(``window.reassembly_program``): a program owns a tile of
TQ *low-resolution* pixels (TQ // TX rows x TX columns) of one image (and one mask group) and
loops over channel blocks. Each low-resolution pixel's s*s output pixels ("phases") live in the
same thread, so every gathered value serves all the output pixels that need it inside the program,
and each pixel's masks are computed once per program (held in registers across the channel loop).
The phases are processed PH at a time ("passes") to keep the masks within the register budget.

Register tiles are (channels, pixels). The compiler lays each load along its contiguous axis:
pixels for NCHW tensors (a warp's 32 lanes on 32 neighbouring pixels of one row, scalar loads,
channels held in-thread), channels for channels_last ones (16-byte vectors). Phase loads and
stores of ``en``/``out`` step by s along a row: each request fetches whole sectors of which the
other phases of the same program use the rest (from L1). Bytes each launch requests against its
minimum: ``python -m bench.tools.traffic``.

Names read forward to backward: ``reassemble_fwd_kernel`` / ``reassemble_fwd_dot_kernel`` -> ``reassemble_fwd``;
``reassemble_bwd_kernel`` + ``reassemble_bwd_feat_kernel`` -> ``reassemble_bwd``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .helpers import (LaunchPlan, batch_grids, cached_plan, cdiv, channel_fast, check_grid_axis1, dot_precision, launch,
                      next_pow2, slot_plan, spec, strides, target_of)
from .reassemble_dot import dot_tile, reassemble_fwd_dot_plan
from .window import channel_block, load_tap, pass_masks, phase, reassembly_program, sigmoid_gate

MASK_REGISTERS = 100  # fp32 mask values a thread may hold across the channel loop


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
    e(n), o(ut)). C_GROUP, GROUPS: channels per group, G. R: K // 2 (run time, see
    ``window.tap_masks``). K, S: kernel size, scale. PH: phases per pass (divides S*S). SOFTMAX,
    GATE: as above (FADE has GROUPS = 1). Tile: TQ low-resolution pixels x BLOCK_C channels,
    channels C_SPLIT at a time (SPLITS programs per pixel tile); the logits and the gate are read
    once per split. Grid: (SPLITS * cdiv(W, TX), cdiv(H, TQ // TX), B * GROUPS).
    """
    K2: tl.constexpr = K * K
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    b, g, ly, lx, q_ok, split, rows, cols, x_pix = reassembly_program(H, W, R, SPLITS, GROUPS, stride_xh, stride_xw,
                                                                      K, TX, TQ)
    if GATE:
        gate = sigmoid_gate(gate_ptr, b, ly, lx, q_ok, stride_gb, stride_gh, stride_gw, ACC)
    m_base = m_ptr + b * stride_mb + (g * K2).to(tl.int64) * stride_mc
    for ph0 in tl.static_range(0, S * S, PH):
        # the pass's PH*K2 masks per pixel, computed once and held across the channel loop
        ms, _ = pass_masks(m_base, stride_mc, stride_mh, stride_mw, ly, lx, q_ok, OH, OW, ph0, PH, S, K2, SOFTMAX, ACC)
        for c0 in range(split * C_SPLIT, tl.minimum(split * C_SPLIT + C_SPLIT, C_GROUP), BLOCK_C):
            c_ok, c = channel_block(c0, g, C_GROUP, BLOCK_C)
            x_ptrs = x_ptr + b * stride_xb + c * stride_xc + x_pix - tl.cast(R, tl.int64) * stride_xh - tl.cast(R, tl.int64) * stride_xw
            accs = ()  # accs[p]: the (BLOCK_C, TQ) output of phase p
            for p in tl.static_range(PH):
                accs = accs + (tl.zeros((BLOCK_C, TQ), ACC),)
            # each tap's x tile is loaded once and serves every phase of the pass
            for k in tl.static_range(K2):
                v, x_ptrs = load_tap(x_ptrs, c_ok, rows, cols, stride_xh, stride_xw, k, K, ACC)
                new = ()
                for p in tl.static_range(PH):
                    new = new + (accs[p] + ms[p * K2 + k][None, :] * v,)
                accs = new
            for p in tl.static_range(PH):
                oy, ox, pok = phase(ly, lx, q_ok, OH, OW, ph0 + p, S)
                io = c_ok[:, None] & pok[None, :]
                val = accs[p]
                if GATE:
                    e = tl.load(en_ptr + b * stride_eb + c * stride_ec + (oy * stride_eh + ox * stride_ew)[None, :],
                                mask=io, other=0.0).to(ACC)
                    val += gate[None, :] * (e - val)
                tl.store(out_ptr + b * stride_ob + c * stride_oc + (oy * stride_oh + ox * stride_ow)[None, :],
                         val.to(out_ptr.dtype.element_ty), mask=io)


def tile_config(x: torch.Tensor, c_group: int, kernel_size: int, scale: int, target, kernel: str = "fwd") -> dict:
    """Tile and pass sizes from static properties only (layout, dtype, channels, K, s, target), so a
    traced or exported call makes no guard on the spatial sizes.

    ``kernel``: "fwd", "bwd" or "feat" (the three kernels). Forward, NCHW-like x (pixel-fast): 4
    warps side by side along pixels (TQ = 128 = 4 rows x 32), each thread one pixel and BLOCK_C = 4
    channels. Forward, channels_last x: 16 channels of a pixel as 16-byte vectors (2 threads in
    bf16, 4 in fp32), tiles 8 pixels wide (8 x 8 or 4 x 8: the K x K windows' halo stays near that
    of NCHW tiles). Backward, both layouts: one pixel per thread and its channels in-thread (the
    channel sums of the mask gradient stay in-thread): 1 channel for NCHW (2 spill with triton 3.6
    on sm_90), 2 for channels_last (one 4- or 8-byte vector; 1 for the mask-gradient kernel on
    sm_80). PH: the most phases whose masks (backward: masks and gradients, or neighbour weights)
    fit ``MASK_REGISTERS``. Each choice is the one the compile report (``python -m bench.tools.aot``)
    shows spill-free at the headline case. Under Triton's interpreter (``target.interpreter``)
    channel blocks are at least 16 wide: the same code, run in a fraction of the time.
    """
    k2, ss = kernel_size * kernel_size, scale * scale
    budget = MASK_REGISTERS
    if kernel != "fwd":  # 2 channels (one vector) for channels_last, 1 for NCHW
        per_thread = 2 if channel_fast(x) and (kernel == "feat" or target.arch >= 90) else 1
        cfg = dict(TX=32, TQ=128, BLOCK_C=min(per_thread, next_pow2(c_group)))
        # masks and gradients (or neighbour weights) per phase; on sm_80 the mask-gradient kernel
        # takes one phase a pass (two spill there once every index product is 64-bit)
        budget //= 4 if kernel == "bwd" and target.arch < 90 else 2
    elif channel_fast(x):  # 16 channels a pixel in 16-byte vectors: 64 (bf16) or 32 (fp32) pixels, 8 wide
        vec = max(1, 16 // x.element_size())
        block_c = min(16, next_pow2(c_group, vec))
        tq = 4 * (32 * vec // block_c)
        cfg = dict(TX=min(8, tq), TQ=tq, BLOCK_C=block_c)
        budget //= 2 if vec >= 8 else 1
    else:
        cfg = dict(TX=32, TQ=128, BLOCK_C=min(4, next_pow2(c_group)))
    ph = max([d for d in range(1, ss + 1) if ss % d == 0 and d * k2 <= budget] or [1])
    if target.interpreter:  # the interpreter's cost is per operation, not per element: wide blocks
        cfg["BLOCK_C"] = max(cfg["BLOCK_C"], min(16, next_pow2(c_group)))
    return dict(cfg, PH=ph, num_warps=4)


def channel_splits(c_group: int, block_c: int) -> tuple[int, int]:
    """(splits, channels per split): programs per pixel tile along the channels, so that the
    grid has enough programs to fill the GPU (the masks are then computed once per split)."""
    per = max(block_c, 64)
    return cdiv(c_group, per), per


def reassembly_grids(batch, group_size, h, w, cfg, splits=1) -> tuple:
    """A reassembly kernel's launches, ``batch_grids``: (splits x column tiles, row tiles, images x
    groups) per batch slice (the batch is split to keep axis 2 within CUDA's limit); raises
    ValueError past axis 1's."""
    rows = cdiv(h, cfg["TQ"] // cfg["TX"])
    check_grid_axis1(rows, "reassembly (tiles of low-resolution rows: the height is too large)")
    return batch_grids(batch, group_size, "reassembly (mask groups)", (splits * cdiv(w, cfg["TX"]), rows))


def check_fusion(softmax: bool, gate, group_size: int) -> None:
    if (softmax or gate is not None) and group_size != 1:
        raise ValueError("the fused softmax / gate supports group_size == 1 only (FADE); carafe takes groups")


def reassemble_fwd(x, masks, gate, en, out, kernel_size, group_size, scale, softmax, slot=None, kernel="auto"):
    """Launch the reassembly forward into ``out`` (B, C, OH, OW). ``gate``: (B, H, W) gate
    logits or None; ``en`` required with a gate. Softmax or gate need group_size == 1.
    ``slot``: where the calling operator keeps this launch's plan (``helpers.slot_plan``), or None.
    ``kernel``: "dot" (``reassemble_dot.reassemble_fwd_dot_kernel``, tensor cores), "fma"
    (``reassemble_fwd_kernel``), or "auto": "dot" for half inputs, and for float32 where its dots
    run in TF32 (``helpers.dot_precision``), at s >= 2; else "fma"."""
    check_fusion(softmax, gate, group_size)
    if out.numel() == 0:
        return out
    plan = slot_plan(slot, lambda: reassemble_fwd_plan(spec(x), masks.stride(), gate is not None, strides(gate, 3),
                                                       strides(en), out.shape, out.stride(), kernel_size, group_size,
                                                       scale, softmax, target_of(x), kernel))
    launch(reassemble_fwd_kernel, plan, (x, masks, gate, en, out), (True,) * 5)
    return out


def dot_kernel_applies(x, kernel_size: int, scale: int, precision: str) -> bool:
    """``kernel="auto"``'s rule: the tensor-core kernels for half inputs, and for float32 where
    its dots run in TF32, where their tile applies (s >= 2, K > 1); the FMA kernels otherwise."""
    return (kernel_size > 1 and dot_tile(x, kernel_size, scale) is not None
            and (x.dtype in (torch.float16, torch.bfloat16) or precision == "tf32"))


@cached_plan
def reassemble_fwd_plan(x, m_strides, gated, gate_strides, en_strides, out_shape, out_strides, kernel_size, group_size,
                        scale, softmax, target, kernel="auto") -> LaunchPlan:
    """``reassemble_fwd``'s launches for one signature (``x`` a ``Spec``; ``gated``: a gate is
    given; ``kernel``: as ``reassemble_fwd``'s)."""
    precision = dot_precision(x.dtype, target)
    if kernel == "dot" or (kernel == "auto" and dot_kernel_applies(x, kernel_size, scale, precision)):
        tile = dot_tile(x, kernel_size, scale)
        if tile is None:
            raise ValueError(f"the dot reassembly needs scale >= 2 and a narrower band (K={kernel_size}, s={scale})")
        return reassemble_fwd_dot_plan(x, m_strides, gated, gate_strides, en_strides, out_shape, out_strides,
                                       kernel_size, group_size, scale, softmax, precision, tile, target.arch)
    b, c, h, w = x.shape
    cfg = tile_config(x, c // group_size, kernel_size, scale, target)
    splits, per = channel_splits(c // group_size, cfg["BLOCK_C"])
    args = (c // group_size, group_size, h, w, out_shape[2], out_shape[3], kernel_size // 2, splits, per,
            *x.stride(), *m_strides, *gate_strides, *en_strides, *out_strides)
    meta = dict(K=kernel_size, S=scale, SOFTMAX=softmax, GATE=gated, ACC_FP64=x.dtype == torch.float64, **cfg)
    return LaunchPlan(reassembly_grids(b, group_size, h, w, cfg, splits), args, meta)
