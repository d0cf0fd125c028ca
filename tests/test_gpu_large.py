"""int64 offsets: an output past 2**31 elements (CUDA only: about 5.5 GB of GPU memory; the
interpreter would take hours). Checked on a corner whose windows touch the image border."""
import pytest
import torch

import fade_triton as ft
import reference64 as ref
from util import ON_CUDA, assert_close_rel


@pytest.mark.skipif(not ON_CUDA, reason="needs a CUDA GPU (FADE_TEST_DEVICE=cuda) with ~6 GB free")
def test_output_past_2_31_elements():
    b, c, h, w, s, k = 1, 2048, 520, 520, 2, 5  # output 2048 * 1040 * 1040 > 2**31 elements
    r = k // 2
    x = torch.randn(b, c, h, w, dtype=torch.float16)
    masks = torch.softmax(torch.randn(b, k * k, h * s, w * s), 1).half()
    out = ft.carafe(x, masks, k, 1, s, backend="triton")
    assert out.numel() > 2**31
    n = 4  # the last n x n low-resolution pixels, their windows, and the last channels
    crop_x = x[:, -8:, -(n + 2 * r):, -(n + 2 * r):].double()
    crop_m = masks[:, :, -s * (n + 2 * r):, -s * (n + 2 * r):].double()
    expect = ref.reassemble(crop_x, crop_m, k, s)[..., -s * n:, -s * n:]
    assert_close_rel(out[:, -8:, -s * n:, -s * n:], expect, 1e-2)
