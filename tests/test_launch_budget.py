"""Launches and host-side work per call of the triton path: at most 3 kernel launches for a
forward on unchanged weights and 10 for forward+backward, and no device work besides
allocating outputs: the PyTorch ops a call makes are allocations and views only (so no
copy, no host synchronisation such as .item(), nothing that stops CUDA-graph capture)."""
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import fade_triton as ft
from fade_triton.testing import recorded_launches

# what a call may do besides launching the kernels: allocate, make views, let autograd detach
ALLOWED = {"aten::empty", "aten::empty_strided", "aten::new_empty", "aten::new_empty_strided", "aten::as_strided",
           "aten::permute", "aten::select", "aten::slice", "aten::view", "aten::flatten", "aten::unflatten",
           "aten::alias", "aten::detach", "aten::expand", "aten::t", "aten::transpose", "aten::unsqueeze",
           "aten::squeeze", "aten::_reshape_alias", "aten::reshape", "aten::lift_fresh", "aten::empty_like"}


def device_work(fn):
    """(kernel launches, PyTorch ops that are not allocations or views) of ``fn()``, the
    kernels recorded but not run."""
    with recorded_launches(run=False) as launches, profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    ops = {e.name for e in prof.events() if e.name.startswith("aten::")}
    return [launch.name for launch in launches], sorted(ops - ALLOWED)


@pytest.mark.parametrize("cls", [ft.FADE, ft.FADELite])
def test_forward_takes_three_launches_and_no_other_device_work(cls):
    model = cls(16, up_kernel_size=5, backend="triton")
    en, de = torch.randn(2, 16, 10, 12), torch.randn(2, 16, 5, 6)
    with torch.no_grad():
        model(en, de)  # prepares the weights (once per weight version)
        launches, other = device_work(lambda: model(en, de))
    assert launches == ["conv3x3_kernel", "conv3x3_kernel", "reassemble_fwd_kernel"]
    assert other == []


@pytest.mark.parametrize("cls", [ft.FADE, ft.FADELite])
def test_forward_and_backward_take_at_most_ten_launches(cls):
    model = cls(16, up_kernel_size=5, backend="triton")
    en = torch.randn(2, 16, 10, 12, requires_grad=True)
    de = torch.randn(2, 16, 5, 6, requires_grad=True)
    model(en, de)
    grad = torch.randn(2, 16, 10, 12)
    launches, other = device_work(lambda: model(en, de).backward(grad))
    assert len(launches) <= 10, launches
    assert other == []


def test_carafe_launches():
    x = torch.randn(1, 8, 4, 5, requires_grad=True)
    masks = torch.rand(1, 2 * 9, 8, 10, requires_grad=True)
    grad = torch.randn(1, 8, 8, 10)
    launches, other = device_work(lambda: ft.carafe(x, masks, 3, 2, 2, backend="triton").backward(grad))
    assert launches == ["reassemble_fwd_kernel", "reassemble_bwd_kernel", "reassemble_bwd_feat_kernel"]
    assert other == []


def test_prepared_weights_follow_every_weight_update():
    """The cached kernel weights are rebuilt after an optimizer step, load_state_dict, an
    in-place edit and a dtype change, and reused otherwise."""
    model = ft.FADE(8, up_kernel_size=3, embedding_dim=8, backend="triton")
    en, de = torch.randn(1, 8, 6, 4), torch.randn(1, 8, 3, 2)

    def check():
        model.backend = "torch"
        want = model(en, de)
        model.backend = "triton"
        torch.testing.assert_close(model(en, de), want, rtol=1e-5, atol=1e-5)

    check()
    first = model._folded.packed
    model(en, de)
    assert model._folded.packed is first  # unchanged weights: no new preparation
    model(en, de).square().sum().backward()
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    check()
    model.load_state_dict({k: v + 0.1 for k, v in model.state_dict().items()})
    check()
    with torch.no_grad():
        model.ker_generator.content_encoder.weight[0] *= -1
    check()
    model.double()
    en, de = en.double(), de.double()
    check()


def test_launch_plans_are_computed_once_per_signature(monkeypatch):
    """``helpers.cached_plan``: a launcher's plan is built once per distinct arguments and grid
    limit; unhashable arguments (symbolic sizes under dynamic shapes) are built on every call;
    an error is raised on every call, not remembered as a result."""
    from fade_triton.ops import helpers

    built = []

    @helpers.cached_plan
    def plan(n, strides):
        built.append(n)
        if n < 0:
            raise ValueError("negative size")
        return helpers.LaunchPlan(((slice(None), (n,)),), (n, *strides), {})

    first = plan(3, (1, 2))
    assert plan(3, (1, 2)) is first and built == [3]
    assert plan(4, (1, 2)).args == (4, 1, 2) and built == [3, 4]
    monkeypatch.setattr(helpers, "MAX_GRID_YZ", 7)  # the grid limit is part of the signature
    assert plan(3, (1, 2)) is not first and built == [3, 4, 3]
    symbolic = [1, 2]  # unhashable, as a SymInt stride is
    assert plan(5, symbolic).args == plan(5, symbolic).args == (5, 1, 2) and built[-2:] == [5, 5]
    for _ in range(2):
        with pytest.raises(ValueError, match="negative size"):
            plan(-1, ())
    assert built[-2:] == [-1, -1]


def test_host_time_tool_times_each_call_beside_torchs_floor(cpu_default_device):
    """``bench.tools.host_time.measure``: the four public calls, with their launch counts and
    torch's floor for the same call timed beside each (kernels replaced by no-ops: it runs anywhere)."""
    from bench.tools import host_time

    rows = host_time.measure(repeats=10)
    assert [(label, n) for label, _, n, _ in rows] == [("FADE forward", 3), ("FADE forward+backward", 10),
                                                        ("FADELite forward", 3), ("FADELite forward+backward", 10)]
    assert all(us > 0 and floor > 0 for _, us, _, floor in rows)
