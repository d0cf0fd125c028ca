"""Benchmark cases, the operators they run (``OPS``: the one place the benchmark and its tools
learn how to build an op and its inputs) and the named presets."""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch

import fade_triton as ft
from fade_triton.ops.carafe.op import carafe_flops
from fade_triton.ops.fade.op import fade_flops

DTYPES = ("float32", "float16", "bfloat16")
MODES = ("fwd", "fwd+bwd")
LAYOUTS = ("nchw", "channels_last")
# The headline case: what the compile report, the byte model, one_step and the GPU session measure.
HEADLINE = dict(batch=8, channels=256, embed=64, kernel=5, scale=2, size=64)


@dataclass(frozen=True)
class Case:
    """One measured configuration: decoder feature (batch, channels, size, size) upsampled by
    ``scale`` against an encoder feature (batch, channels, scale*size, scale*size), both in
    ``layout`` ("nchw": contiguous; "channels_last": torch.channels_last). For ``carafe`` the
    decoder feature is the features and the encoder's place is taken by ``groups`` groups of
    K*K masks."""

    op: str  # a key of OPS
    batch: int
    channels: int
    size: int  # decoder H = W
    dtype: str = "float32"
    mode: str = "fwd"  # "fwd" | "fwd+bwd"
    scale: int = 2
    kernel: int = 5
    embed: int = 64  # E; FADE-Lite has no embedding (its kernel generator is K*K wide)
    sweep: str = "resolution"  # which axis this case belongs to, for the plots
    layout: str = "nchw"
    groups: int = 1  # carafe's mask groups

    def row(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        extra = f" E={self.embed}" if self.op == "fade" else f" G={self.groups}" if self.op == "carafe" else ""
        return (f"{self.op} {self.mode} {self.dtype} B={self.batch} C={self.channels}{extra} K={self.kernel} "
                f"{self.size}^2->{self.size * self.scale}^2{' channels_last' if self.layout != 'nchw' else ''}")


class CarafeCall(torch.nn.Module):
    """``fade_triton.carafe`` as a module, so the benchmark's tools call every op alike:
    ``forward(features, masks)``; ``backend`` as on the FADE modules."""

    def __init__(self, kernel_size: int, group_size: int, scale_factor: int, backend: str = "auto"):
        super().__init__()
        self.kernel_size, self.group_size, self.scale_factor, self.backend = kernel_size, group_size, scale_factor, backend

    def forward(self, features, masks):
        return ft.carafe(features, masks, self.kernel_size, self.group_size, self.scale_factor, backend=self.backend)


@dataclass(frozen=True)
class OpSpec:
    """How the benchmark runs an op. ``build(case)``: the module holding the case's weights (its
    ``backend`` attribute picks the implementation); ``inputs(case, gen)``: its inputs, float32 on
    the CPU, drawn from ``gen``; ``names``: what the inputs are called in gradient checks;
    ``low_res``: which input is the low-resolution feature (what ``bilinear`` upsamples);
    ``flops(case)``: forward FLOPs of the function (the package's formula);
    ``min_elements(case)``: the elements a forward must read and write at least."""

    build: Callable
    inputs: Callable
    names: tuple
    low_res: int
    flops: Callable
    min_elements: Callable


def _fade_inputs(case, gen):
    hi, lo = case.size * case.scale, case.size
    return (torch.randn(case.batch, case.channels, hi, hi, generator=gen, device=gen.device),
            torch.randn(case.batch, case.channels, lo, lo, generator=gen, device=gen.device))


def _carafe_inputs(case, gen):
    hi, k2 = case.size * case.scale, case.kernel ** 2
    features = torch.randn(case.batch, case.channels, case.size, case.size, generator=gen, device=gen.device)
    masks = torch.randn(case.batch, case.groups, k2, hi, hi, generator=gen, device=gen.device)
    masks = masks.softmax(2).flatten(1, 2)
    return features, masks


def _fade_flops(case):
    hi, emb = case.size * case.scale, case.kernel ** 2 if case.op == "fade_lite" else case.embed
    k2, c = case.kernel ** 2, case.channels
    return fade_flops((case.batch, c, hi, hi), (case.batch, c, case.size, case.size), (emb, c, 1, 1),
                      (k2, 1 if case.op == "fade_lite" else emb, 3, 3))


def _fade_elements(case):  # en and de read, out written
    return (2 * case.scale ** 2 + 1) * case.batch * case.channels * case.size ** 2


def _carafe_flops(case):
    hi = case.size * case.scale
    return carafe_flops((case.batch, case.channels), (case.batch, 0, hi, hi), case.kernel)


def _carafe_elements(case):  # features and masks read, out written
    pixels = case.batch * case.size ** 2
    return pixels * (case.channels * (1 + case.scale ** 2) + case.groups * case.kernel ** 2 * case.scale ** 2)


OPS = {
    "fade": OpSpec(lambda c: ft.FADE(c.channels, scale=c.scale, up_kernel_size=c.kernel, embedding_dim=c.embed),
                   _fade_inputs, ("en", "de"), 1, _fade_flops, _fade_elements),
    "fade_lite": OpSpec(lambda c: ft.FADELite(c.channels, scale=c.scale, up_kernel_size=c.kernel),
                        _fade_inputs, ("en", "de"), 1, _fade_flops, _fade_elements),
    "carafe": OpSpec(lambda c: CarafeCall(c.kernel, c.groups, c.scale), _carafe_inputs, ("features", "masks"), 0,
                     _carafe_flops, _carafe_elements),
}


def make_inputs(case: Case, device: torch.device, requires_grad: bool, seed: int = 1) -> tuple[torch.Tensor, ...]:
    """The op's inputs for the case (seeded), in its dtype and layout, leaves requiring grad when asked.
    Drawn on the CPU (the same values on every device, whatever the caller's default device is),
    then moved to ``device``."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    fmt = torch.channels_last if case.layout == "channels_last" else torch.contiguous_format
    return tuple(t.to(device, getattr(torch, case.dtype)).to(memory_format=fmt).requires_grad_(requires_grad)
                 for t in OPS[case.op].inputs(case, gen))


def _grid(sweep, ops=("fade", "fade_lite"), modes=MODES, dtypes=("float32",), batch=(8,), channels=(256,),
          sizes=(64,), layouts=("nchw",)):
    return [Case(op, b, c, s, dt, m, sweep=sweep, layout=lay)
            for lay, op, m, dt, b, c, s in itertools.product(layouts, ops, modes, dtypes, batch, channels, sizes)]


# The axes a case list can sweep: Case field -> the name ``Case.sweep`` and the plots give it.
SWEEP_AXES = {"size": "resolution", "channels": "channels", "batch": "batch", "kernel": "kernel", "scale": "scale",
              "embed": "embed"}
# The case ``python -m bench``'s case options start from without --preset (each option replaces its axis).
CUSTOM_BASE = Case(op="fade", batch=1, channels=32, size=32, sweep="single")


def with_axes(cases: list[Case], **axes) -> list[Case]:
    """Every case of ``cases`` with each given axis (a Case field -> its values) replaced by each of
    its values, duplicates dropped in order. When a numeric axis (``SWEEP_AXES``) was given, every
    case's ``sweep`` is set anew from what the list varies: that axis's name when exactly one
    varies, "single" when none does, "mixed" when several do (no plot can show those)."""
    given = {k: tuple(v) for k, v in axes.items() if v}
    cases = [replace(base, **dict(zip(given, values)))
             for base in cases for values in itertools.product(*given.values())]
    if set(given) & set(SWEEP_AXES):
        varying = [name for field, name in SWEEP_AXES.items() if len({getattr(c, field) for c in cases}) > 1]
        sweep = varying[0] if len(varying) == 1 else "mixed" if varying else "single"
        cases = [replace(c, sweep=sweep) for c in cases]
    return list(dict.fromkeys(cases))  # a case kept once per sweep it belongs to


# name -> what it measures and how long it takes; ``python -m bench --help`` prints these.
PRESETS = {
    "quick": "B=1, C=32, E=64, K=5, decoder 16^2/24^2/32^2 upsampled x2, float32, fwd and fwd+bwd; "
             "FADE and FADE-Lite in NCHW, FADE also channels_last (18 cases). The CPU default: about "
             "1 minute on 2 CPU cores, minutes more while other processes compete for them.",
    "memory-target": "B=2, C=64, 64^2 -> 128^2, float32, FADE forward only (1 case): the fade_triton/torch "
                     "path's memory target. Under 1 minute on 2 CPU cores.",
    "headline": "B=8, C=256, E=64, 64^2 -> 128^2, float32 and bfloat16, NCHW and channels_last, FADE and "
                "FADE-Lite, fwd and fwd+bwd (16 cases). Sized for a GPU; not timed on CPU.",
    "segformer-b1": "the paper's SegFormer-B1 head: B=2, C=256, decoder 16^2/32^2/64^2 (stride 32/16/8 maps "
                    "of a 512^2 image), float32 and float16 (24 cases). Sized for a GPU; not timed on CPU.",
    "dysample-fig1": "the DySample paper's Figure 1 case: B=1, C=256, 120^2 -> 240^2, float32/float16/bfloat16, "
                     "fwd and fwd+bwd; FADE and FADE-Lite through every provider beside bilinear, DySample "
                     "(static and dynamic scope) and CARAFEPack (12 cases; float16 skipped on CPU). Compares "
                     "upsamplers: also writes latency_vs_miou.png (published mIoU, bench/papers.py) and "
                     "memory snapshots. 10 minutes on the 2-core machine with --threads 1 while other processes "
                     "used 50-75% of its CPU (2026-11-30).",
    "gpu": "the GPU default: resolution 16^2..256^2 at B=8, C=256 in float32/float16/bfloat16 (bfloat16 "
           "also channels_last), channels 64..1024 and batch 1..16 in bfloat16 (100 cases). GPU only: at "
           "256^2 -> 512^2 the naive path holds B*C*K*K*sH*sW floats (54 GB in float32).",
}
# presets that compare FADE with the other upsamplers: every provider by default, and the
# latency-vs-mIoU plot (bench/papers.py)
COMPARISON_PRESETS = ("dysample-fig1",)


def preset(name: str) -> list[Case]:
    """The case list of a named preset (see ``PRESETS``)."""
    h = HEADLINE
    if name == "quick":
        return (_grid("resolution", batch=(1,), channels=(32,), sizes=(16, 24, 32))
                + _grid("resolution", ops=("fade",), batch=(1,), channels=(32,), sizes=(16, 24, 32),
                        layouts=("channels_last",)))
    if name == "memory-target":
        return _grid("resolution", ops=("fade",), modes=("fwd",), batch=(2,), channels=(64,))
    if name == "headline":
        return _grid("resolution", dtypes=("float32", "bfloat16"), batch=(h["batch"],), channels=(h["channels"],),
                     sizes=(h["size"],), layouts=LAYOUTS)
    if name == "dysample-fig1":
        return _grid("resolution", dtypes=DTYPES, batch=(1,), sizes=(120,))
    if name == "segformer-b1":
        return _grid("resolution", dtypes=("float32", "float16"), batch=(2,), sizes=(16, 32, 64))
    if name == "gpu":
        return (_grid("resolution", dtypes=DTYPES, sizes=(16, 32, 64, 128, 256))
                + _grid("resolution", dtypes=("bfloat16",), sizes=(16, 32, 64, 128, 256), layouts=("channels_last",))
                + _grid("channels", ops=("fade",), dtypes=("bfloat16",), channels=(64, 128, 256, 512, 1024))
                + _grid("batch", ops=("fade",), dtypes=("bfloat16",), batch=(1, 2, 4, 8, 16)))
    raise ValueError(f"unknown preset {name!r}; choose from {tuple(PRESETS)}")
