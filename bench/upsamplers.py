"""Upsamplers users compare FADE with, as benchmark baselines (not part of fade_triton's API).

``DySample``: Liu, Lu, Fu, Cao, "Learning to Upsample by Learning to Sample", ICCV 2023, written
here in PyTorch from the paper's description (its "LP" style: offsets generated at low
resolution, then pixel-shuffled). For an input x (B, C, H, W) and scale s:

- a linear (1x1 conv) offset generator gives ``2 * groups * s * s`` channels: an (x, y) offset for
  each of the s*s sub-pixels of each low-resolution pixel, per channel group;
- the offsets are multiplied by a scope factor: the static 0.25 (which keeps neighbouring sample
  points from overlapping), or with ``dyscope=True`` the dynamic ``0.5 * sigmoid(scope(x))``
  of a second linear layer;
- added to the initial positions, the sub-pixel centres of bilinear upsampling
  ((i - (s - 1) / 2) / s for i in 0..s-1, in input pixels), so an all-zero generator gives
  bilinear upsampling;
- pixel-shuffled to (B, groups, sH, sW) sample points and sampled from x with
  ``F.grid_sample`` (bilinear, border padding, align_corners=False), each group of C / groups
  channels at its own points.

Initialisation as the paper's code describes: the offset layer's weights N(0, 0.001**2), zero
bias; the dynamic-scope layer zero (no bias), so training starts at the static 0.5 * 0.5.
It is a different function from FADE (a point sampler, not a kernel reassembly): the benchmark
labels it as such and never checks it against FADE.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DySample(nn.Module):
    """DySample-LP upsampler (see the module docstring): ``forward(x)`` (B, C, H, W) ->
    (B, C, scale*H, scale*W) in x's dtype.

    Args:
        in_channels: C; must divide by ``groups``.
        scale: integer upsampling factor >= 1.
        groups: channel groups with their own sample points (4 in the paper).
        dyscope: the dynamic scope factor (DySample+ / "-S+" variants) instead of the static 0.25.
    """

    def __init__(self, in_channels: int, scale: int = 2, groups: int = 4, dyscope: bool = False):
        super().__init__()
        if in_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) must be divisible by groups ({groups})")
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be an int >= 1, got {scale!r}")
        self.scale, self.groups = scale, groups
        out_channels = 2 * groups * scale * scale
        self.offset = nn.Conv2d(in_channels, out_channels, 1)
        nn.init.normal_(self.offset.weight, 0.0, 0.001)
        nn.init.zeros_(self.offset.bias)
        self.scope = nn.Conv2d(in_channels, out_channels, 1, bias=False) if dyscope else None
        if self.scope is not None:
            nn.init.zeros_(self.scope.weight)

    def initial_position(self, like: torch.Tensor) -> torch.Tensor:
        """(1, 2*groups*s*s, 1, 1) in ``like``'s dtype and device: the sub-pixel centres, channel
        order (axis, group, sub-row, sub-col), x first."""
        s = self.scale
        centres = (torch.arange(s, dtype=like.dtype, device=like.device) - (s - 1) / 2) / s
        sub_y, sub_x = torch.meshgrid(centres, centres, indexing="ij")
        return torch.stack([sub_x, sub_y])[:, None].expand(2, self.groups, s, s).reshape(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scope is None:
            offset = self.offset(x) * 0.25
        else:
            offset = self.offset(x) * self.scope(x).sigmoid() * 0.5
        offset = offset + self.initial_position(offset)
        return self.sample(x, offset)

    def sample(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Sample x at the pixel centres of the low-resolution grid plus ``offset``
        (B, 2*groups*s*s, H, W), in input pixels."""
        b, c, h, w = x.shape
        s, g = self.scale, self.groups
        ys = torch.arange(h, device=x.device, dtype=offset.dtype) + 0.5
        xs = torch.arange(w, device=x.device, dtype=offset.dtype) + 0.5
        size = torch.tensor([w, h], device=x.device, dtype=offset.dtype).view(1, 2, 1, 1, 1)
        centre = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)]).view(1, 2, 1, h, w)
        points = 2 * (centre + offset.view(b, 2, g * s * s, h, w)) / size - 1  # grid_sample's [-1, 1]
        points = F.pixel_shuffle(points.view(b, 2 * g * s * s, h, w), s)  # (B, 2*g, sH, sW)
        grid = points.view(b, 2, g, s * h, s * w).permute(0, 2, 3, 4, 1).reshape(b * g, s * h, s * w, 2)
        out = F.grid_sample(x.reshape(b * g, c // g, h, w), grid, mode="bilinear", padding_mode="border",
                            align_corners=False)
        return out.view(b, c, s * h, s * w)
