"""The official implementation's path: semi-shift in PyTorch, mmcv's CARAFE for the reassembly.
mmcv's CARAFE has CUDA kernels only (float32/float64/float16). It comes from ``mmcv.ops.carafe``
(mmcv compiled with its ops: ``bash bench/tools/build_mmcv.sh build``) or, without a full mmcv, from
mmcv's own CARAFE sources compiled alone into the module ``mmcv_carafe_ext``
(``bash bench/tools/build_mmcv.sh carafe``), called through a copy of mmcv's ``CARAFEFunction``."""
from __future__ import annotations

import torch

from .fade.naive import fade_naive

_HOW = ("mmcv's compiled CARAFE is needed for backend='mmcv': on a CUDA machine, build mmcv with "
        "`bash bench/tools/build_mmcv.sh build`, or only its CARAFE op with `bash bench/tools/build_mmcv.sh carafe` "
        "(see bench/README.md)")


class MMCVCARAFEFunction(torch.autograd.Function):
    """mmcv 2.2.0's ``CARAFEFunction`` (mmcv/ops/carafe.py, Apache-2.0, Copyright (c) OpenMMLab),
    forward and backward as mmcv writes them (the same buffers, allocated the same way), calling
    the standalone build of mmcv's CARAFE CUDA op instead of ``mmcv._ext``."""

    @staticmethod
    def forward(ctx, features, masks, kernel_size, group_size, scale_factor):
        import mmcv_carafe_ext as ext

        assert scale_factor >= 1
        assert masks.size(1) == kernel_size * kernel_size * group_size
        assert masks.size(-1) == features.size(-1) * scale_factor
        assert masks.size(-2) == features.size(-2) * scale_factor
        assert features.size(1) % group_size == 0
        assert (kernel_size - 1) % 2 == 0 and kernel_size >= 1
        ctx.kernel_size, ctx.group_size, ctx.scale_factor = kernel_size, group_size, scale_factor
        n, c, h, w = features.size()
        output = features.new_zeros((n, c, h * scale_factor, w * scale_factor))
        routput = features.new_zeros(output.size(), requires_grad=False)
        rfeatures = features.new_zeros(features.size(), requires_grad=False)
        rmasks = masks.new_zeros(masks.size(), requires_grad=False)
        ext.carafe_forward(features, masks, rfeatures, routput, rmasks, output, kernel_size=kernel_size,
                           group_size=group_size, scale_factor=scale_factor)
        if features.requires_grad or masks.requires_grad:
            ctx.save_for_backward(features, masks, rfeatures)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        import mmcv_carafe_ext as ext

        features, masks, rfeatures = ctx.saved_tensors
        rgrad_output = torch.zeros_like(grad_output, requires_grad=False)
        rgrad_input_hs = torch.zeros_like(grad_output, requires_grad=False)
        rgrad_input = torch.zeros_like(features, requires_grad=False)
        rgrad_masks = torch.zeros_like(masks, requires_grad=False)
        grad_input = torch.zeros_like(features, requires_grad=False)
        grad_masks = torch.zeros_like(masks, requires_grad=False)
        ext.carafe_backward(grad_output.contiguous(), rfeatures, masks, rgrad_output, rgrad_input_hs,
                            rgrad_input, rgrad_masks, grad_input, grad_masks, kernel_size=ctx.kernel_size,
                            group_size=ctx.group_size, scale_factor=ctx.scale_factor)
        return grad_input, grad_masks, None, None, None


def load_mmcv_carafe():
    """Return mmcv's CARAFE: ``mmcv.ops.carafe`` if mmcv is installed with its compiled ops, else
    ``MMCVCARAFEFunction.apply`` if ``mmcv_carafe_ext`` is installed; else raise RuntimeError
    saying what is missing."""
    try:
        from mmcv.ops import carafe
        return carafe
    except ImportError as err:  # mmcv absent, or installed without its compiled _ext
        mmcv_error = err
    try:
        import mmcv_carafe_ext  # noqa: F401
    except ImportError as err:
        raise RuntimeError(f"{_HOW}. Import failed: {mmcv_error}; {err}") from err
    return MMCVCARAFEFunction.apply


def mmcv_carafe_source() -> str | None:
    """Which mmcv CARAFE ``load_mmcv_carafe`` returns, for the benchmark's records; None if none."""
    try:
        fn = load_mmcv_carafe()
    except RuntimeError:
        return None
    if fn == MMCVCARAFEFunction.apply:
        return "mmcv 2.2.0 CARAFE op built alone (mmcv_carafe_ext)"
    import mmcv
    return f"mmcv {mmcv.__version__} (mmcv.ops.carafe)"


def carafe_mmcv(features, masks, kernel_size, group_size, scale_factor):
    if features.device.type != "cuda":
        raise RuntimeError(f"backend='mmcv' runs on CUDA tensors only (mmcv has no CPU CARAFE), got {features.device}")
    if features.dtype == torch.bfloat16:
        raise RuntimeError("backend='mmcv' has no bfloat16 CARAFE kernel; use float16/float32 or another backend")
    return load_mmcv_carafe()(features, masks, kernel_size, group_size, scale_factor)


def fade_mmcv_path(en, de, weights, scale, depthwise, cache=None):
    """The ``mmcv`` backend: FADE as the official code computes it, L2H semi-shift in PyTorch and
    mmcv's CARAFE (an entry point of ``fade_triton.backend.IMPLEMENTATIONS``)."""
    return fade_naive(en, de, *weights, scale, carafe=carafe_mmcv, depthwise=depthwise)
