"""The providers the benchmark compares (SPEC.md, "The paths the benchmark compares").

Each provider builds, for a case, a module holding the case's weights and a callable
``fn(*inputs) -> out``. Providers that compute the op are checked against the ``torch`` path
before they are timed; ``bilinear`` is a different, cheaper function (the floor of any
upsampler's cost) and is not checked.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fade_triton.backend import triton_supports

from .cases import OPS, Case, make_inputs  # noqa: F401  (make_inputs: the providers' inputs)

PROVIDERS = ("triton", "torch", "naive", "naive_compiled", "mmcv", "bilinear")
CHECKED = ("triton", "naive", "naive_compiled", "mmcv")  # compared with "torch" before timing
OURS = ("triton", "torch")
BASELINES = ("naive", "naive_compiled", "mmcv")
# What the plots and the console call each provider (the keys stay the CLI/CSV names):
# "torch" is fade_triton's own pure-PyTorch path, not "plain PyTorch".
DISPLAY = {"triton": "fade_triton/triton", "torch": "fade_triton/torch", "naive": "naive (official form)",
           "naive_compiled": "naive + torch.compile", "mmcv": "mmcv (official)", "bilinear": "bilinear (not FADE)"}
ABOUT = {"triton": "fade_triton's Triton kernels (CUDA; Triton's CPU interpreter is for the tests only)",
         "torch": "fade_triton's own memory-lean path written in PyTorch ops (not a PyTorch built-in)",
         "naive": "the official pure-PyTorch formulation (F.interpolate semi-shift, F.unfold reassembly)",
         "naive_compiled": "naive under torch.compile (GPU only)",
         "mmcv": "the official implementation: PyTorch semi-shift + mmcv.ops.carafe (CUDA)",
         "bilinear": "F.interpolate(mode='bilinear'): not FADE, the floor of any upsampler's cost"}


def skip_reason(provider: str, case: Case, device: torch.device) -> str | None:
    """Why ``provider`` cannot run ``case`` on ``device`` (None when it can)."""
    cuda = device.type == "cuda"
    if provider == "triton" and not (cuda and triton_supports(device)):
        return ("needs a CUDA GPU (Triton's CPU interpreter checks correctness in the tests; "
                "its timings say nothing about GPU speed)")
    if provider == "naive_compiled" and not cuda:
        return "torch.compile on CPU takes longer than the CPU presets' budget; timed on GPU only"
    if provider == "mmcv":
        if not cuda:
            return "mmcv's CARAFE has CUDA kernels only"
        if case.dtype == "bfloat16":
            return "mmcv's CARAFE has no bfloat16 kernel"
        try:
            from fade_triton.ops.mmcv_path import load_mmcv_carafe

            load_mmcv_carafe()
        except RuntimeError as err:
            return str(err).split(". Import failed")[0]
    if device.type == "cpu" and case.dtype == "float16":
        return "float16 convolutions are not a CPU use case"
    return None


def build(provider: str, case: Case, device: torch.device) -> tuple[torch.nn.Module, object]:
    """Return ``(module, fn)``: the op's module holding the case's weights and ``fn(*inputs)``."""
    spec = OPS[case.op]
    torch.manual_seed(0)  # the same weights for every provider
    module = spec.build(case).to(device, getattr(torch, case.dtype))
    if case.layout == "channels_last":
        module = module.to(memory_format=torch.channels_last)
    with torch.no_grad():  # non-zero biases, so nothing is checked on a degenerate function
        for p in module.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.1)
    if provider == "bilinear":
        return module, lambda *inputs: F.interpolate(inputs[spec.low_res], scale_factor=case.scale, mode="bilinear",
                                                     align_corners=False)
    module.backend = "naive" if provider == "naive_compiled" else provider
    if provider == "naive_compiled":
        return module, torch.compile(module)
    return module, module
