"""Benchmark cases and named presets."""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

DTYPES = ("float32", "float16", "bfloat16")
MODES = ("fwd", "fwd+bwd")
OPS = ("fade", "fade_lite")


@dataclass(frozen=True)
class Case:
    """One measured configuration: decoder feature (batch, channels, size, size) upsampled by
    ``scale`` against an encoder feature (batch, channels, scale*size, scale*size)."""

    op: str  # "fade" | "fade_lite"
    batch: int
    channels: int
    size: int  # decoder H = W
    dtype: str = "float32"
    mode: str = "fwd"  # "fwd" | "fwd+bwd"
    scale: int = 2
    kernel: int = 5
    embed: int = 64
    sweep: str = "resolution"  # which axis this case belongs to, for the plots

    def row(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        return (f"{self.op} {self.mode} {self.dtype} B={self.batch} C={self.channels} "
                f"{self.size}^2->{self.size * self.scale}^2")


def _grid(sweep, ops=OPS, modes=MODES, dtypes=("float32",), batch=(8,), channels=(256,), sizes=(64,)):
    return [Case(op, b, c, s, dt, m, sweep=sweep)
            for op, m, dt, b, c, s in itertools.product(ops, modes, dtypes, batch, channels, sizes)]


def preset(name: str) -> list[Case]:
    """Named case lists. ``quick`` fits a 2-core CPU in under a minute; ``gpu`` is the full
    GPU sweep; ``headline`` is the issue's reference shape (B=8, C=256, 64^2 -> 128^2);
    ``segformer-b1`` is the paper's SegFormer-B1 head (C=256, stride 32/16/8 maps of a 512^2
    image, batch 2 per GPU); ``memory-target`` is the torch path's memory target (B=2, C=64,
    64^2 -> 128^2, float32 forward)."""
    if name == "quick":
        return _grid("resolution", batch=(1,), channels=(32,), sizes=(16, 24, 32))
    if name == "memory-target":
        return _grid("resolution", ops=("fade",), modes=("fwd",), batch=(2,), channels=(64,))
    if name == "headline":
        return _grid("resolution", dtypes=("float32", "bfloat16"))
    if name == "segformer-b1":
        return _grid("resolution", dtypes=("float32", "float16"), batch=(2,), sizes=(16, 32, 64))
    if name == "gpu":
        return (_grid("resolution", dtypes=DTYPES, sizes=(16, 32, 64, 128, 256))
                + _grid("channels", ops=("fade",), dtypes=("bfloat16",), channels=(64, 128, 256, 512, 1024))
                + _grid("batch", ops=("fade",), dtypes=("bfloat16",), batch=(1, 2, 4, 8, 16)))
    raise ValueError(f"unknown preset {name!r}; choose from {PRESETS}")


PRESETS = ("quick", "memory-target", "headline", "segformer-b1", "gpu")
