"""Semi-shift convolution in Triton: ``conv3x3(en-branch) + up(conv3x3(de-branch))``.

The 1x1 compressors are folded into the shared 3x3 content encoder (``fold_semi_shift_weights``),
so the kernel reads ``en`` and ``de`` themselves: neither ``enc`` (E channels at high
resolution) nor ``up(dec)`` nor ``up(conv3x3(dec))`` is ever written. The decoder branch is
computed at low resolution (K2 channels) and read at ``(y // s, x // s)`` by the encoder
branch's epilogue. The 3x3 is an implicit GEMM: for each of the 9 taps, a
(pixels x C_in) tile of the input times a (C_in x C_out) slice of the weight, with ``tl.dot``.

Names read forward to backward: ``conv3x3_fwd_kernel`` -> ``conv3x3_fwd`` (also the input
gradient, with transposed weights), ``conv3x3_bwd_weight_kernel`` -> ``conv3x3_bwd_weight``;
the custom ops ``fade_triton::semi_shift_fwd`` / ``semi_shift_bwd`` (opaque to torch.compile,
autograd registered) -> ``semi_shift``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import dot_precision, next_pow2

BLOCK_P = 64  # output pixels per program


@triton.jit
def conv3x3_fwd_kernel(
    x_ptr, w_ptr, tap_bias_ptr, bias_ptr, lo_ptr, out_ptr,
    C_IN, C_OUT, H, W, SCALE,
    stride_xb, stride_xc, stride_xh, stride_xw,
    stride_wo, stride_wi, stride_wh, stride_ww,
    stride_lb, stride_lc, stride_lh, stride_lw,
    stride_ob, stride_oc, stride_oh, stride_ow,
    HAS_TAP_BIAS: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_LO: tl.constexpr,
    ACC_FP64: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_CO: tl.constexpr,
):
    """out[b, o, y, x] = sum_{i, t} w[o, i, t] x[b, i, (y, x) + t]  (zero padding 1)
                         + sum_{t in bounds} tap_bias[o, t] + bias[o] + lo[b, o, y // SCALE, x // SCALE].

    x_ptr: input (B, C_IN, H, W), any strides. w_ptr: weight (C_OUT, C_IN, 3, 3), any strides,
    cast to x's dtype for the dot. tap_bias_ptr: (C_OUT, 9) contiguous, a bias that counts
    only where tap t lands inside the image (the folded compressor bias). bias_ptr: (C_OUT,).
    lo_ptr: low-resolution addend (B, C_OUT, H // SCALE, W // SCALE), any strides.
    out_ptr: (B, C_OUT, H, W), any strides; accumulated in fp32 (fp64 if ACC_FP64).
    C_IN, C_OUT, H, W: sizes (H, W of the output = of x). SCALE: lo's upsampling factor.
    stride_<t><d>: element strides of x, w, lo, out along their dims (b/o, c/i, h, w).
    HAS_TAP_BIAS, HAS_BIAS, HAS_LO: which optional terms exist (their pointers may be None).
    INPUT_PRECISION: tl.dot's, "tf32" or "ieee" (float32 only). BLOCK_P pixels x BLOCK_CI input
    channels x BLOCK_CO output channels per dot (each >= 16).
    Grid: (cdiv(H*W, BLOCK_P), B, cdiv(C_OUT, BLOCK_CO)).
    """
    acc_dtype: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    pid_p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    co = tl.program_id(2) * BLOCK_CO + tl.arange(0, BLOCK_CO)
    co_mask = co < C_OUT
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = p < H * W
    y = p // W
    x = p % W
    x_base = x_ptr + b * stride_xb
    acc = tl.zeros((BLOCK_P, BLOCK_CO), dtype=acc_dtype)
    for t in tl.static_range(9):
        yy = y + (t // 3 - 1)
        xx = x + (t % 3 - 1)
        inside = p_mask & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        pix_off = yy.to(tl.int64) * stride_xh + xx.to(tl.int64) * stride_xw
        for ci0 in range(0, C_IN, BLOCK_CI):
            ci = ci0 + tl.arange(0, BLOCK_CI)
            ci_mask = ci < C_IN
            a = tl.load(x_base + pix_off[:, None] + ci[None, :].to(tl.int64) * stride_xc,
                        mask=inside[:, None] & ci_mask[None, :], other=0.0)
            w = tl.load(w_ptr + co[None, :] * stride_wo + ci[:, None] * stride_wi
                        + (t // 3) * stride_wh + (t % 3) * stride_ww,
                        mask=ci_mask[:, None] & co_mask[None, :], other=0.0)
            acc = tl.dot(a, w.to(a.dtype), acc, input_precision=INPUT_PRECISION, out_dtype=acc_dtype)
        if HAS_TAP_BIAS:
            tb = tl.load(tap_bias_ptr + co * 9 + t, mask=co_mask, other=0.0).to(acc_dtype)
            acc += tl.where(inside[:, None], tb[None, :], 0.0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + co, mask=co_mask, other=0.0).to(acc_dtype)[None, :]
    out_mask = p_mask[:, None] & co_mask[None, :]
    if HAS_LO:
        lo_off = (b * stride_lb + (y // SCALE).to(tl.int64) * stride_lh
                  + (x // SCALE).to(tl.int64) * stride_lw)
        acc += tl.load(lo_ptr + lo_off[:, None] + co[None, :].to(tl.int64) * stride_lc,
                       mask=out_mask, other=0.0).to(acc_dtype)
    out_off = b * stride_ob + y.to(tl.int64) * stride_oh + x.to(tl.int64) * stride_ow
    tl.store(out_ptr + out_off[:, None] + co[None, :].to(tl.int64) * stride_oc,
             acc.to(out_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def conv3x3_bwd_weight_kernel(
    grad_ptr, x_ptr, partial_ptr,
    C_IN, C_OUT, H, W, PIX_PER_PROG,
    stride_gb, stride_gc, stride_gh, stride_gw,
    stride_xb, stride_xc, stride_xh, stride_xw,
    ACC_FP64: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_CO: tl.constexpr,
):
    """Partial weight gradient of a 3x3 conv over one chunk of pixels of one image:
    partial[chunk, b, t, o, i] = sum_{p in chunk} grad[b, o, p] * x[b, i, p + t].

    grad_ptr: output gradient (B, C_OUT, H, W), any strides. x_ptr: the conv input
    (B, C_IN, H, W), any strides, cast to grad's dtype. partial_ptr: contiguous fp32/fp64
    (n_chunks, B, 9, C_OUT, C_IN); the caller sums over (chunk, b) in a fixed order, so the
    result is deterministic (no atomics). PIX_PER_PROG: pixels per chunk, a multiple of BLOCK_P.
    C_IN, C_OUT, H, W: sizes. stride_<t><d>: element strides of grad and x (b, c, h, w).
    ACC_FP64, INPUT_PRECISION: as in ``conv3x3_fwd_kernel``. BLOCK_CO >= C_OUT (one block: the
    output channels are FADE's K2); BLOCK_P pixels and BLOCK_CI input channels per dot.
    Grid: (n_chunks, B, 9 * cdiv(C_IN, BLOCK_CI)).
    """
    acc_dtype: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    chunk = tl.program_id(0)
    b = tl.program_id(1)
    t = tl.program_id(2) % 9
    ci = (tl.program_id(2) // 9) * BLOCK_CI + tl.arange(0, BLOCK_CI)
    ci_mask = ci < C_IN
    co = tl.arange(0, BLOCK_CO)
    co_mask = co < C_OUT
    dy = t // 3 - 1
    dx = t % 3 - 1
    g_base = grad_ptr + b.to(tl.int64) * stride_gb
    x_base = x_ptr + b.to(tl.int64) * stride_xb
    acc = tl.zeros((BLOCK_CO, BLOCK_CI), dtype=acc_dtype)
    for p0 in range(chunk * PIX_PER_PROG, (chunk + 1) * PIX_PER_PROG, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        p_mask = p < H * W
        y = p // W
        x = p % W
        g = tl.load(g_base + y[:, None].to(tl.int64) * stride_gh + x[:, None].to(tl.int64) * stride_gw
                    + co[None, :].to(tl.int64) * stride_gc, mask=p_mask[:, None] & co_mask[None, :], other=0.0)
        yy = y + dy
        xx = x + dx
        inside = p_mask & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        a = tl.load(x_base + yy[:, None].to(tl.int64) * stride_xh + xx[:, None].to(tl.int64) * stride_xw
                    + ci[None, :].to(tl.int64) * stride_xc, mask=inside[:, None] & ci_mask[None, :], other=0.0)
        acc = tl.dot(tl.trans(g), a.to(g.dtype), acc, input_precision=INPUT_PRECISION, out_dtype=acc_dtype)
    n_b = tl.num_programs(1)
    out = partial_ptr + (((chunk * n_b + b) * 9 + t) * C_OUT).to(tl.int64) * C_IN
    tl.store(out + co[:, None] * C_IN + ci[None, :], acc, mask=co_mask[:, None] & ci_mask[None, :])


def conv3x3_fwd(x, weight, out_dtype, tap_bias=None, bias=None, lo=None, scale=1):
    """Launch ``conv3x3_fwd_kernel``; returns (B, C_OUT, H, W) of ``out_dtype``, contiguous."""
    b, c_in, h, w = x.shape
    c_out = weight.shape[0]
    out = torch.empty((b, c_out, h, w), dtype=out_dtype, device=x.device)
    if out.numel() == 0:
        return out
    block_co = min(64, next_pow2(c_out, 16))
    block_ci = min(32, next_pow2(c_in, 16))
    lo_strides = lo.stride() if lo is not None else (0, 0, 0, 0)
    grid = (triton.cdiv(h * w, BLOCK_P), b, triton.cdiv(c_out, block_co))
    conv3x3_fwd_kernel[grid](
        x, weight, tap_bias, bias, lo, out,
        c_in, c_out, h, w, scale,
        *x.stride(), *weight.stride(), *lo_strides, *out.stride(),
        HAS_TAP_BIAS=tap_bias is not None, HAS_BIAS=bias is not None, HAS_LO=lo is not None,
        ACC_FP64=x.dtype == torch.float64, INPUT_PRECISION=dot_precision(x),
        BLOCK_P=BLOCK_P, BLOCK_CI=block_ci, BLOCK_CO=block_co,
    )
    return out


def conv3x3_bwd_input(grad, weight, out_dtype):
    """Input gradient of a 3x3 'same' cross-correlation: a 3x3 conv of ``grad`` with the
    weight transposed (in <-> out) and flipped. The flipped copy is of the (small) weight."""
    return conv3x3_fwd(grad, weight.transpose(0, 1).flip(2, 3), out_dtype)


def conv3x3_bwd_weight(grad, x, pix_per_prog=4096):
    """Weight gradient (C_OUT, C_IN, 3, 3) in grad's dtype, reduced without atomics."""
    b, c_out, h, w = grad.shape
    c_in = x.shape[1]
    pix_per_prog = min(pix_per_prog, triton.cdiv(h * w, BLOCK_P) * BLOCK_P)
    n_chunks = triton.cdiv(h * w, pix_per_prog)
    block_ci = min(32, next_pow2(c_in, 16))
    partial = torch.empty((n_chunks, b, 9, c_out, c_in), dtype=grad.dtype, device=grad.device)
    if partial.numel() == 0:
        return grad.new_zeros((c_out, c_in, 3, 3))
    grid = (n_chunks, b, 9 * triton.cdiv(c_in, block_ci))
    conv3x3_bwd_weight_kernel[grid](
        grad, x, partial, c_in, c_out, h, w, pix_per_prog,
        *grad.stride(), *x.stride(),
        ACC_FP64=grad.dtype == torch.float64, INPUT_PRECISION=dot_precision(grad),
        BLOCK_P=BLOCK_P, BLOCK_CI=block_ci, BLOCK_CO=next_pow2(c_out, 16),
    )
    return partial.sum((0, 1)).permute(1, 2, 0).reshape(c_out, c_in, 3, 3).contiguous()


def tap_bias_grad(grad):
    """d/d tap_bias[o, t] = sum of grad[:, o] over the pixels where tap t lands inside."""
    g = grad.sum(0)  # (C_OUT, H, W)
    h, w = g.shape[1:]
    rows = [g[:, 1:].sum(1), g.sum(1), g[:, : h - 1].sum(1)]  # tap row dy = -1, 0, +1
    cols = []
    for r in rows:  # r: (C_OUT, W)
        cols += [r[:, 1:].sum(1), r.sum(1), r[:, : w - 1].sum(1)]
    return torch.stack(cols, 1)  # (C_OUT, 9)


def fold_semi_shift_weights(en_weight, en_bias, de_weight, kernel_weight):
    """Fold the 1x1 compressors into the 3x3 content encoder (differentiable torch ops).

    Returns ``(w_en, tap_bias, w_de)``: (K2, C, 3, 3), (K2, 9), (K2, C, 3, 3), in float32 (float64
    for float64 weights), such that ``conv3x3(conv1x1(en; We, be); Wk) ==
    conv3x3(en; w_en) + sum over in-bounds taps of tap_bias`` and likewise for ``de``.
    FADE-Lite's depthwise ``Wk`` (K2, 1, 3, 3) folds the same way.
    """
    dtype = torch.promote_types(kernel_weight.dtype, torch.float32)
    wk = kernel_weight.to(dtype).flatten(2)  # (K2, E or 1, 9)
    we = en_weight.to(dtype).flatten(1)  # (E, C)
    wd = de_weight.to(dtype).flatten(1)
    be = en_bias.to(dtype)
    if kernel_weight.shape[1] == 1 and en_weight.shape[0] == kernel_weight.shape[0] > 1:  # depthwise
        w_en = wk * we[:, :, None]
        w_de = wk * wd[:, :, None]
        tap_bias = wk[:, 0] * be[:, None]
    else:
        w_en = torch.einsum("ket,ec->kct", wk, we)
        w_de = torch.einsum("ket,ec->kct", wk, wd)
        tap_bias = torch.einsum("ket,e->kt", wk, be)
    return w_en.unflatten(2, (3, 3)), tap_bias.contiguous(), w_de.unflatten(2, (3, 3))


@torch.library.custom_op("fade_triton::semi_shift_fwd", mutates_args=())
def semi_shift_fwd(en: torch.Tensor, de: torch.Tensor, w_en: torch.Tensor, tap_bias: torch.Tensor,
                   w_de: torch.Tensor, bias: torch.Tensor, scale: int) -> torch.Tensor:
    """logits = conv3x3(en; w_en) + tap bias + bias + up(conv3x3(de; w_de) + bias), float32
    (float64 for float64 inputs). Temporary: the low-resolution logits, B*K2*H*W."""
    acc = torch.float64 if en.dtype == torch.float64 else torch.float32
    lo = conv3x3_fwd(de, w_de, acc, bias=bias)
    return conv3x3_fwd(en, w_en, acc, tap_bias=tap_bias, bias=bias, lo=lo, scale=scale)


@semi_shift_fwd.register_fake
def _(en, de, w_en, tap_bias, w_de, bias, scale):
    acc = torch.float64 if en.dtype == torch.float64 else torch.float32
    return en.new_empty((en.shape[0], w_en.shape[0], en.shape[2], en.shape[3]), dtype=acc)


@torch.library.custom_op("fade_triton::semi_shift_bwd", mutates_args=())
def semi_shift_bwd(grad: torch.Tensor, en: torch.Tensor, de: torch.Tensor, w_en: torch.Tensor,
                   w_de: torch.Tensor, scale: int, needs: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                               torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (en, de, w_en, tap_bias, w_de, bias) of ``semi_shift_fwd``; the i-th is computed
    only where ``needs[i]`` (else a 0-element tensor). Temporaries: the low-resolution logit
    gradient (B*K2*H*W) and the weight-gradient partials."""
    b, k2, oh, ow = grad.shape
    grad_lo = grad.unflatten(3, (ow // scale, scale)).unflatten(2, (oh // scale, scale)).sum((3, 5))
    grads = (lambda: conv3x3_bwd_input(grad, w_en, en.dtype), lambda: conv3x3_bwd_input(grad_lo, w_de, de.dtype),
             lambda: conv3x3_bwd_weight(grad, en).to(w_en.dtype), lambda: tap_bias_grad(grad).to(w_en.dtype),
             lambda: conv3x3_bwd_weight(grad_lo, de).to(w_de.dtype),
             lambda: grad.sum((0, 2, 3)) + grad_lo.sum((0, 2, 3)))
    return tuple(g() if need else grad.new_empty(0) for g, need in zip(grads, needs))


@semi_shift_bwd.register_fake
def _(grad, en, de, w_en, w_de, scale, needs):
    k2 = w_en.shape[0]
    shapes = (en, de, w_en, w_en.new_empty((k2, 9)), w_de, w_en.new_empty((k2,)))
    return tuple(t.new_empty(t.shape) if need else grad.new_empty(0) for t, need in zip(shapes, needs))


def _semi_shift_setup_context(ctx, inputs, output):
    en, de, w_en, _, w_de, _, scale = inputs
    ctx.save_for_backward(en, de, w_en, w_de)  # the caller's tensors: no copies
    ctx.scale = scale


def _semi_shift_backward(ctx, grad):
    needs = list(ctx.needs_input_grad[:6])
    grads = semi_shift_bwd(grad, *ctx.saved_tensors, ctx.scale, needs)
    return *(g if need else None for g, need in zip(grads, needs)), None


semi_shift_fwd.register_autograd(_semi_shift_backward, setup_context=_semi_shift_setup_context)


def semi_shift(en, de, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale):
    """FADE's semi-shift logits (B, K2, sH, sW), float32 (float64 for float64 inputs)."""
    w_en, tap_bias, w_de = fold_semi_shift_weights(en_weight, en_bias, de_weight, kernel_weight)
    bias = kernel_bias.to(w_en.dtype)
    return semi_shift_fwd(en, de, w_en, tap_bias, w_de, bias, scale)
