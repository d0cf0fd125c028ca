"""The modules' replay of validated calls (``fade_triton.ops.fade.fold.FoldedWeightCache.replay``): a
call whose signature and weights were validated before skips the argument checks and the backend
choice, launches what the full path launches, trains as it does, and never skips a check that would
fail or a state that changes the path."""
import pytest
import torch

import fade_triton as ft
from fade_triton import functional
from fade_triton.testing import recorded_launches


def counted_checks(monkeypatch) -> list:
    """A list that grows by one at every ``check_fade_args`` the module path runs."""
    calls, real = [], functional.check_fade_args

    def spy(*args):
        calls.append(args[:2])
        return real(*args)

    monkeypatch.setattr(functional, "check_fade_args", spy)
    return calls


def launch_signatures(launches) -> list:
    """Each launch's kernel, grid, keyword arguments and arguments (tensors by dtype, shape and strides)."""
    return [(x.name, x.grid, x.kwargs, tuple((a.dtype, tuple(a.shape), a.stride()) if isinstance(a, torch.Tensor) else a
                                             for a in x.args)) for x in launches]


def small_fade():
    model = ft.FADE(8, up_kernel_size=3, embedding_dim=8, backend="triton")
    return model, torch.randn(1, 8, 6, 4), torch.randn(1, 8, 3, 2)


@pytest.mark.parametrize("grad", [False, True], ids=["no-grad", "grad"])
def test_a_validated_call_replays_the_full_paths_launches_without_its_checks(monkeypatch, grad):
    model, en, de = small_fade()
    checks = counted_checks(monkeypatch)
    calls = []
    with torch.set_grad_enabled(grad):
        for _ in range(3):
            with recorded_launches(run=False, keep_args=True) as launches:
                model(en, de)
            calls.append(launch_signatures(launches))
    assert len(checks) == 1  # the first call only
    assert len(calls[0]) == 3 and calls[0] == calls[1] == calls[2]


def test_replayed_calls_train_as_the_full_path_does(monkeypatch):
    """The forward and every gradient of a replayed call are bitwise those of the validated call
    (the kernels are deterministic); an optimizer step is a new weight version, checked again."""
    model, en, de = small_fade()
    grad = torch.randn(1, 8, 6, 4)
    checks = counted_checks(monkeypatch)
    results = []
    for _ in range(2):
        en_g, de_g = en.clone().requires_grad_(), de.clone().requires_grad_()
        out = model(en_g, de_g)
        out.backward(grad)
        results.append([out.detach(), en_g.grad, de_g.grad, *(p.grad for p in model.parameters())])
        model.zero_grad(set_to_none=True)
    assert len(checks) == 1
    assert len(results[0]) == 3 + 7  # out, en, de and the seven weights
    for first, replayed in zip(*results):
        assert torch.equal(first, replayed)
    model(en, de).sum().backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    with recorded_launches(run=False):
        model(en, de)
        model(en, de)
    assert len(checks) == 2  # one check for the new weights, then a replay


def _wrong_dtype(model, en, de):
    return model(en, de.double())


def _wrong_size(model, en, de):
    return model(en, de[..., :1])


def _wrong_weight_shape(model, en, de):
    model.gate_generator.conv.weight = torch.nn.Parameter(torch.randn(1, 8, 1, 2))
    return model(en, de)


@pytest.mark.parametrize("call, error, match", [
    (_wrong_dtype, TypeError, "share a dtype"),
    (_wrong_size, ValueError, "scale=2 times de"),
    (_wrong_weight_shape, ValueError, "gate_weight must have shape"),
], ids=["dtype", "size", "weight-shape"])
def test_a_validated_call_never_lets_a_failing_one_through(call, error, match):
    model, en, de = small_fade()
    with recorded_launches(run=False):
        model(en, de)
        model(en, de)  # replayed
        with pytest.raises(error, match=match):
            call(model, en, de)


def test_a_bool_scale_is_refused_after_a_validated_scale_of_1():
    """True == 1 and hash(True) == hash(1): the signature holds the scale's type too."""
    model = ft.FADE(8, scale=1, up_kernel_size=3, embedding_dim=8, backend="triton")
    en = torch.randn(1, 8, 3, 2)
    with recorded_launches(run=False):
        model(en, en)
        model(en, en)
        model.scale = True
        with pytest.raises(TypeError, match="scale must be an int"):
            model(en, en)


def test_autocast_takes_the_full_path(monkeypatch):
    model, en, de = small_fade()
    checks = counted_checks(monkeypatch)
    with recorded_launches(run=False):
        model(en, de)
        model(en, de)
        with torch.autocast("cpu", dtype=torch.float16):
            assert model(en, de).dtype == torch.float16  # cast as autocast casts, not the validated float32 call
    assert len(checks) == 2


def test_another_backend_takes_its_own_path():
    model, en, de = small_fade()
    with recorded_launches(run=False) as launches:
        model(en, de)
        model(en, de)
        model.backend = "torch"
        launches.clear()
        model(en, de)
    assert launches == []  # the torch path launches no Triton kernel
