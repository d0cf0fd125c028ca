"""The providers the benchmark compares (SPEC.md, "The paths the benchmark compares").

Each provider builds, for a case, a module holding the case's weights and a callable
``fn(*inputs) -> out``. Providers that compute the op are checked against the ``torch`` path
before they are timed. ``OTHER_UPSAMPLERS`` are different functions run on the case's
low-resolution input and never checked against FADE: ``bilinear`` (the floor of any
upsampler's cost), DySample (``bench/upsamplers.py``) and CARAFE's content-aware upsampler
(``CARAFEPack``: fade_triton's, and mmcv's where mmcv is built) - what users pick instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fade_triton.backend import triton_supports

from .cases import COMPARISON_PRESETS, OPS, Case, make_inputs  # noqa: F401  (make_inputs: the providers' inputs)

FADE_PROVIDERS = ("triton", "torch", "naive", "naive_compiled", "mmcv", "bilinear")  # the default set
OTHER_UPSAMPLERS = ("bilinear", "dysample", "dysample_dyscope", "carafepack", "carafepack_mmcv")
PROVIDERS = FADE_PROVIDERS + OTHER_UPSAMPLERS[1:]
CHECKED = ("triton", "naive", "naive_compiled", "mmcv")  # compared with "torch" before timing
OURS = ("triton", "torch")
BASELINES = ("naive", "naive_compiled", "mmcv")
# What the plots and the console call each provider (the keys stay the CLI/CSV names):
# "torch" is fade_triton's own pure-PyTorch path, not "plain PyTorch".
DISPLAY = {"triton": "fade_triton/triton", "torch": "fade_triton/torch", "naive": "naive (official form)",
           "naive_compiled": "naive + torch.compile", "mmcv": "mmcv (official)", "bilinear": "bilinear (not FADE)",
           "dysample": "DySample (not FADE)", "dysample_dyscope": "DySample+ dyn. scope (not FADE)",
           "carafepack": "CARAFEPack, fade_triton (not FADE)", "carafepack_mmcv": "CARAFEPack, mmcv (not FADE)"}
ABOUT = {"triton": "fade_triton's Triton kernels (CUDA; Triton's CPU interpreter is for the tests only)",
         "torch": "fade_triton's own memory-lean path written in PyTorch ops (not a PyTorch built-in)",
         "naive": "the official pure-PyTorch formulation (F.interpolate semi-shift, F.unfold reassembly)",
         "naive_compiled": "naive under torch.compile (GPU only)",
         "mmcv": "the official implementation: PyTorch semi-shift + mmcv.ops.carafe (CUDA)",
         "bilinear": "F.interpolate(mode='bilinear'): not FADE, the floor of any upsampler's cost",
         "dysample": "DySample-LP (Liu et al., ICCV 2023), groups 4, static scope 0.25 (bench/upsamplers.py): not FADE",
         "dysample_dyscope": "DySample-LP with the dynamic scope 0.5*sigmoid(linear(x)): not FADE",
         "carafepack": "CARAFE's upsampler (Wang et al., ICCV 2019) as fade_triton.CARAFEPack, K=5, "
                       "compressed 64: not FADE",
         "carafepack_mmcv": "the same through mmcv.ops.CARAFEPack (CUDA, mmcv built): not FADE"}


def default_providers(preset_name: str) -> tuple[str, ...]:
    """Every provider for a preset that compares upsamplers (``cases.COMPARISON_PRESETS``),
    FADE's and bilinear for the others."""
    return PROVIDERS if preset_name in COMPARISON_PRESETS else FADE_PROVIDERS


def build_other_upsampler(provider: str, case: Case) -> torch.nn.Module:
    """The module of one of ``OTHER_UPSAMPLERS`` but bilinear, for the case's channels and scale
    (float32 on the CPU; mmcv's CARAFEPack has the same parameters as fade_triton's)."""
    if provider.startswith("dysample"):
        from .upsamplers import DySample

        return DySample(case.channels, case.scale, groups=4, dyscope=provider == "dysample_dyscope")
    if provider == "carafepack_mmcv":
        from mmcv.ops import CARAFEPack

        return CARAFEPack(case.channels, case.scale, up_kernel=case.kernel)
    import fade_triton as ft

    return ft.CARAFEPack(case.channels, case.scale, up_kernel=case.kernel)


def mmcv_carafepack_missing() -> str | None:
    """Why ``mmcv.ops.CARAFEPack`` cannot be imported here (None when it can)."""
    try:
        from mmcv.ops import CARAFEPack  # noqa: F401
    except Exception as err:  # ImportError, or mmcv's own error when its compiled ops are missing
        return f"mmcv.ops.CARAFEPack is not importable ({type(err).__name__}: build mmcv, bench/tools/build_mmcv.sh)"
    return None


NAIVE_CPU_MAX_ELEMENTS = 2**28  # the naive path's unfold above this is too slow for a CPU preset


def naive_unfold_elements(case: Case) -> int:
    """Values in the naive path's high-resolution unfold of the decoder feature, B*K*K*C*sH*sW."""
    return case.batch * case.kernel ** 2 * case.channels * (case.size * case.scale) ** 2


def skip_reason(provider: str, case: Case, device: torch.device) -> str | None:
    """Why ``provider`` cannot run ``case`` on ``device`` (None when it can)."""
    cuda = device.type == "cuda"
    if provider in OTHER_UPSAMPLERS[1:] and case.op != "fade":
        return "a different upsampler from FADE: measured once per size, on the fade cases"
    if provider == "triton" and not (cuda and triton_supports(device)):
        return ("needs a CUDA GPU (Triton's CPU interpreter checks correctness in the tests; "
                "its timings say nothing about GPU speed)")
    if provider == "naive" and not cuda and naive_unfold_elements(case) > NAIVE_CPU_MAX_ELEMENTS:
        return (f"its unfolded tensor (B*K*K*C*sH*sW = {naive_unfold_elements(case):.1e} values) takes over 10 s "
                "per call on CPU; timed on GPU only")
    if provider == "naive_compiled" and not cuda:
        return "torch.compile on CPU takes longer than the CPU presets' budget; timed on GPU only"
    if provider in ("mmcv", "carafepack_mmcv"):
        if not cuda:
            return "mmcv's CARAFE has CUDA kernels only"
        if case.dtype == "bfloat16":
            return "mmcv's CARAFE has no bfloat16 kernel"
        if provider == "carafepack_mmcv":
            return mmcv_carafepack_missing()
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
    other = provider in OTHER_UPSAMPLERS[1:]
    module = build_other_upsampler(provider, case) if other else spec.build(case)
    module = module.to(device, getattr(torch, case.dtype))
    if case.layout == "channels_last":
        module = module.to(memory_format=torch.channels_last)
    with torch.no_grad():  # non-zero biases, so nothing is checked on a degenerate function
        for p in module.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.1)
    if other:
        return module, lambda *inputs: module(inputs[spec.low_res])
    if provider == "bilinear":
        return module, lambda *inputs: F.interpolate(inputs[spec.low_res], scale_factor=case.scale, mode="bilinear",
                                                     align_corners=False)
    module.backend = "naive" if provider == "naive_compiled" else provider
    if provider == "naive_compiled":
        return module, torch.compile(module)
    return module, module
