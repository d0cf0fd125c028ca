"""Deployment, on CPU: meta tensors."""
import pytest
import torch

import fade_triton as ft
import reference64 as ref

C, K, E, S, G = 8, 3, 8, 2, 2  # channels, kernel, embedding, scale, CARAFE groups
FLOAT32_TOL = 1e-5  # SPEC.md, Precision: float32 relative error


class CarafeHead(torch.nn.Module):
    """A model that calls ``fade_triton.carafe`` (K, G, S above) on given features and masks."""

    def __init__(self, backend="auto"):
        super().__init__()
        self.backend = backend

    def forward(self, features, masks):
        return ft.carafe(features, masks, K, G, S, backend=self.backend)


def build(kind, backend):
    """(model, reference(inputs) -> float64 output) for "fade", "lite" or "carafe". Random,
    non-zero weights, so no part of the function is trivial."""
    if kind == "carafe":
        return CarafeHead(backend), lambda x, m: ref.reassemble(x.double(), m.double(), K, S, G)
    model = ft.FADELite(C, up_kernel_size=K, backend=backend) if kind == "lite" else \
        ft.FADE(C, up_kernel_size=K, embedding_dim=E, backend=backend)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval(), lambda en, de: ref.fade(en, de, *model.weights(), S)


def inputs(kind, b, h, w, crop=(0, 0)):
    """(en, de) for FADE (en smaller than S x de by ``crop``), (features, masks) for carafe."""
    if kind == "carafe":
        return torch.randn(b, C, h, w), torch.rand(b, G * K * K, S * h, S * w)
    return torch.randn(b, C, S * h - crop[0], S * w - crop[1]), torch.randn(b, C, h, w)


# ----------------------------------------------------------------------------- meta tensors
def like_on_cpu(t):
    return (tuple(t.shape), t.dtype, t.stride())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("backend", ["auto", "triton", "torch", "naive"])
def test_meta_tensors_give_the_shape_dtype_and_layout_of_eager(backend, dtype):
    """Forward on meta (nothing computed) gives what the same call gives on CPU: shape, dtype
    and strides (channels_last in, channels_last out on every backend but naive's carafe)."""
    cl = torch.channels_last
    en, de = (t.to(dtype, memory_format=cl) for t in inputs("fade", 2, 3, 4, crop=(1, 0)))
    x, masks = (t.to(dtype) for t in inputs("carafe", 2, 3, 4))
    x = x.to(memory_format=cl)
    for cls in (ft.FADE, ft.FADELite):
        with torch.device("meta"):
            model = cls(C, up_kernel_size=K, backend=backend).to(dtype)
        out = model(en.to("meta"), de.to("meta"))
        assert out.device.type == "meta"
        assert like_on_cpu(out) == like_on_cpu(cls(C, up_kernel_size=K, backend=backend).to(dtype)(en, de))
        assert out.is_contiguous(memory_format=cl)
    out = ft.carafe(x.to("meta"), masks.to("meta"), K, G, S, backend=backend)
    assert out.device.type == "meta"
    assert like_on_cpu(out) == like_on_cpu(ft.carafe(x, masks, K, G, S, backend=backend))
