"""The modules' replay of validated calls (``fade_triton.ops.fade.fold.FoldedWeightCache.replay``): a
call whose signature and weights were validated before skips the argument checks and the backend
choice, launches what the full path launches, trains as it does, and never skips a check that would
fail or a state that changes the path."""
import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import fade_triton as ft
from fade_triton import functional
from fade_triton.ops.fade import fold
from fade_triton.testing import recorded_launches, simulated_gpu
from util import torch_backend_output


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


def validated():
    """``small_fade()`` after a validated call and its replay (kernels run)."""
    model, en, de = small_fade()
    model(en, de)
    model(en, de)
    return model, en, de


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


def _wrong_weight_view(model, en, de):  # the same storage and version counter, another shape
    conv = model.gate_generator.conv
    conv.weight = torch.nn.Parameter(conv.weight.detach().view(1, 1, 8, 1))
    return model(en, de)


def _weight_prefix(model, en, de):  # the same storage, version counter and strides, another shape
    compressor = model.ker_generator.compressor_en
    compressor.bias = torch.nn.Parameter(compressor.bias.detach()[:4])
    return model(en, de)


def _wrong_en_size(model, en, de):
    return model(en[:, :, :3], de)


def _other_device(model, en, de):
    return model(en.to("meta"), de.to("meta"))


@pytest.mark.parametrize("call, error, match", [
    (_wrong_dtype, TypeError, "share a dtype"),
    (_wrong_size, ValueError, "scale=2 times de"),
    (_wrong_weight_shape, ValueError, "gate_weight must have shape"),
    (_wrong_weight_view, ValueError, "gate_weight must have shape"),
    (_weight_prefix, ValueError, "en_bias must have shape"),
    (_wrong_en_size, ValueError, "en must be scale=2"),
    (_other_device, ValueError, "inputs' device"),
], ids=["dtype", "size", "weight-shape", "weight-view", "weight-prefix", "en-size", "device"])
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


def test_a_weight_swapped_for_a_transposed_view_of_itself_is_folded_again():
    """Same storage, version counter and (square) shape: the strides in the key tell them apart."""
    model, en, de = validated()
    conv = model.ker_generator.compressor_de
    conv.weight = torch.nn.Parameter(conv.weight.detach().transpose(0, 1))
    with torch.no_grad():
        torch.testing.assert_close(model(en, de), torch_backend_output(model, en, de), rtol=1e-5, atol=1e-5)


def test_a_first_call_under_inference_mode_leaves_training_working():
    model, en, de = small_fade()
    with torch.inference_mode(), recorded_launches(run=False):
        model(en, de)
    with recorded_launches(run=False):
        model(en, de).sum().backward()  # the cached folded weights are ordinary tensors
    assert model.gate_generator.conv.weight.grad is not None


def test_the_interpreter_switched_off_refuses_the_triton_backend(monkeypatch):
    model, en, de = validated()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="cannot run on cpu"):
        model(en, de)


def test_leaving_a_simulated_gpu_refuses_the_triton_backend(monkeypatch):
    model, en, de = small_fade()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with simulated_gpu(90), recorded_launches(run=False):
        model(en, de)
        model(en, de)
    with pytest.raises(RuntimeError, match="cannot run on cpu"):
        model(en, de)


def test_jit_trace_after_validated_calls_records_the_export_formulation():
    model, en, de = validated()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (en, de))
    en2, de2 = torch.randn_like(en), torch.randn_like(de)
    torch.testing.assert_close(traced(en2, de2), model(en2, de2), rtol=1e-4, atol=1e-5)


def test_modes_after_validated_calls_see_the_operator():
    model, en, de = validated()
    with FlopCounterMode(display=False) as counter:
        model(en, de)
    assert counter.get_total_flops() > 0


def test_a_capture_after_validated_calls_folds_the_weights(monkeypatch):
    model, en, de = validated()
    folds, real = [], fold.pack_weights
    monkeypatch.setattr(fold, "pack_weights", lambda *a: folds.append(1) or real(*a))
    monkeypatch.setattr(fold, "capture_in_progress", lambda: True)
    with recorded_launches(run=False):
        model(en, de)
    assert folds == [1]
