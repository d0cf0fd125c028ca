"""examples/smp_fade.py's wrappers on stand-in blocks that have smp 0.6.0's attribute names and
forward signatures (smp itself needs torchvision, which does not install beside the CPU torch
used here): the wrapped decoder runs, keeps every block's weights, returns the shapes smp's
would and trains FADE and its projection."""
import importlib.util
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import fade_triton as ft
import reference64 as ref
from util import assert_close_rel

_spec = importlib.util.spec_from_file_location("smp_fade", Path(__file__).parent.parent / "examples" / "smp_fade.py")
smp_fade = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(smp_fade)


def _conv_relu(cin, cout):  # smp's Conv2dReLU: Sequential(conv, norm, relu)
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class UnetBlock(nn.Module):
    """The interface of smp's UnetDecoderBlock: interpolate, concatenate the skip, two convs."""

    def __init__(self, in_channels, skip_channels, out_channels):
        super().__init__()
        self.attention1, self.attention2 = nn.Identity(), nn.Identity()
        self.conv1 = _conv_relu(in_channels + skip_channels, out_channels)
        self.conv2 = _conv_relu(out_channels, out_channels)

    def forward(self, feature_map, target_height, target_width, skip_connection=None):
        x = F.interpolate(feature_map, size=(target_height, target_width), mode="nearest")
        if skip_connection is not None:
            x = self.attention1(torch.cat([x, skip_connection], dim=1))
        return self.attention2(self.conv2(self.conv1(x)))


class Unet(nn.Module):
    """encoder.out_channels and decoder.blocks as smp's Unet has them (head 32; skips 16, 8; no
    skip for the last block)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.out_channels = (3, 8, 16, 32)
        self.decoder = nn.Module()
        self.decoder.blocks = nn.ModuleList([UnetBlock(32, 16, 24), UnetBlock(24, 8, 12), UnetBlock(12, 0, 6)])

    def forward(self, head, skips):
        x = head
        for block, skip in zip(self.decoder.blocks, (*skips, None)):
            h, w = (skip.shape[-2:] if skip is not None else (2 * x.shape[-2], 2 * x.shape[-1]))
            x = block(x, h, w, skip)
        return x


def test_fade_in_a_unet_decoder_keeps_its_weights_and_trains():
    model = Unet()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    smp_fade.fade_unet(model, backend="torch", embedding_dim=8, up_kernel_size=3)
    blocks = model.decoder.blocks
    assert [b.fade.in_channels if b.fade else None for b in blocks] == [32, 24, None]
    now = model.state_dict()
    assert all(torch.equal(now[re.sub(r"blocks\.(\d)\.", r"blocks.\1.block.", k)], v) for k, v in weights.items())
    head, skips = torch.randn(2, 32, 3, 4), [torch.randn(2, 16, 6, 8), torch.randn(2, 8, 12, 16)]
    out = model(head, skips)
    assert out.shape == (2, 6, 24, 32)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for b in blocks[:2] for p in b.fade.parameters())
    with torch.no_grad():  # the first block's FADE: the skip projected to 32 channels, then FADE
        fade, skip = blocks[0].fade, skips[0]
        want = ref.fade(ref.conv1x1(skip.double(), fade.en_proj.weight.double(), fade.en_proj.bias.double()),
                        head.double(), *(t.double() for t in fade.weights()), 2)
        assert_close_rel(fade(skip, head), want, 1e-5)


def test_fade_in_an_fpn_block_replaces_the_sum():
    block = nn.Module()
    block.skip_conv = nn.Conv2d(8, 16, 1)
    wrapped = smp_fade.FADEFPNBlock(block, backend="torch", up_kernel_size=3)
    assert wrapped.skip_conv is block.skip_conv and isinstance(wrapped.fade, ft.FADE)
    x, skip = torch.randn(1, 16, 4, 4), torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        assert torch.equal(wrapped(x, skip), wrapped.fade(block.skip_conv(skip), x))
        assert wrapped(x, skip).shape == (1, 16, 8, 8)
