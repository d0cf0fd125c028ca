"""FADE in segmentation_models_pytorch (smp) decoders: ``python examples/smp_fade.py``.

Swaps the interpolation of smp's Unet decoder blocks and FPN blocks for ``fade_triton.FADE``,
guided by the skip feature at the target resolution, keeping every smp weight:

- Unet (``UnetDecoderBlock``): the block upsamples its input (C_in channels) and concatenates
  the skip (C_skip), so FADE must return C_in channels: ``FADE(C_skip, C_in, project="en")``
  maps the skip to C_in with a 1x1 convolution (C_skip*C_in + C_in parameters, FLOPs
  2*B*sH*sW*C_skip*C_in) and conv1 keeps its shape. (``project="de"`` is cheaper, by scale**2,
  but returns C_skip channels: conv1 would need 2*C_skip inputs, a new layer.)
- FPN (``FPNBlock``): ``x = up(x) + skip_conv(skip)`` already has equal channels after the 1x1
  ``skip_conv``, so ``FADE(pyramid_channels)(skip_conv(skip), x)`` replaces the sum.

Needs ``pip install segmentation-models-pytorch`` (which pulls timm and torchvision). The
wrappers use only the blocks' attribute names (smp 0.6.0), so ``tests/test_examples.py`` tests
them on stand-in blocks with those names; smp itself was not run on the project's machines,
where torchvision does not install beside the local CPU build of torch 2.13.0.
"""
from __future__ import annotations

import torch
from torch import nn

import fade_triton as ft


class FADEUnetBlock(nn.Module):
    """smp's ``UnetDecoderBlock`` with FADE in place of its interpolation (the last block, which
    has no skip, keeps its interpolation)."""

    def __init__(self, block: nn.Module, in_channels: int, skip_channels: int, **fade_kwargs):
        super().__init__()
        self.block = block
        self.fade = ft.FADE(skip_channels, in_channels, project="en", **fade_kwargs) if skip_channels else None

    def forward(self, feature_map, target_height, target_width, skip_connection=None):
        if skip_connection is None or self.fade is None:
            return self.block(feature_map, target_height, target_width, skip_connection)
        x = torch.cat([self.fade(skip_connection, feature_map), skip_connection], dim=1)
        x = self.block.conv2(self.block.conv1(self.block.attention1(x)))
        return self.block.attention2(x)


class FADEFPNBlock(nn.Module):
    """smp's ``FPNBlock`` with ``up(x) + skip_conv(skip)`` replaced by FADE(skip_conv(skip), x)."""

    def __init__(self, block: nn.Module, **fade_kwargs):
        super().__init__()
        self.skip_conv = block.skip_conv
        self.fade = ft.FADE(block.skip_conv.out_channels, **fade_kwargs)

    def forward(self, x, skip):
        return self.fade(self.skip_conv(skip), x)


def fade_unet(model: nn.Module, **fade_kwargs) -> nn.Module:
    """Put FADE into every block of an smp ``Unet``'s decoder (in place); returns the model."""
    blocks = model.decoder.blocks
    # each block's input: the encoder's last feature, then the previous block's output
    inputs = [model.encoder.out_channels[-1]] + [b.conv2[0].out_channels for b in blocks[:-1]]
    for i, (block, in_channels) in enumerate(zip(list(blocks), inputs)):
        skip_channels = block.conv1[0].in_channels - in_channels  # conv1 takes in_channels + skip_channels
        blocks[i] = FADEUnetBlock(block, in_channels, skip_channels, **fade_kwargs)
    return model


def fade_fpn(model: nn.Module, **fade_kwargs) -> nn.Module:
    """Put FADE into the p4, p3, p2 blocks of an smp ``FPN``'s decoder (in place); returns the model."""
    for name in ("p4", "p3", "p2"):
        setattr(model.decoder, name, FADEFPNBlock(getattr(model.decoder, name), **fade_kwargs))
    return model


def main():
    import segmentation_models_pytorch as smp

    image = torch.randn(2, 3, 128, 128)
    for arch, swap in ((smp.Unet, fade_unet), (smp.FPN, fade_fpn)):
        model = swap(arch("resnet18", encoder_weights=None, classes=2)).eval()
        with torch.no_grad():
            print(arch.__name__, tuple(model(image).shape),
                  sum(p.numel() for p in model.parameters()), "parameters with FADE")


if __name__ == "__main__":
    main()
