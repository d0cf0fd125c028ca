"""Bad-input fuzzing (hypothesis): a valid FADE or CARAFE call with one argument made wrong at
random (type, shape, dtype, device, mixed devices, argument values) must raise a ValueError or
TypeError whose message names that argument, before any kernel launches; non-finite values
(NaN, Inf) must give the reference's result (NaN and Inf where it has them); a state dict with
a wrong shape, a non-tensor value, or a missing or unknown key must raise the same way. Never a
crash, hang or silently different result. Every backend that runs on CPU (the Triton kernels
under the interpreter). Profiles as in ``tests/test_properties.py``."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import fade_triton as ft
import reference64 as ref
from fade_triton.testing import recorded_launches
from util import WEIGHT_NAMES, fade_problem

BACKENDS = ["triton", "torch", "naive"]
FADE_TENSORS = ("en", "de", *WEIGHT_NAMES)
# the argument checks cost no kernel run: five times the profile's examples
MANY = settings(max_examples=5 * settings.default.max_examples)
NOT_TENSORS = [None, 1.5, [1.0, 2.0], "tensor", np.zeros((1, 4, 2, 2), dtype=np.float32)]


def wrong_tensor(draw, t: torch.Tensor):
    """``t`` made wrong in one way (the way, the value)."""
    how = draw(st.sampled_from(["type", "ndim", "dtype", "device", "shape"]))
    if how == "type":
        return how, draw(st.sampled_from(NOT_TENSORS))
    if how == "ndim":
        return how, draw(st.sampled_from([v for v in (t.unsqueeze(0), t.flatten(), t.reshape(-1)[:1].squeeze())
                                          if v.dim() != t.dim()]))
    if how == "dtype":
        return how, t.to(draw(st.sampled_from([torch.int32, torch.int64, torch.bool, torch.complex64, torch.float64])))
    if how == "device":
        return how, t.to("meta")
    dim = draw(st.integers(0, t.dim() - 1))
    grow = draw(st.sampled_from([1, 3]))
    shape = list(t.shape)
    shape[dim] += grow
    return how, torch.randn(shape, dtype=t.dtype)


def assert_names(err, names):
    assert any(n in str(err) for n in names), f"{type(err).__name__} names none of {names}: {err}"


@st.composite
def bad_fade_calls(draw):
    en, de, w = fade_problem(b=1, c=4, h=2, w=3, scale=2, k=3, emb=4, lite=draw(st.booleans()), dtype=torch.float32)
    args = dict(en=en, de=de, **w, scale=2)
    target = draw(st.sampled_from([*FADE_TENSORS, "scale"]))
    if target == "scale":
        how, value = "value", draw(st.sampled_from([0, -1, 2.5, "2", None, 1.0]))
    else:
        how, value = wrong_tensor(draw, args[target])
    args[target] = value
    return target, how, args, draw(st.sampled_from(BACKENDS))


@MANY
@given(bad_fade_calls())
def test_wrong_fade_arguments_raise_naming_them(call):
    target, how, args, backend = call
    scale = args.pop("scale")
    # a weight's wrong shape changes what the others must be: the message may name either
    names = [target] if (how != "shape" or target in ("en", "de")) else list(FADE_TENSORS)
    if how == "shape" and target in ("en", "de"):
        names = ["en", "de"]
    with recorded_launches(run=False) as launches, pytest.raises((ValueError, TypeError)) as err:
        ft.fade(*args.values(), scale=scale, backend=backend)
    assert_names(err.value, names)
    assert launches == []


@st.composite
def bad_carafe_calls(draw):
    x, masks = torch.randn(1, 4, 2, 3), torch.rand(1, 2 * 9, 4, 6)
    args = dict(features=x, masks=masks, kernel_size=3, group_size=2, scale_factor=2)
    target = draw(st.sampled_from(list(args)))
    if target in ("features", "masks"):
        _, args[target] = wrong_tensor(draw, args[target])
    else:
        valid = args[target]
        args[target] = draw(st.sampled_from([v for v in [0, -1, 2, 1.5, "3", None, 4] if v != valid]))
        if target == "scale_factor" and args[target] == 4:  # the masks' size fits scale 2 only
            args[target] = 3
    return target, args, draw(st.sampled_from(BACKENDS))


@MANY
@given(bad_carafe_calls())
def test_wrong_carafe_arguments_raise_naming_them(call):
    target, args, backend = call
    # a wrong size of one tensor, group or scale shows as a mismatch the message states from either side
    related = {"features": ["features", "masks", "group_size"], "masks": ["masks", "features"],
               "kernel_size": ["kernel_size", "masks"], "group_size": ["group_size", "features", "masks"],
               "scale_factor": ["scale_factor", "masks"]}[target]
    with recorded_launches(run=False) as launches, pytest.raises((ValueError, TypeError)) as err:
        ft.carafe(*args.values(), backend=backend)
    assert_names(err.value, related)
    assert launches == []


@st.composite
def non_finite_fade_calls(draw):
    en, de, w = fade_problem(b=1, c=3, h=2, w=3, scale=2, k=3, emb=4, dtype=torch.float64)
    args = dict(en=en, de=de, **w)
    target = draw(st.sampled_from(FADE_TENSORS))
    t = args[target].clone()
    index = draw(st.integers(0, t.numel() - 1))
    t.view(-1)[index] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    args[target] = t
    return args


def assert_same_non_finite(got, want):
    """Equal to the reference where it is finite; NaN exactly where it is NaN, the same infinities."""
    assert torch.equal(torch.isnan(got), torch.isnan(want)), "NaN positions differ from the reference"
    assert torch.equal(torch.isinf(got), torch.isinf(want)) and torch.equal(got[torch.isinf(got)], want[torch.isinf(want)])
    finite = torch.isfinite(want)
    torch.testing.assert_close(got[finite], want[finite], rtol=1e-9, atol=1e-9)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy, in the interpreter
@pytest.mark.parametrize("backend", BACKENDS)
@given(args=non_finite_fade_calls())
def test_non_finite_inputs_give_the_references_result(backend, args):
    got = ft.fade(*args.values(), scale=2, backend=backend)
    assert_same_non_finite(got, ref.fade(*args.values(), 2))


@st.composite
def bad_state_dicts(draw):
    model = ft.FADE(4, up_kernel_size=3, embedding_dim=4)
    sd = model.state_dict()
    key = draw(st.sampled_from(sorted(sd)))
    how = draw(st.sampled_from(["shape", "type", "missing", "unknown"]))
    if how == "shape":
        sd[key] = torch.zeros(*sd[key].shape[:-1], sd[key].shape[-1] + 1)
    elif how == "type":
        sd[key] = sd[key].tolist()
    elif how == "missing":
        del sd[key]
    else:
        sd[key + "_extra"] = sd[key].clone()
    return model, sd, key


@MANY
@given(bad_state_dicts())
def test_wrong_state_dicts_raise_naming_the_key(case):
    model, sd, key = case
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises((ValueError, TypeError)) as err:
        model.load_state_dict(sd)
    assert key in str(err.value)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # nothing half-loaded
