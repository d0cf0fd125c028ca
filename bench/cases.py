"""Benchmark cases and named presets."""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

DTYPES = ("float32", "float16", "bfloat16")
MODES = ("fwd", "fwd+bwd")
OPS = ("fade", "fade_lite")
LAYOUTS = ("nchw", "channels_last")


@dataclass(frozen=True)
class Case:
    """One measured configuration: decoder feature (batch, channels, size, size) upsampled by
    ``scale`` against an encoder feature (batch, channels, scale*size, scale*size), both in
    ``layout`` ("nchw": contiguous; "channels_last": torch.channels_last)."""

    op: str  # "fade" | "fade_lite"
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

    def row(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        embed = f" E={self.embed}" if self.op == "fade" else ""
        return (f"{self.op} {self.mode} {self.dtype} B={self.batch} C={self.channels}{embed} K={self.kernel} "
                f"{self.size}^2->{self.size * self.scale}^2{' channels_last' if self.layout != 'nchw' else ''}")


def _grid(sweep, ops=OPS, modes=MODES, dtypes=("float32",), batch=(8,), channels=(256,), sizes=(64,),
          layouts=("nchw",)):
    return [Case(op, b, c, s, dt, m, sweep=sweep, layout=lay)
            for lay, op, m, dt, b, c, s in itertools.product(layouts, ops, modes, dtypes, batch, channels, sizes)]


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
    "gpu": "the GPU default: resolution 16^2..256^2 at B=8, C=256 in float32/float16/bfloat16 (bfloat16 "
           "also channels_last), channels 64..1024 and batch 1..16 in bfloat16 (100 cases). GPU only: at "
           "256^2 -> 512^2 the naive path holds B*C*K*K*sH*sW floats (54 GB in float32).",
}


def preset(name: str) -> list[Case]:
    """The case list of a named preset (see ``PRESETS``)."""
    if name == "quick":
        return (_grid("resolution", batch=(1,), channels=(32,), sizes=(16, 24, 32))
                + _grid("resolution", ops=("fade",), batch=(1,), channels=(32,), sizes=(16, 24, 32),
                        layouts=("channels_last",)))
    if name == "memory-target":
        return _grid("resolution", ops=("fade",), modes=("fwd",), batch=(2,), channels=(64,))
    if name == "headline":
        return _grid("resolution", dtypes=("float32", "bfloat16"), layouts=LAYOUTS)
    if name == "segformer-b1":
        return _grid("resolution", dtypes=("float32", "float16"), batch=(2,), sizes=(16, 32, 64))
    if name == "gpu":
        return (_grid("resolution", dtypes=DTYPES, sizes=(16, 32, 64, 128, 256))
                + _grid("resolution", dtypes=("bfloat16",), sizes=(16, 32, 64, 128, 256), layouts=("channels_last",))
                + _grid("channels", ops=("fade",), dtypes=("bfloat16",), channels=(64, 128, 256, 512, 1024))
                + _grid("batch", ops=("fade",), dtypes=("bfloat16",), batch=(1, 2, 4, 8, 16)))
    raise ValueError(f"unknown preset {name!r}; choose from {tuple(PRESETS)}")
