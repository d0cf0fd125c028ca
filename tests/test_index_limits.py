"""Index limits: launches past CUDA's grid limits (axes 1 and 2 take at most 65,535 programs)
and element offsets past 2**31.

- Batches whose grid axis 2 (images x channel blocks or groups) passes the limit are launched in
  batch slices (views): recorded at 70,000 images, and run under the interpreter with the limit
  lowered against the float64 reference. What cannot be split raises a ValueError first.
- A CARAFE whose masks' channel stride puts element offsets past 2**31 (a strided view into a
  large, mostly untouched allocation), forward and gradients, against the reference: the
  interpreter computes 32-bit integer arithmetic in 32 bits, so a 32-bit product would wrap."""
import pytest
import torch

import fade_triton as ft
import reference64 as ref
from fade_triton.ops import helpers
from fade_triton.testing import recorded_launches
from util import ON_CUDA, assert_close_rel, assert_fade_grads_match_reference, fade_problem, grads_of


def test_large_batch_launches_stay_within_the_grid_limit():
    batch = 70_000
    model = ft.FADE(4, up_kernel_size=3, embedding_dim=4, backend="triton")
    en = torch.randn(1, 4, 2, 2).expand(batch, -1, -1, -1)  # stride-0 batch: no memory per image
    de = torch.randn(1, 4, 1, 1).expand(batch, -1, -1, -1).requires_grad_()
    with recorded_launches(run=False) as launches:
        model(en, de).backward(torch.ones(batch, 4, 2, 2))
    per_kernel = {}
    for launch in launches:
        assert all(n <= helpers.MAX_GRID_YZ for n in launch.grid[1:]), (launch.name, launch.grid)
        per_kernel.setdefault(launch.name, []).append(launch.grid[2] if len(launch.grid) > 2 else None)
    # every image launched once per call: the slices' axis-2 sizes add up to the batch
    assert sum(per_kernel["reassemble_fwd_kernel"]) == batch
    assert len(per_kernel["reassemble_fwd_kernel"]) == 2
    assert sum(per_kernel["conv3x3_kernel"]) == 3 * batch  # 2 forward, de's input gradient: 1 block each


@pytest.mark.slow
def test_batch_slices_match_the_reference(monkeypatch, poisoned):
    monkeypatch.setattr(helpers, "MAX_GRID_YZ", 2)  # 3 images: two launches per kernel
    en, de, w = fade_problem(b=3, c=5, h=3, w=4, scale=2, k=3, emb=4, dtype=torch.float32)
    inputs = [en, de, *w.values()]
    with recorded_launches() as launches:
        out = ft.fade(*inputs, scale=2, backend="triton")
    assert len(launches) == 6
    assert_close_rel(out, ref.fade(*[t.double() for t in inputs], 2), 1e-5)
    assert_fade_grads_match_reference(lambda *a: ft.fade(*a, scale=2, backend="triton"), inputs,
                                      torch.randn_like(en), 2, 1e-5)


def test_carafe_batch_slices_match_the_reference(monkeypatch, poisoned):
    monkeypatch.setattr(helpers, "MAX_GRID_YZ", 3)  # 2 groups a image: one image a launch
    x = torch.randn(3, 4, 3, 4, dtype=torch.float32)
    masks = torch.rand(3, 2 * 9, 6, 8, dtype=torch.float32)
    dout = torch.randn(3, 4, 6, 8)
    got = grads_of(lambda a, m: ft.carafe(a, m, 3, 2, 2, backend="triton"), [x, masks], dout)
    want = grads_of(lambda a, m: ref.reassemble(a, m, 3, 2, groups=2), [x.double(), masks.double()], dout.double())
    for g, r in zip(got, want):
        assert_close_rel(g, r, 1e-5)


def test_what_cannot_be_split_raises_before_launching(monkeypatch):
    monkeypatch.setattr(helpers, "MAX_GRID_YZ", 1)
    x, masks = torch.randn(1, 4, 3, 3), torch.rand(1, 2 * 9, 6, 6)
    with recorded_launches(run=False) as launches, pytest.raises(ValueError, match="mask groups"):
        ft.carafe(x, masks, 3, 2, 2, backend="triton")
    assert launches == []
    with pytest.raises(ValueError, match="rows"):  # 3 low-resolution rows: more than one row tile
        helpers.check_grid_axis1(3, "reassembly (tiles of low-resolution rows)")


@pytest.mark.slow
def test_offsets_past_2_31_match_the_reference_forward_and_the_backward_says_its_bound():
    k, oh, ow = 3, 4, 6
    channel_stride = 2**28  # channel 8 of the masks starts at element 2**31
    need = (k * k - 1) * channel_stride + oh * ow
    try:
        storage = torch.empty(need, dtype=torch.float16)  # 4 GiB reserved; only 9 pages are written
    except RuntimeError as err:
        pytest.skip(f"cannot reserve {need * 2 / 2**30:.1f} GiB for the strided view: {err}")
    masks = storage.as_strided((1, k * k, oh, ow), (0, channel_stride, ow, 1))
    masks.copy_(torch.rand(1, k * k, oh, ow, dtype=torch.float16))
    masks.requires_grad_()
    x = torch.randn(1, 3, oh // 2, ow // 2, dtype=torch.float16, requires_grad=True)
    dout = torch.randn(1, 3, oh, ow, dtype=torch.float16)
    out = ft.carafe(x, masks, k, 1, 2, backend="triton")
    assert_close_rel(out, ref.reassemble(x.detach().double(), masks.detach().double(), k, 2), 1e-2)
    # the backward's feature gradient reads mask channels in 32 bits (64-bit products spill on
    # sm_80): past the bound it raises, naming the masks, before any launch
    with pytest.raises(ValueError, match="masks: channel stride"):
        out.backward(dout)


@pytest.mark.skipif(not ON_CUDA, reason="a compiled launch past the grid limit needs a GPU")
def test_compiled_launch_past_the_grid_limit():
    batch = 66_000
    x = torch.randn(1, 4, 2, 2).expand(batch, -1, -1, -1)
    masks = torch.rand(1, 9, 4, 4).expand(batch, -1, -1, -1)
    out = ft.carafe(x, masks, 3, 1, 2, backend="triton")
    torch.testing.assert_close(out, ft.carafe(x, masks, 3, 1, 2, backend="torch").expand_as(out), rtol=1e-4, atol=1e-4)


def test_output_gradient_strides_past_the_32_bit_window_walk_raise():
    """The feature gradient walks dout's window in 32-bit steps of K*s rows or columns: strides
    that make such a step pass 2**31 raise a ValueError naming dout (a host-side bound)."""
    x = torch.randn(1, 2, 1, 3, requires_grad=True)
    masks = torch.rand(1, 9, 1, 3)
    dout = torch.randn(2 * 3).as_strided((1, 2, 1, 3), (0, 3, 2**30, 1))  # one row: the row stride is free
    out = ft.carafe(x, masks, 3, 1, 1, backend="triton")
    with pytest.raises(ValueError, match="dout"):
        out.backward(dout)
