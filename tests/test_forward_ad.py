"""Forward-mode AD (``torch.func.jvp`` / ``jacfwd``, ``torch.autograd.forward_ad``): the ``triton``,
``torch`` and ``mmcv`` implementations have no jvp formula, so while tangents flow ``"auto"`` runs
``"naive"`` and an explicit choice of the others raises (``fade_triton.backend.forward_ad_active``).
Before, those backends returned a tangent of None (under ``no_grad``) or of zeros (``torch.func.jvp``).
Tangents are compared with central differences of the float64 reference (no AD in the reference)."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import jacfwd, jvp, vmap

import fade_triton as ft
import reference64 as ref
from fade_triton.testing import recorded_launches, rel_err
from util import WEIGHT_NAMES, fade_problem

# torch's first dual tensor loads its jvp decompositions through torch.jit.script, which torch 2.13 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning:torch.jit._script")
MODES = ["dual_no_grad", "dual_grad", "func_jvp", "jvp_of_vmap"]


def tangent_of(fn, primals, tangents, mode):
    """``fn``'s tangent at ``primals`` along ``tangents`` (one per primal), by forward-mode AD: dual
    tensors under ``no_grad`` or with grad mode on, ``torch.func.jvp``, or ``jvp`` of ``vmap`` over
    a batch of one (a dual tensor's tangent cannot be read inside ``vmap``)."""
    if mode == "func_jvp":
        return jvp(fn, tuple(primals), tuple(tangents))[1]
    if mode == "jvp_of_vmap":
        return jvp(vmap(fn), tuple(p[None] for p in primals), tuple(t[None] for t in tangents))[1][0]
    with torch.set_grad_enabled(mode == "dual_grad"), fwAD.dual_level():
        out = fn(*(fwAD.make_dual(p, t) for p, t in zip(primals, tangents)))
        return fwAD.unpack_dual(out).tangent


def central_difference(fn, primals, tangents, step=1e-6):
    """(fn(x + h t) - fn(x - h t)) / 2h in float64."""
    plus = fn(*(p + step * t for p, t in zip(primals, tangents)))
    minus = fn(*(p - step * t for p, t in zip(primals, tangents)))
    return (plus - minus) / (2 * step)


def fade_inputs(lite=False):
    en, de, weights = fade_problem(b=1, c=4, h=3, w=4, scale=2, k=3, emb=4, lite=lite)
    primals = [en, de, *(weights[n] for n in WEIGHT_NAMES)]
    return primals, [torch.randn_like(p) for p in primals]


@pytest.mark.parametrize("lite", [False, True], ids=["fade", "lite"])
@pytest.mark.parametrize("backend", ["auto", "naive"])
@pytest.mark.parametrize("mode", MODES)
def test_fade_tangent_along_every_input_matches_the_reference(mode, backend, lite):
    primals, tangents = fade_inputs(lite)
    got = tangent_of(lambda *a: ft.fade(*a, scale=2, backend=backend), primals, tangents, mode)
    want = central_difference(lambda *a: ref.fade(*a, 2), primals, tangents)
    assert got is not None and got.dtype == torch.float64
    assert rel_err(got, want) < 1e-7


@pytest.mark.parametrize("name", ["en", "de", *WEIGHT_NAMES])
def test_fade_tangent_along_one_input_matches_the_reference(name):
    """A tangent on one input alone (a weight's, say) is seen as well: every input is checked."""
    primals, tangents = fade_inputs()
    i = ["en", "de", *WEIGHT_NAMES].index(name)
    tangents = [t if j == i else torch.zeros_like(t) for j, t in enumerate(tangents)]

    def fade_with_one_dual(p):
        return ft.fade(*primals[:i], p, *primals[i + 1:], scale=2)

    got = tangent_of(fade_with_one_dual, primals[i:i + 1], tangents[i:i + 1], "dual_no_grad")
    want = central_difference(lambda *a: ref.fade(*a, 2), primals, tangents)
    assert got is not None and rel_err(got, want) < 1e-7


def test_carafe_tangent_along_the_masks_alone_matches_the_reference():
    features = torch.randn(1, 4, 3, 4, dtype=torch.float64)
    masks = torch.softmax(torch.randn(1, 9, 6, 8, dtype=torch.float64), 1)
    t = torch.randn_like(masks)
    got = tangent_of(lambda m: ft.carafe(features, m, 3), [masks], [t], "dual_no_grad")
    want = central_difference(lambda m: ref.reassemble(features, m, 3, 2), [masks], [t])
    assert got is not None and rel_err(got, want) < 1e-7


@pytest.mark.parametrize("backend", ["auto", "triton"])
def test_dual_meta_tensors_run_naive_or_are_refused(backend):
    """Meta tensors resolve to the torch path, except with tangents: the rule above comes first."""
    model = ft.FADE(4, up_kernel_size=3, embedding_dim=4, backend=backend).to("meta")
    en, de = torch.empty(1, 4, 6, 8, device="meta"), torch.empty(1, 4, 3, 4, device="meta")
    with fwAD.dual_level():
        dual = fwAD.make_dual(en, torch.empty_like(en))
        if backend == "triton":
            with pytest.raises(NotImplementedError, match="no forward-mode AD formula"):
                model(dual, de)
            return
        out = model(dual, de)
        tangent = fwAD.unpack_dual(out).tangent
    assert out.shape == (1, 4, 6, 8) and tangent is not None and tangent.shape == out.shape


@pytest.mark.parametrize("mode", MODES)
def test_module_tangent_along_en_matches_the_reference_after_validated_calls(mode):
    """A module whose calls were validated (and so replay) still sees the tangent: the replay
    bows out while a forward-AD level is open."""
    model = ft.FADE(4, up_kernel_size=3, embedding_dim=4).double()  # auto: triton in the interpreter
    en, de = torch.randn(1, 4, 6, 8, dtype=torch.float64), torch.randn(1, 4, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        plain = model(en, de)
        assert torch.equal(model(en, de), plain)  # the second call replays
    t = torch.randn_like(en)
    got = tangent_of(lambda e: model(e, de), [en], [t], mode)
    weights = [getattr(p, "data", p) for p in model.weights()]
    want = central_difference(lambda e: ref.fade(e, de, *weights, 2), [en], [t])
    assert rel_err(got, want) < 1e-7


@pytest.mark.parametrize("backend", ["auto", "naive"])
@pytest.mark.parametrize("mode", MODES)
def test_carafe_tangent_matches_the_reference(mode, backend):
    features = torch.randn(1, 4, 3, 4, dtype=torch.float64)
    masks = torch.softmax(torch.randn(1, 2 * 9, 6, 8, dtype=torch.float64), 1)
    tangents = [torch.randn_like(features), torch.randn_like(masks)]
    got = tangent_of(lambda f, m: ft.carafe(f, m, 3, 2, 2, backend=backend), [features, masks], tangents, mode)
    want = central_difference(lambda f, m: ref.reassemble(f, m, 3, 2, groups=2), [features, masks], tangents)
    assert rel_err(got, want) < 1e-7


@pytest.mark.parametrize("backend", ["triton", "torch", "mmcv"])
@pytest.mark.parametrize("mode", [*MODES, "jacfwd"])
def test_explicit_backends_without_a_jvp_refuse_forward_ad(mode, backend):
    primals, tangents = fade_inputs()
    model = ft.FADE(4, up_kernel_size=3, embedding_dim=4, backend=backend).double()
    with torch.no_grad():
        if backend != "mmcv":  # validated calls, so the next one could replay
            model(*primals[:2]), model(*primals[:2])
    masks = torch.softmax(torch.randn(1, 9, 6, 8, dtype=torch.float64), 1)
    calls = {"fade": (lambda *a: ft.fade(*a, scale=2, backend=backend), primals, tangents),
             "module": (lambda e: model(e, primals[1]), primals[:1], tangents[:1]),
             "carafe": (lambda f: ft.carafe(f, masks, 3, 1, 2, backend=backend), primals[1:2], tangents[1:2])}
    for name, (fn, p, t) in calls.items():
        with pytest.raises(NotImplementedError, match=f"backend='{backend}' has no forward-mode AD formula"):
            if mode == "jacfwd":
                jacfwd(fn)(*p)
            else:
                tangent_of(fn, p, t, mode)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_open_dual_level_without_tangents_runs_the_chosen_backend(backend):
    """A forward-AD level open around a call on plain tensors is no reason to refuse or reroute it."""
    primals, _ = fade_inputs()
    want = ft.fade(*primals, scale=2, backend=backend)
    with fwAD.dual_level(), recorded_launches() as launches:
        got = ft.fade(*primals, scale=2, backend=backend)
        features = ft.carafe(primals[1], torch.softmax(torch.randn(1, 9, 6, 8, dtype=torch.float64), 1), 3,
                             backend=backend)
    assert torch.equal(got, want) and fwAD.unpack_dual(got).tangent is None
    assert features.shape == (1, 4, 6, 8)
    assert (len(launches) > 0) == (backend == "triton")
