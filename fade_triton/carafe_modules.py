"""mmcv-compatible CARAFE modules without mmcv: ``CARAFE`` (reassembly with given masks) and
``CARAFEPack`` (the content-aware upsampler of Wang et al., ICCV 2019, as mmdet's ``FPN_CARAFE``
uses it).

Names, signatures, defaults, initialisation and ``state_dict`` keys are mmcv's
(``mmcv.ops.CARAFE``, ``mmcv.ops.CARAFEPack``), so ``from mmcv.ops import CARAFEPack`` becomes
``from fade_triton import CARAFEPack`` and a checkpoint saved with mmcv's module loads as is
(``channel_compressor.{weight,bias}``, ``content_encoder.{weight,bias}``). The one addition is
``backend=`` (as on every fade_triton module); the reassembly is :func:`fade_triton.carafe`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backend import check_backend
from .checks import check_kernel_size, check_positive_int, check_scale
from .functional import carafe, tracer_warnings_off


class CARAFE(nn.Module):
    """``mmcv.ops.CARAFE``: ``forward(features, masks)`` is
    ``carafe(features, masks, kernel_size, group_size, scale_factor)``, masks already normalised.

    Args:
        kernel_size: odd reassembly window K.
        group_size: mask groups G (the features' channels must divide by it).
        scale_factor: integer upsampling factor.
        backend: "auto", "triton", "torch", "naive" or "mmcv" (see ``fade_triton.backend``).
    """

    def __init__(self, kernel_size: int, group_size: int, scale_factor: int, backend: str = "auto"):
        super().__init__()
        self.kernel_size = check_kernel_size(kernel_size)
        self.group_size = check_positive_int("group_size", group_size)
        self.scale_factor = check_scale(scale_factor, "scale_factor")
        self.backend = check_backend(backend)

    def forward(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return carafe(features, masks, self.kernel_size, self.group_size, self.scale_factor, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, group_size={self.group_size}, "
                f"scale_factor={self.scale_factor}, backend={self.backend!r}")


class CARAFEPack(nn.Module):
    """``mmcv.ops.CARAFEPack``: upsample ``x`` (B, channels, H, W) by ``scale_factor`` with
    kernels predicted from ``x`` itself.

    forward: ``channel_compressor`` (1x1 conv, channels -> compressed_channels), then
    ``content_encoder`` (encoder_kernel x encoder_kernel conv, dilation ``encoder_dilation``,
    padding ``int((encoder_kernel - 1) * encoder_dilation / 2)``, -> up_group * up_kernel**2 *
    scale_factor**2 channels), ``F.pixel_shuffle`` of that mask by ``scale_factor``, a softmax
    over each group's up_kernel**2 taps, and ``carafe`` of ``x`` with it. Returns
    (B, channels, scale_factor*H, scale_factor*W) in ``x``'s dtype.

    Initialisation as mmcv: Xavier-uniform weights and zero biases for both convolutions, then
    the content encoder's weights drawn again from N(0, 0.001**2) (so the first masks are
    nearly uniform).

    Args:
        channels: input channels.
        scale_factor: integer upsampling factor >= 1.
        up_kernel: odd reassembly window K (default 5).
        up_group: mask groups G (default 1); ``channels`` must divide by it.
        encoder_kernel: content encoder's kernel size (default 3).
        encoder_dilation: content encoder's dilation (default 1).
        compressed_channels: the compressor's output channels (default 64).
        backend: the reassembly's backend, "auto", "triton", "torch", "naive" or "mmcv".
    """

    def __init__(self, channels: int, scale_factor: int, up_kernel: int = 5, up_group: int = 1,
                 encoder_kernel: int = 3, encoder_dilation: int = 1, compressed_channels: int = 64,
                 backend: str = "auto"):
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.scale_factor = check_scale(scale_factor, "scale_factor")
        self.up_kernel = check_kernel_size(up_kernel, "up_kernel")
        self.up_group = check_positive_int("up_group", up_group)
        if self.channels % self.up_group:
            raise ValueError(f"channels ({self.channels}) must be divisible by up_group ({self.up_group})")
        self.encoder_kernel = check_positive_int("encoder_kernel", encoder_kernel)
        self.encoder_dilation = check_positive_int("encoder_dilation", encoder_dilation)
        self.compressed_channels = check_positive_int("compressed_channels", compressed_channels)
        self.backend = check_backend(backend)
        self.channel_compressor = nn.Conv2d(self.channels, self.compressed_channels, 1)
        mask_channels = self.up_group * self.up_kernel ** 2 * self.scale_factor ** 2
        self.content_encoder = nn.Conv2d(self.compressed_channels, mask_channels, self.encoder_kernel,
                                         padding=int((self.encoder_kernel - 1) * self.encoder_dilation / 2),
                                         dilation=self.encoder_dilation, groups=1)
        self.init_weights()

    def init_weights(self) -> None:
        """mmcv's initialisation (see the class docstring)."""
        for conv in (self.channel_compressor, self.content_encoder):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.content_encoder.weight, 0.0, 0.001)

    def kernel_normalizer(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, G*K2*s*s, H, W) encoder output -> (B, G*K2, sH, sW) masks: pixel shuffle, then a
        softmax over each group's K2 taps (in the mask's dtype, as mmcv; PyTorch's softmax
        accumulates half inputs in float32)."""
        mask = F.pixel_shuffle(mask, self.scale_factor)
        b, channels, h, w = mask.shape  # (sizes read from the tensor: an exported graph keeps them dynamic)
        grouped = mask.reshape(b, -1, self.up_kernel ** 2, h, w)  # a view in both layouts (splits channels)
        return grouped.softmax(dim=2).reshape(b, channels, h, w)

    def feature_reassemble(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return carafe(x, mask, self.up_kernel, self.up_group, self.scale_factor, backend=self.backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with tracer_warnings_off():
            if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.channels:
                got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"CARAFEPack was built for x of shape (B, {self.channels}, H, W), got {got}")
        mask = self.kernel_normalizer(self.content_encoder(self.channel_compressor(x)))
        return self.feature_reassemble(x, mask)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, scale_factor={self.scale_factor}, up_kernel={self.up_kernel}, "
                f"up_group={self.up_group}, encoder_kernel={self.encoder_kernel}, "
                f"encoder_dilation={self.encoder_dilation}, compressed_channels={self.compressed_channels}, "
                f"backend={self.backend!r}")
