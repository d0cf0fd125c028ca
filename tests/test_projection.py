"""FADE and FADE-Lite between unequal encoder and decoder channels (``project="de"`` / ``"en"``):
the function against the float64 reference of a 1x1 projection followed by FADE, the state
dict, the parameter and FLOP counts the docstring states, the errors, and a small Unet-style
decoder whose stages have unequal skip and decoder channels, trained one step."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import fade_triton as ft
import reference64 as ref
from fade_triton.ops.fade.op import fade_flops
from test_api import OFFICIAL
from util import assert_close_rel

B, C_EN, C_DE, H, W, S = 2, 6, 10, 4, 5, 2


def _reference(module, en, de):
    """float64: the projection as an explicit 1x1 contraction, then the reference FADE."""
    w = {n: p.detach().double() for n, p in module.named_parameters()}
    en, de = en.double(), de.double()
    if module.project == "de":
        de = ref.conv1x1(de, w["de_proj.weight"], w["de_proj.bias"])
    else:
        en = ref.conv1x1(en, w["en_proj.weight"], w["en_proj.bias"])
    return ref.fade(en, de, *(t.detach() for t in module.weights()), S)


def _randomised(module):
    with torch.no_grad():  # non-zero biases: a dropped bias must show
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return module


@pytest.mark.parametrize("backend", ["torch", "naive", pytest.param("triton", marks=pytest.mark.slow)])
@pytest.mark.parametrize("cls", [ft.FADE, ft.FADELite])
@pytest.mark.parametrize("project", ["de", "en"])
def test_projected_fade_matches_the_reference(project, cls, backend, poisoned):
    kwargs = {"embedding_dim": 8} if cls is ft.FADE else {}
    module = _randomised(cls(C_EN, C_DE, scale=S, up_kernel_size=3, backend=backend, project=project, **kwargs))
    en, de = torch.randn(B, C_EN, S * H, S * W), torch.randn(B, C_DE, H, W)
    out = module(en, de)
    assert out.shape == (B, module.in_channels, S * H, S * W)
    assert module.in_channels == (C_EN if project == "de" else C_DE)
    assert_close_rel(out, _reference(module, en, de), 1e-5)


@pytest.mark.parametrize("project", ["de", "en"])
def test_state_dict_parameters_and_flops(project):
    module = ft.FADE(C_EN, C_DE, scale=S, project=project, backend="torch")  # no weight folding to count
    c = module.in_channels
    proj = {"de": {"de_proj.weight": (C_EN, C_DE, 1, 1), "de_proj.bias": (C_EN,)},
            "en": {"en_proj.weight": (C_DE, C_EN, 1, 1), "en_proj.bias": (C_DE,)}}[project]
    expected = {**{k: f(c)[0] for k, f in OFFICIAL.items()}, **proj}
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == expected
    assert sum(p.numel() for p in module.parameters()) == 129 * c + 14490 + C_EN * C_DE + c
    assert (module.de_proj if project == "de" else module.en_proj).bias.abs().sum() == 0
    official = ft.FADE(c).state_dict()  # an official checkpoint loads, leaving the projection as it was
    assert set(module.load_state_dict(official, strict=False).missing_keys) == set(proj)
    assert all(torch.equal(module.state_dict()[k], v) for k, v in official.items())
    en, de = torch.randn(B, C_EN, S * H, S * W), torch.randn(B, C_DE, H, W)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(en, de)
    pixels = B * H * W * (1 if project == "de" else S * S)  # where the projection runs
    fade_part = fade_flops((B, c, S * H, S * W), (B, c, H, W), (64, c, 1, 1), (25, 64, 3, 3))
    assert counter.get_total_flops() == fade_part + 2 * pixels * C_EN * C_DE


def test_plain_module_has_no_projection_and_official_keys():
    module = ft.FADE(C_EN)
    assert module.project is None and not hasattr(module, "de_proj") and not hasattr(module, "en_proj")
    assert set(module.state_dict()) == set(OFFICIAL)


def test_projection_errors():
    with pytest.raises(ValueError, match="in_channels_de .*must equal.*project='de'"):
        ft.FADE(C_EN, C_DE)
    with pytest.raises(ValueError, match="project must be one of"):
        ft.FADE(C_EN, C_DE, project="both")
    with pytest.raises(ValueError, match="in_channels_de equals in_channels_en"):
        ft.FADELite(C_EN, C_EN, project="de")
    module = ft.FADE(C_EN, C_DE, project="de")
    with pytest.raises(ValueError, match=f"de with {C_DE} channels"):
        module(torch.randn(1, C_EN, 8, 8), torch.randn(1, C_EN, 4, 4))
    assert "project='de'" in repr(module)


class UnetStyleDecoder(torch.nn.Module):
    """Three decoder stages as in a Unet (decoder 32 -> 16 -> 8 channels, skips of 16, 8, 4):
    each upsamples its input with FADE, the decoder feature projected to the skip's channels,
    then mixes output and skip with a 3x3 convolution to the next stage's channels."""

    def __init__(self, skips=(16, 8, 4), bottom=32, backend="torch"):
        super().__init__()
        widths = (bottom, *skips)
        self.ups = torch.nn.ModuleList(ft.FADE(s, d, embedding_dim=8, up_kernel_size=3, backend=backend,
                                               project="de") for s, d in zip(skips, widths))
        self.mix = torch.nn.ModuleList(torch.nn.Conv2d(2 * s, s, 3, padding=1) for s in skips)

    def forward(self, bottom, skips):
        x = bottom
        for up, mix, skip in zip(self.ups, self.mix, skips):
            x = torch.relu(mix(torch.cat([up(skip, x), skip], dim=1)))
        return x


def test_unet_style_decoder_with_unequal_channels_trains():
    decoder = UnetStyleDecoder()
    bottom = torch.randn(2, 32, 3, 4)
    skips = [torch.randn(2, c, 3 * 2 ** i, 4 * 2 ** i) for i, c in enumerate((16, 8, 4), start=1)]
    out = decoder(bottom, skips)
    assert out.shape == (2, 4, 24, 32)
    out.square().mean().backward()
    for up in decoder.ups:  # every projection and FADE weight receives a gradient
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in up.parameters())
    x = bottom  # the first stage against the float64 reference
    assert_close_rel(decoder.ups[0](skips[0], x), _reference(decoder.ups[0], skips[0], x), 1e-5)
