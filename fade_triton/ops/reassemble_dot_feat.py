"""The gradient of x of the CARAFE reassembly on tensor cores, ``reassemble_bwd_feat_dot_kernel``:
the forward's band matrices (``reassemble_dot.py``) transposed, chosen by
``reassemble_bwd.reassemble_bwd`` where its mask-gradient dot kernel runs and K <= 9.

For tap row i, the output pixels of one output row that reach a tile of Q dx columns add
``dout[C, P] @ M_i[P, Q]`` into dx row ``oy // s + i - R``, ``M_i`` holding each pixel's weights
``m * (1 - G)`` of tap row i on its K band columns. A program walks a strip of dx rows once with
K rolling accumulators, so each dout row is loaded once per channel block; each program owns
its dx elements (a gather: no atomics, deterministic). As in the forward, a non-finite dout
value turns the dx of its whole tile row NaN (zero band entries times inf).

Choices checked in the compile report and the speed model (bench.tools.sass_model, sm_90, bf16
headline; docs/PERFORMANCE.md, "The feature gradient on tensor cores"): Q = 16 (P = 16*s pixels
a row), 128 channels over 8 warps (the band matrices serve twice the channels of 64 over 4),
two stages of loads, each tap row's weights loaded as a (P, next_pow2(K)) tile so that one
gather index serves every tap row (a shifted index per tap row kept five derived copies live).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .helpers import LaunchPlan, batch_grids, cdiv, check_grid_axis1, next_pow2
from .reassemble_dot import dot_channels, dot_meta
from .window import sigmoid_gate

FEAT_Q = 16  # dx columns of the feature gradient's dots (the band matrices' width)


@triton.jit
def reassemble_bwd_feat_dot_kernel(
    m_ptr, lse_ptr, gate_ptr, dout_ptr, dx_ptr,
    C_GROUP, GROUPS, H, W, OH, OW, STRIP,
    stride_mb, stride_mc, stride_mh, stride_mw,
    stride_gb, stride_gh, stride_gw,
    stride_db, stride_dc, stride_dh, stride_dw,
    stride_xb, stride_xc, stride_xh, stride_xw,
    K: tl.constexpr, S: tl.constexpr, SOFTMAX: tl.constexpr, GATE: tl.constexpr, ACC_FP64: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, Q: tl.constexpr, BLOCK_C: tl.constexpr, EVEN_C: tl.constexpr,
    KP: tl.constexpr,
):
    """The function of ``reassemble_bwd.reassemble_bwd_feat_kernel`` (same tensors, strides and
    flags: dx = the gradient of x) on the forward's band matrices, transposed. A program owns
    BLOCK_C channels x TX = Q - K + 1 columns x STRIP rows of dx. The output pixels of one output
    row that reach those columns are P = Q*S consecutive ones (low-resolution columns x0 - R ..
    x0 - R + Q - 1), and for tap row i their sum into dx row ``oy // S + i - R`` is
    ``dout[BLOCK_C, P] @ M_i[P, Q]``, M_i the band matrix of ``reassemble_fwd_dot_kernel`` (each
    pixel's weights m * (1 - G) of tap row i on its K columns).

    The program walks the low-resolution rows yy = y0 - R .. y0 + STRIP - 1 + R once: for each,
    its S output rows' dout tiles are loaded once and feed K fp32 accumulators, one per dx row
    yy - R .. yy + R (rolling: after row yy, dx row yy - R is complete and stored, and a zero
    accumulator takes the new last place). Each dout element is requested (STRIP + K - 1) / STRIP
    x Q / TX times; a gather (each program owns its dx elements): no atomics, deterministic.

    STRIP: dx rows a program owns (any positive int). Q: dx columns of the dot (a power of two,
    Q*S a power of two); TX = Q - K + 1 are stored. BLOCK_C: channels a program owns. EVEN_C:
    BLOCK_C divides C_GROUP. KP: next_pow2(K), the width of a tap row's weight tile. The dots
    take dout and the weights in dx's dtype (16-bit: the weights rounded to it, values in [0, 1];
    float32: TF32 with INPUT_PRECISION "tf32") and accumulate in fp32. Other arguments as in ``reassemble_bwd_feat_kernel`` and
    ``reassemble_fwd_dot_kernel``.
    Grid: (cdiv(C_GROUP, BLOCK_C) * cdiv(W, TX), cdiv(H, STRIP), B * GROUPS).
    """
    R: tl.constexpr = K // 2
    K2: tl.constexpr = K * K
    TX: tl.constexpr = Q - K + 1
    P: tl.constexpr = Q * S
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    DT: tl.constexpr = dx_ptr.dtype.element_ty
    c_blocks = tl.cdiv(C_GROUP, BLOCK_C)
    x0 = (tl.program_id(0) // c_blocks) * TX
    y0 = tl.program_id(1) * STRIP
    b = (tl.program_id(2) // GROUPS).to(tl.int64)
    g = tl.program_id(2) % GROUPS
    c_ok, c = dot_channels((tl.program_id(0) % c_blocks) * BLOCK_C, g, C_GROUP, BLOCK_C, EVEN_C)
    c = tl.trans(c)  # (BLOCK_C, 1)

    # the P output columns of a row, their low-resolution column sx, and the band: pixel p's tap
    # column j lands on dx column x0 + q, q = p // S - 2R + j
    p = tl.arange(0, P)
    ox = (x0 - R) * S + p
    sx = x0 - R + p // S
    col_ok = (ox >= 0) & (ox < OW)
    zero_p = tl.zeros((P,), tl.int32)
    q = tl.arange(0, Q)
    band = q[None, :] - (p // S - 2 * R)[:, None]
    on_band = (band >= 0) & (band < K)
    tap = tl.where(on_band, band, 0)
    j = tl.arange(0, KP)
    tap_ok = (j < K)[None, :]

    # pointers at output row (y0 - R) * S: dout (BLOCK_C, P), masks of tap row 0 (P, KP), lse
    # (P,); the gate is read per low-resolution row (``window.sigmoid_gate``)
    oy0 = (y0 - R) * S
    d_ptrs = (dout_ptr + b * stride_db + c * stride_dc
              + (ox.to(tl.int64) * stride_dw)[None, :] + tl.cast(oy0, tl.int64) * stride_dh)
    m_ptrs = (m_ptr + b * stride_mb + (g * K2 + j).to(tl.int64)[None, :] * stride_mc
              + (ox.to(tl.int64) * stride_mw)[:, None] + tl.cast(oy0, tl.int64) * stride_mh)
    if SOFTMAX:
        lse_ptrs = lse_ptr + (b * OH + oy0) * OW + ox

    dx_ptrs = (dx_ptr + b * stride_xb + c * stride_xc + ((x0 + q).to(tl.int64) * stride_xw)[None, :]
               + tl.cast(y0 - 2 * R, tl.int64) * stride_xh)
    dx_ok = c_ok[:, None] & ((q < TX) & (x0 + q < W))[None, :]
    y_end = tl.minimum(y0 + STRIP, H)
    zero_q = tl.zeros((Q,), tl.int32)

    accs = ()  # accs[i]: dx row yy - R + i
    for i in tl.static_range(K):
        accs = accs + (tl.zeros((BLOCK_C, Q), ACC),)
    for yy in range(y0 - R, y0 + STRIP + R):
        if GATE:
            ly = zero_p + yy  # (P,): a scalar & a tensor mask is an int in the interpreter
            keep = 1.0 - sigmoid_gate(gate_ptr, b, ly, sx, col_ok & (ly >= 0) & (ly < H), stride_gb, stride_gh,
                                      stride_gw, ACC)
        for r in tl.static_range(S):
            oy = zero_p + (yy * S + r)
            pix_ok = col_ok & (oy >= 0) & (oy < OH)
            if SOFTMAX:
                lse = tl.load(lse_ptrs, mask=pix_ok, other=0.0)
            dout = tl.load(d_ptrs, mask=c_ok[:, None] & pix_ok[None, :], other=0.0).to(DT)
            new = ()
            for i in tl.static_range(K):
                # tap row i's weights (P, KP), and its band matrix gathered from them: one index
                # tensor (``tap``) for every i, so what the gather derives from it is shared
                w = tl.load(m_ptrs + tl.cast(i * K, tl.int64) * stride_mc, mask=pix_ok[:, None] & tap_ok, other=0.0).to(ACC)
                if SOFTMAX:
                    w = tl.exp(w - lse[:, None])
                if GATE:
                    w = w * keep[:, None]
                mat = tl.where(on_band & pix_ok[:, None], tl.gather(w, tap, axis=1), 0.0).to(DT)
                new = new + (tl.dot(dout, mat, accs[i], input_precision=INPUT_PRECISION, out_dtype=ACC),)
            accs = new
            m_ptrs += stride_mh
            if SOFTMAX:
                lse_ptrs += OW
            d_ptrs += stride_dh
        # dx row yy - R has all its terms: store it where it is the program's, and roll
        y = zero_q + (yy - R)  # (Q,): a scalar & a tensor mask is an int in the interpreter
        tl.store(dx_ptrs, accs[0].to(DT), mask=dx_ok & ((y >= y0) & (y < y_end))[None, :])
        accs = accs[1:] + (tl.zeros((BLOCK_C, Q), ACC),)
        dx_ptrs += stride_xh


def reassemble_bwd_feat_dot_plan(dx, m_strides, gated, gate_strides, dout_strides, dmasks_shape, kernel_size,
                                 group_size, scale, softmax, precision) -> LaunchPlan | None:
    """``reassemble_bwd_feat_dot_kernel``'s launches (``dx`` a ``Spec``), or None where it does not
    apply: K = 1, s not a power of two up to 8, or a band wider than half the dot's Q = 64 / s
    columns (fewer than half of them stored)."""
    if kernel_size < 2 or scale not in (2, 4, 8) or 2 * (FEAT_Q - kernel_size + 1) < FEAT_Q:
        return None
    b, c, h, w = dx.shape
    c_group = c // group_size
    block_c = min(128, next_pow2(c_group, 16))
    oh, ow = dmasks_shape[2:]
    col_tiles = cdiv(w, FEAT_Q - kernel_size + 1)
    tiles = cdiv(c_group, block_c) * col_tiles * b * group_size
    # rows a program owns: as many as leave an H100's 132 SMs 3 programs each (each program
    # reads K - 1 rows of dout past its own); 16 for symbolic sizes (no guard on them)
    strip = max(kernel_size - 1, cdiv(h, cdiv(3 * 132, tiles))) if isinstance(h * tiles, int) else 16
    check_grid_axis1(cdiv(h, strip), "reassembly feature gradient (row strips: the height is too large)")
    args = (c_group, group_size, h, w, oh, ow, strip, *m_strides, *gate_strides, *dout_strides, *dx.stride())
    meta = dot_meta(dx, kernel_size, scale, softmax, gated, precision, dict(Q=FEAT_Q, KP=next_pow2(kernel_size)),
                    block_c, c_group, num_stages=2, num_warps=8 if block_c > 64 else 4)
    grids = batch_grids(b, group_size, "reassembly (mask groups)", (cdiv(c_group, block_c) * col_tiles, cdiv(h, strip)))
    return LaunchPlan(grids, args, meta, kernel=reassemble_bwd_feat_dot_kernel)
