"""Triton backward (CPU interpreter): gradients against float64 autograd of the reference,
determinism, what is saved, and integration with autocast, torch.compile and checkpointing."""
import pytest
import torch

import fade_triton as ft
import reference64 as ref
from util import KERNEL_SHAPE_PARAMS_BWD
from util import (HALF_DTYPES, ON_CUDA, WEIGHT_NAMES, assert_close_rel, assert_fade_grads_match_reference,
                  fade_problem, grads_of)

TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}  # SPEC.md, Precision


def triton_fade(en, de, *w, scale):
    return ft.fade(en, de, *w, scale=scale, backend="triton")


@pytest.mark.parametrize("dtype", [torch.float32, *HALF_DTYPES], ids=str)
@pytest.mark.parametrize("lite", [False, True], ids=["fade", "lite"])
@pytest.mark.parametrize("shape", KERNEL_SHAPE_PARAMS_BWD)
def test_fade_gradients_match_float64_reference(shape, lite, dtype, poisoned):
    b, c, h, w, s, k, emb = shape
    en, de, wts = fade_problem(b, c, h, w, s, k, emb, lite, dtype, weight_std=0.2)
    inputs = [en, de, *(wts[n] for n in WEIGHT_NAMES)]
    grad_out = torch.randn(en.shape).to(dtype)
    assert_fade_grads_match_reference(lambda *a: triton_fade(*a, scale=s), inputs, grad_out, s, TOL[dtype], dtype)


@pytest.mark.parametrize("k,groups,scale", [pytest.param(5, 4, 2, marks=pytest.mark.slow), pytest.param(3, 2, 3, marks=pytest.mark.slow),
                                             (3, 1, 1)])
def test_carafe_gradients_match_float64_reference(k, groups, scale, poisoned):
    x = torch.randn(2, 72, 5, 6)
    masks = torch.randn(2, groups * k * k, 5 * scale, 6 * scale)
    grad_out = torch.randn(2, 72, 5 * scale, 6 * scale)
    got = grads_of(lambda x, m: ft.carafe(x, m, k, groups, scale, backend="triton"), [x, masks], grad_out)
    want = grads_of(lambda x, m: ref.reassemble(x, m, k, scale, groups), [x.double(), masks.double()], grad_out.double())
    for g, r in zip(got, want):
        assert_close_rel(g, r, 1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("lite", [False, True], ids=["fade", "lite"])
def test_gradcheck_fade_triton(lite):
    en, de, wts = fade_problem(1, 3, 2, 3, 2, 3, emb=4, lite=lite)
    inputs = [t.requires_grad_() for t in (en, de, *wts.values())]
    assert torch.autograd.gradcheck(lambda *a: triton_fade(*a, scale=2), inputs, fast_mode=True)


@pytest.mark.slow
def test_gradcheck_carafe_triton():
    x = torch.randn(1, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    m = torch.rand(1, 2 * 9, 6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, m: ft.carafe(x, m, 3, 2, 2, backend="triton"), (x, m), fast_mode=True)


@pytest.mark.slow
def test_backward_is_bitwise_deterministic():
    en, de, wts = fade_problem(2, 20, 5, 7, 2, 5, 24, dtype=torch.float32)
    inputs = [en, de, *wts.values()]
    grad_out = torch.randn(en.shape)
    first = grads_of(lambda *a: triton_fade(*a, scale=2), inputs, grad_out)
    second = grads_of(lambda *a: triton_fade(*a, scale=2), inputs, grad_out)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_frozen_inputs_get_no_gradient_and_the_rest_are_unchanged():
    """Backward skips the gradients autograd does not ask for (a frozen encoder's en, frozen
    weights) without changing the others."""
    en, de, wts = fade_problem(1, 6, 4, 5, 2, 3, 8, dtype=torch.float32)
    grad_out = torch.randn(en.shape)
    full = grads_of(lambda *a: triton_fade(*a, scale=2), [en, de, *wts.values()], grad_out)
    de_ = de.clone().requires_grad_()
    w = {n: t.clone().requires_grad_(n.startswith("kernel")) for n, t in wts.items()}
    triton_fade(en, de_, *w.values(), scale=2).backward(grad_out)
    assert torch.equal(de_.grad, full[1])
    assert torch.equal(w["kernel_weight"].grad, full[7]) and torch.equal(w["kernel_bias"].grad, full[8])
    assert all(t.grad is None for n, t in w.items() if not n.startswith("kernel"))


def test_saves_nothing_larger_than_the_logits_beyond_its_inputs():
    """Saved beyond the caller's tensors: the K2-channel logits, the low-resolution gate logits
    and the folded weights (K2*C*9): nothing with C channels at high resolution."""
    b, c, h, w, s, k = 2, 40, 8, 10, 2, 5
    en, de, wts = fade_problem(b, c, h, w, s, k, 16, dtype=torch.float32)
    en.requires_grad_()
    held = {t.untyped_storage().data_ptr() for t in (en, de, *wts.values())}
    saved = []

    def pack(t):
        if t.untyped_storage().data_ptr() not in held:
            saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        triton_fade(en, de, *wts.values(), scale=s)
    logits = b * k * k * h * s * w * s
    assert saved and max(torch.Size(sh).numel() for sh in saved) <= logits, saved


@pytest.mark.slow
def test_training_loop_decreases_the_loss():
    torch.manual_seed(1)
    model = ft.FADE(8, up_kernel_size=3, embedding_dim=8, backend="triton")
    en, de = torch.randn(2, 8, 8, 10), torch.randn(2, 8, 4, 5)
    target = torch.randn(2, 8, 8, 10)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    losses = []
    for _ in range(15):
        loss = (model(en, de) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
def test_autocast_with_float32_master_weights(dtype):
    device_type = "cuda" if ON_CUDA else "cpu"
    model = ft.FADE(8, up_kernel_size=3, embedding_dim=16, backend="triton")
    en, de = torch.randn(1, 8, 6, 8), torch.randn(1, 8, 3, 4)
    with torch.autocast(device_type, dtype=dtype):
        out = model(en, de)
    assert out.dtype == dtype
    out.float().sum().backward()
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32, name
        assert torch.isfinite(p.grad).all(), name
    model.backend = "torch"
    assert_close_rel(out, model(en, de).detach(), 1e-2)
    model.backend = "triton"
    with torch.autocast(device_type, dtype=dtype):  # half inputs, float32 master weights
        assert_close_rel(model(en.to(dtype), de.to(dtype)), out, 1e-2)


# torch.compile traces the Triton kernels only where they compile (CUDA); on CPU the same
# operator runs its pure-PyTorch implementation under the compiler
COMPILE_BACKEND = "triton" if ON_CUDA else "torch"


class UpsampleHead(torch.nn.Module):
    def __init__(self, backend="triton"):
        super().__init__()
        self.proj = torch.nn.Conv2d(8, 8, 1)
        self.up = ft.FADE(8, up_kernel_size=3, embedding_dim=8, backend=backend)

    def forward(self, en, de):
        return self.up(self.proj(en), de).relu()


@pytest.mark.parametrize("compiler", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_torch_compile_fullgraph(compiler, tmp_path, monkeypatch):
    """The Triton launchers are torch.library custom ops, so the graph has no break. Inductor
    gets a fresh cache directory: its on-disk cache does not key on a custom op's schema, so
    code compiled for an older version of these ops could otherwise be replayed."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    model = UpsampleHead(COMPILE_BACKEND)
    en, de = torch.randn(1, 8, 8, 6), torch.randn(1, 8, 4, 3)
    eager = grads_of(lambda en: model(en, de), [en], torch.ones(1, 8, 8, 6))[0]
    compiled = torch.compile(model, backend=compiler, fullgraph=True)
    got = grads_of(lambda en: compiled(en, de), [en], torch.ones(1, 8, 8, 6))[0]
    torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-5)


def test_activation_checkpointing():
    from torch.utils.checkpoint import checkpoint

    model = UpsampleHead()
    en, de = torch.randn(1, 8, 8, 6), torch.randn(1, 8, 4, 3)
    plain = grads_of(lambda en: model(en, de), [en], torch.ones(1, 8, 8, 6))[0]
    ckpt = grads_of(lambda en: checkpoint(model, en, de, use_reentrant=False), [en], torch.ones(1, 8, 8, 6))[0]
    assert torch.equal(plain, ckpt)


def test_triton_backend_under_compile_on_the_interpreter_says_why():
    """Interpreted kernels cannot be compiled: an explicit backend='triton' says so clearly
    ('auto' picks the torch implementation there)."""
    if ON_CUDA:
        pytest.skip("on CUDA the Triton kernels compile")
    model = UpsampleHead("triton")
    en, de = torch.randn(1, 8, 8, 6), torch.randn(1, 8, 4, 3)
    with pytest.raises(Exception, match="needs CUDA tensors"):
        torch.compile(model, backend="aot_eager", fullgraph=True)(en, de)
    model.up.backend = "auto"
    torch.testing.assert_close(torch.compile(model, backend="aot_eager", fullgraph=True)(en, de), model(en, de),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_triton", [pytest.param(True, marks=pytest.mark.slow), False], ids=["triton", "torch"])
def test_operator_registrations(use_triton):
    """opcheck of the four operators (schema, fake tensors, autograd registration) with both
    implementations."""
    from fade_triton.ops.carafe.op import carafe_bwd, carafe_fwd
    from fade_triton.ops.fade.fold import pack_weights
    from fade_triton.ops.fade.op import fade_bwd, fade_fwd

    en, de, wts = fade_problem(1, 4, 3, 2, 2, 3, emb=8, dtype=torch.float32)
    weights = tuple(wts[n] for n in WEIGHT_NAMES)
    packed = pack_weights(weights, torch.float32) if use_triton else (None,) * 5
    args = (en.requires_grad_(), de, *weights, *packed, 2, use_triton)
    utils = ("test_schema", "test_faketensor", "test_autograd_registration")
    torch.library.opcheck(fade_fwd, args, test_utils=utils)
    out, saved_a, saved_b = fade_fwd(*args)
    for needs in ([True] * 9, [False, True, False, True, False, True, False, False, True]):
        torch.library.opcheck(fade_bwd, (torch.randn(out.shape), en.detach(), de, *weights, *packed[:2], saved_a,
                                         saved_b, 2, use_triton, needs), test_utils=("test_schema", "test_faketensor"))
    masks = torch.randn(1, 2 * 9, 6, 4, requires_grad=True)
    x = torch.randn(1, 4, 3, 2, requires_grad=True)
    torch.library.opcheck(carafe_fwd, (x, masks, 3, 2, 2, use_triton), test_utils=utils)
    torch.library.opcheck(carafe_bwd, (torch.randn(1, 4, 6, 4), x.detach(), masks.detach(), 3, 2, 2, use_triton),
                          test_utils=("test_schema", "test_faketensor"))


def test_fused_softmax_and_gate_reject_groups():
    """The fused softmax / gate are FADE's (one mask group); grouped masks are carafe's."""
    from fade_triton.ops.reassemble import reassemble_fwd
    from fade_triton.ops.reassemble_bwd import reassemble_bwd

    x, masks, en = torch.randn(1, 4, 3, 3), torch.randn(1, 18, 6, 6), torch.randn(1, 4, 6, 6)
    with pytest.raises(ValueError, match="group_size == 1"):
        reassemble_fwd(x, masks, None, None, torch.empty_like(en), 3, 2, 2, softmax=True)
    with pytest.raises(ValueError, match="group_size == 1"):
        reassemble_fwd(x, masks, torch.randn(1, 3, 3), en, torch.empty_like(en), 3, 2, 2, softmax=False)
    with pytest.raises(ValueError, match="group_size == 1"):
        reassemble_bwd(en, x, masks, None, None, torch.empty_like(x), torch.empty_like(masks), None, 3, 2, 2,
                       softmax=True)


@pytest.mark.slow
@pytest.mark.parametrize("channels_last", [False, True])
def test_gpu_tiles_under_the_interpreter(monkeypatch, channels_last):
    """The tiles the GPU runs (NCHW: 2-4 channels per thread; channels_last: 16 channels of a
    pixel in 16-byte vectors, 8-pixel-wide tiles), not the interpreter's wider blocks; 20
    channels: one full and one partial block of 16. (IEEE float32: the interpreter has no TF32.)"""
    from fade_triton.testing import simulated_gpu

    monkeypatch.setattr(torch.backends.cudnn.conv, "fp32_precision", "ieee")
    en, de, wts = fade_problem(1, 20 if channels_last else 6, 5, 7, 2, 5, 8, dtype=torch.float32, weight_std=0.2)
    if channels_last:
        en, de = en.to(memory_format=torch.channels_last), de.to(memory_format=torch.channels_last)
    inputs = [en, de, *(wts[n] for n in WEIGHT_NAMES)]
    with simulated_gpu(90):
        assert_fade_grads_match_reference(lambda *a: triton_fade(*a, scale=2), inputs, torch.randn(en.shape), 2, 1e-5)


@pytest.mark.slow
def test_weight_gradient_over_several_chunks():
    """Images taller than one weight-gradient chunk (16 rows): the partials of several chunks
    per image and their fixed-order sum."""
    from fade_triton.ops.conv3x3 import WGRAD_ROWS

    b, c, h, w, s, k, emb = 2, 6, 19, 5, 2, 3, 8  # high resolution 38 rows: 3 chunks per image
    assert h * s > 2 * WGRAD_ROWS and h > WGRAD_ROWS  # both branches span several chunks
    en, de, wts = fade_problem(b, c, h, w, s, k, emb, dtype=torch.float32, weight_std=0.2)
    inputs = [en, de, *(wts[n] for n in WEIGHT_NAMES)]
    assert_fade_grads_match_reference(lambda *a: triton_fade(*a, scale=s), inputs, torch.randn(en.shape), s, 1e-5)


@pytest.mark.parametrize("tiles_of", [None, torch.bfloat16], ids=["own-tiles", "16-bit-tiles"])
@pytest.mark.parametrize("arch", [90, 80], ids=["sm90", "sm80"])  # the two targets' tiles
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("h, w, c, long", [(19, 37, 5, False), (5, 1, 70, False), (37, 37, 5, True)],
                         ids=["two-chunks", "one-chunk-two-channel-blocks", "two-long-chunks"])
def test_weight_gradient_partials_sum_to_the_3x3_weight_gradient(h, w, c, long, channels_last, arch, tiles_of,
                                                                 poisoned, monkeypatch, request):
    """``conv3x3_weight_grad`` alone, in float64: its chunk partials summed over the chunks are
    the 3x3 weight gradient sum_p x[p + t] g[p] (x zero outside the image) and its tap sums are
    sum over the pixels p with p + t in the image of g[p]; N below the padded NP, channels that
    are not a whole block, with sm_90's and sm_80's tiles; rows over two chunks with a partial
    last one in an image wider than a tile row (the tap sums' edge rows in several steps), and
    one chunk holding the image's first and last rows, one column wide, over two channel blocks
    (the tap sums written by channel block 0 alone); chunks of twice the rows (large launches on
    sm_90 take them: here every launch, by a threshold of 0 programs), two with a partial last
    one (sm_80 keeps 16 rows: three). ``tiles_of``: the tiles a target picks for inputs of that
    dtype (16-bit: 64 pixels a step, and 32-wide tile rows on channels_last sm_90), run here in
    float64 (the interpreter has no bfloat16)."""
    from fade_triton.ops import conv3x3 as conv
    from fade_triton.ops.helpers import Spec
    from fade_triton.testing import simulated_gpu

    if tiles_of is not None:
        own = conv.weight_grad_config
        monkeypatch.setattr(conv, "weight_grad_config", lambda x, g, np_, target: own(
            Spec(x.shape, x.stride(), tiles_of), Spec(g.shape, g.stride(), tiles_of), np_, target))
    rows = 2 * conv.WGRAD_ROWS if long and arch >= 90 else conv.WGRAD_ROWS  # sm_80 keeps the short ones
    if long:
        monkeypatch.setattr(conv, "WGRAD_LONG_CHUNK_PROGRAMS", 0)
    conv.weight_grad_plan.cache_clear()  # no plan made under another threshold serves this case, nor outlives it
    request.addfinalizer(conv.weight_grad_plan.cache_clear)
    b, n = 2, 3
    x, g = torch.randn(b, c, h, w, dtype=torch.float64), torch.randn(b, n, h, w, dtype=torch.float64)
    if channels_last:
        x, g = x.to(memory_format=torch.channels_last), g.to(memory_format=torch.channels_last)
    with simulated_gpu(arch) as target:
        tiles = conv.weight_grad_config(x, g, 16, target)
        if tiles_of is not None and arch >= 90:  # the tile rows this case is for
            assert tiles["TX"] == 32 and tiles["BLOCK_P"] == 64
        if h > rows:
            assert h % rows and w > tiles["TX"] and c < tiles["BLOCK_C"]
        else:
            assert c > tiles["BLOCK_C"]
        part, taps = conv.conv3x3_weight_grad(g, x)
    assert part.shape[0] == b * -(-h // rows)  # the chunks this case is for
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1))
    inside = torch.nn.functional.pad(torch.ones(1, 1, h, w, dtype=torch.float64), (1, 1, 1, 1))
    for t in range(9):
        i, j = divmod(t, 3)
        shifted = xp[:, :, i:i + h, j:j + w]  # x[p + (i - 1, j - 1)]
        want = torch.einsum("bchw,bnhw->cn", shifted, g)
        assert_close_rel(part[:, t, :, :n].sum(0), want, 1e-12)
        want_taps = (g * inside[:, :, i:i + h, j:j + w]).sum((0, 2, 3))
        # against the scale of g: one column wide, the side taps' sums are exactly 0, and the
        # shares (a total minus its edge column) leave rounding
        assert (taps[:, t, :n].sum(0) - want_taps).abs().max() <= 1e-12 * g.abs().sum(), t
    assert part.isfinite().all() and taps.isfinite().all()  # the padded columns are written too


@pytest.mark.parametrize("lite", [False, True], ids=["fade", "lite"])
def test_weight_gradient_over_more_chunks_than_one_step_sums(lite):
    """More weight-gradient chunks than the unfold's tap programs sum a step (one chunk per
    image): a whole step and a last partial one for both branches, through the whole backward.
    (``test_unfold_of_given_partials_matches_its_formulas`` runs both kinds of program over
    several steps, whole and ragged, on the unfold alone.)"""
    from fade_triton.ops.fade.unfold_grad import unfold_plan
    from fade_triton.ops.helpers import Target

    b = 19  # chunks: (b, 9 taps, 4 channels, NP 16) per branch; E = 8 (K2 = 9 in FADE-Lite)
    plan = unfold_plan((b, 9, 4, 16), torch.float32, b, 9 if lite else 8, 9, (1,) * 8, lite, Target(90))
    assert plan.meta["CHUNKS_T"] < b < 2 * plan.meta["CHUNKS_T"]  # the interpreter's tiles are sm_90's
    en, de, wts = fade_problem(b, 4, 2, 3, 2, 3, 8, lite, torch.float32, weight_std=0.2)
    inputs = [en, de, *(wts[n] for n in WEIGHT_NAMES)]
    assert_fade_grads_match_reference(lambda *a: triton_fade(*a, scale=2), inputs, torch.randn(en.shape), 2, 1e-5)


@pytest.mark.parametrize("n_hi, n_lo", [(64, 32), (35, 19)], ids=["whole-steps", "ragged-steps"])
@pytest.mark.parametrize("lite", [False, True], ids=["fade", "lite"])
def test_unfold_of_given_partials_matches_its_formulas(lite, n_hi, n_lo, poisoned):
    """``unfold_weight_grad`` alone, in float64, on random partials and tap-sum shares: each of the
    seven gradients against its formula (the kernel's docstring) summed in torch. Chunk counts
    that are whole steps of both kinds of program (no chunk mask) and ragged ones; 40 channels
    (two whole channel blocks and a part), K2 = 25 (a whole block of kernel rows and a part)."""
    from fade_triton.ops.fade.unfold_grad import unfold_plan, unfold_weight_grad
    from fade_triton.ops.helpers import target_of

    c, k2, np_ = 40, 25, 32
    e = k2 if lite else 24
    f64 = dict(dtype=torch.float64)
    part_hi, part_lo = torch.randn(n_hi, 9, c, np_, **f64), torch.randn(n_lo, 9, c, np_, **f64)
    tap_hi, tap_lo = torch.randn(n_hi, 9, np_, **f64), torch.randn(n_lo, 9, np_, **f64)
    weights = (torch.randn(1, c, 1, 1, **f64), torch.randn(1, **f64), torch.randn(e, c, 1, 1, **f64),
               torch.randn(e, **f64), torch.randn(e, c, 1, 1, **f64), torch.randn(k2, 1 if lite else e, 3, 3, **f64),
               torch.randn(k2, **f64))
    strides = (*weights[5].flatten(2).stride(), *weights[2].stride()[:2], *weights[4].stride()[:2],
               weights[3].stride(0))
    meta = unfold_plan(part_hi.shape, part_hi.dtype, n_lo, e, k2, strides, lite, target_of(part_hi)).meta
    whole = all(n % meta[m] == 0 for n in (n_hi, n_lo) for m in ("CHUNKS_C", "CHUNKS_T"))
    assert meta["EVEN_C"] == meta["EVEN_T"] == whole == (n_hi == 64)  # the case's chunk masks
    got = unfold_weight_grad((part_hi, tap_hi), (part_lo, tap_lo), weights, lite)

    r_hi, r_lo = part_hi.sum(0)[..., :k2], part_lo.sum(0)  # (9, C, K2) and (9, C, K2 + 1 and padding)
    tb_hi, l_lo = tap_hi.sum(0)[:, :k2], tap_lo.sum(0)[4]
    we, be, wd = weights[2].flatten(1), weights[3], weights[4].flatten(1)
    if lite:  # e = k: Wk[k, 0, t]
        wk = weights[5].flatten(1)  # (K2, 9)
        want_we = torch.einsum("kt,tck->kc", wk, r_hi)
        want_wd = torch.einsum("kt,tck->kc", wk, r_lo[..., :k2])
        want_wk = (torch.einsum("kc,tck->kt", we, r_hi) + torch.einsum("kc,tck->kt", wd, r_lo[..., :k2])
                   + be[:, None] * tb_hi.T)[:, None]
        want_be = (wk * tb_hi.T).sum(1)
    else:
        wk = weights[5].flatten(2)  # (K2, E, 9)
        want_we = torch.einsum("ket,tck->ec", wk, r_hi)
        want_wd = torch.einsum("ket,tck->ec", wk, r_lo[..., :k2])
        want_wk = (torch.einsum("ec,tck->ket", we, r_hi) + torch.einsum("ec,tck->ket", wd, r_lo[..., :k2])
                   + be[None, :, None] * tb_hi.T[:, None, :])
        want_be = torch.einsum("ket,tk->e", wk, tb_hi)
    want = [r_lo[4, :, k2], l_lo[k2:k2 + 1], want_we, want_be, want_wd, want_wk, tb_hi[4] + l_lo[:k2]]
    for name, g, w, weight in zip(WEIGHT_NAMES, got, want, weights):
        assert g.shape == weight.shape and g.dtype == torch.float64, name
        assert_close_rel(g.reshape(w.shape), w, 1e-12)


@pytest.mark.parametrize("lite", [False, True], ids=["fade", "lite"])
def test_gradients_of_strided_weights(lite, poisoned):
    """Weights that are views with their own strides (dimensions stored in reverse order): the
    kernels read them by their strides (the weight-gradient unfold once read them as contiguous)."""
    en, de, wts = fade_problem(2, 6, 3, 4, 2, 3, 8, lite, torch.float32, weight_std=0.2)

    def reversed_layout(t):  # same values, strides reversed (dense, so grads_of's clone keeps them)
        dims = tuple(reversed(range(t.dim())))
        return t.permute(dims).contiguous().permute(dims)

    contiguous = [en, de, *(wts[n] for n in WEIGHT_NAMES)]
    compressors = [en, de, *(reversed_layout(wts[n]) if n in ("en_weight", "de_weight") else wts[n]
                             for n in WEIGHT_NAMES)]
    strided = [en, de, *(reversed_layout(wts[n]) for n in WEIGHT_NAMES)]
    assert not strided[4].is_contiguous() and not strided[7].is_contiguous()  # en_weight, kernel_weight
    # contiguous first, then the same shapes strided: the launch plans cached for one call must
    # not serve another (every weight's strides are part of the call's signature)
    for inputs in (contiguous, compressors, strided):
        assert_fade_grads_match_reference(lambda *a: triton_fade(*a, scale=2), inputs, torch.randn(en.shape), 2, 1e-5)


class _Watch(torch.overrides.TorchFunctionMode):
    """A TorchFunctionMode that changes nothing: with it active the triton path runs through the
    dispatcher (``fade_triton::fade``), as under any mode (``helpers.direct_call_ok``)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def operator_calls(monkeypatch, module, name):
    """Calls of the operator ``module.name`` made from now on (a list that grows)."""
    calls, op = [], getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a: calls.append(1) or op(*a))
    return calls


@pytest.mark.parametrize("lite", [False, True], ids=["fade", "lite"])
def test_eager_fast_path_matches_the_operator_bitwise(lite, monkeypatch):
    """The eager fast path (``ops/fade/op.py``: the implementation without the dispatcher) and
    the operator give bitwise the same output and the same gradients of every input; plain eager
    calls take the fast path, calls under a mode the operator (so FlopCounterMode and the like
    see it: tests/test_deploy.py counts its FLOPs on the triton backend)."""
    from fade_triton.ops.fade import op

    en, de, wts = fade_problem(2, 6, 5, 7, 2, 3, 8, lite, torch.float32, weight_std=0.2)
    inputs = [en, de, *(wts[n] for n in WEIGHT_NAMES)]
    grad_out = torch.randn(en.shape)
    forward, backward = operator_calls(monkeypatch, op, "fade_fwd"), operator_calls(monkeypatch, op, "fade_bwd")
    fast = triton_fade(en, de, *inputs[2:], scale=2), grads_of(lambda *a: triton_fade(*a, scale=2), inputs, grad_out)
    assert (forward, backward) == ([], [])
    with _Watch():
        dispatched = (triton_fade(en, de, *inputs[2:], scale=2),
                      grads_of(lambda *a: triton_fade(*a, scale=2), inputs, grad_out))
    assert (len(forward), len(backward)) == (2, 1)
    assert torch.equal(fast[0], dispatched[0])
    for got, want in zip(fast[1], dispatched[1]):
        assert torch.equal(got, want)


def test_carafe_eager_fast_path_matches_the_operator_bitwise(monkeypatch):
    from fade_triton.ops.carafe import op

    x, masks, grad_out = torch.randn(2, 8, 5, 6), torch.rand(2, 2 * 9, 10, 12), torch.randn(2, 8, 10, 12)
    forward, backward = operator_calls(monkeypatch, op, "carafe_fwd"), operator_calls(monkeypatch, op, "carafe_bwd")

    def run():
        return grads_of(lambda x, m: ft.carafe(x, m, 3, 2, 2, backend="triton"), [x, masks], grad_out)

    fast = run()
    assert (forward, backward) == ([], [])
    with _Watch():
        dispatched = run()
    assert (len(forward), len(backward)) == (1, 1)
    for got, want in zip(fast, dispatched):
        assert torch.equal(got, want)


def _plain_function(x):  # the source a JITFunction needs; never launched
    return x


def test_wrap_kernel_is_wrap_triton_without_its_imports():
    """``helpers.wrap_kernel`` returns what ``torch.library.wrap_triton`` does for a compiled-mode
    kernel: the traceable wrapper while the wrap is on (the operator path, torch.compile), the
    kernel itself where the eager fast path switches it off."""
    from torch._library.triton import set_wrap_triton_enabled
    from torch.library import wrap_triton
    from triton.runtime.jit import JITFunction

    from fade_triton.ops.helpers import wrap_kernel

    kernel = JITFunction(_plain_function)
    assert type(wrap_kernel(kernel)) is type(wrap_triton(kernel))
    assert wrap_kernel(kernel) is not kernel
    with set_wrap_triton_enabled(False):
        assert wrap_kernel(kernel) is kernel is wrap_triton(kernel)


# The tensor-core mask gradient (ops/reassemble_dot.py), forced where "auto" would pick the FMA
# kernel (float64, and float32 under the interpreter): (b, c, h, w, s, k, groups, crop, layout).
# C=70: a channel remainder (channels_last: three 32-channel steps, sm_90's tile there);
# groups > 1: CARAFE (masks as given); crop: an output smaller than s x x.
DOT_BWD_CASES = [(2, 70, 5, 7, 2, 5, 1, 0, "nchw"), (1, 24, 6, 9, 2, 3, 1, 1, "channels_last"),
                 (1, 16, 3, 4, 4, 7, 1, 2, "nchw"), (1, 24, 4, 5, 2, 3, 2, 0, "channels_last"),
                 (1, 70, 5, 7, 2, 3, 1, 1, "channels_last")]
DOT_BWD_TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-2}


@pytest.mark.parametrize("arch", [90, 80], ids=["sm90", "sm80"])  # the targets' plans (sm_80: en before the dots)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, *HALF_DTYPES], ids=str)
@pytest.mark.parametrize("case", DOT_BWD_CASES, ids=lambda c: "b{}c{}h{}w{}s{}k{}g{}crop{}-{}".format(*c))
def test_dot_mask_gradient_kernel(case, dtype, arch, poisoned):
    """``reassemble_bwd(kernel="dot")`` against float64 autograd of the reference: the logit (mask)
    gradient, the log-sum-exp, the phase-summed logit gradient and the gate-logit gradient in
    ``dlo``, and the feature gradient (its kernel reads the log-sum-exp); with sm_90's and
    sm_80's plans."""
    import torch.nn.functional as F

    from fade_triton.ops.reassemble_bwd import reassemble_bwd
    from fade_triton.testing import simulated_gpu

    b, c, h, w, s, k, groups, crop, layout = case
    oh, ow, k2 = h * s - crop, w * s - crop, k * k
    fade = groups == 1
    x, en, dout = torch.randn(b, c, h, w), torch.randn(b, c, oh, ow), torch.randn(b, c, oh, ow)
    x, en, dout = (t.to(dtype) for t in (x, en, dout))
    if layout == "channels_last":
        x, en, dout = (t.to(memory_format=torch.channels_last) for t in (x, en, dout))
    masks = torch.randn(b, groups * k2, oh, ow) * 2 if fade else torch.rand(b, groups * k2, oh, ow).to(dtype)
    gate = torch.randn(b, h, w) if fade else None
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    dx, dm = torch.empty_like(x), torch.empty(b, groups * k2, oh, ow, dtype=acc)
    lo = torch.empty(b, h, w, 32 if k2 < 32 else 64, dtype=acc)  # as semi_shift_lo's buffer
    dlo = lo.permute(0, 3, 1, 2)[:, :k2 + 1] if fade else None
    with simulated_gpu(arch):
        reassemble_bwd(dout, x, masks, gate, en if fade else None, dx, dm, dlo, k, groups, s, fade, kernel="dot")

    xr, mr = x.double().requires_grad_(), masks.double().requires_grad_()
    if fade:
        gr = gate.double()[:, None].requires_grad_()
        g = torch.sigmoid(ref.up(gr, s))[..., :oh, :ow]
        out = g * en.double() + (1 - g) * ref.reassemble(xr, torch.softmax(mr, 1), k, s)
        out.backward(dout.double())
        phase_sum = F.pad(mr.grad, (0, w * s - ow, 0, h * s - oh)).unflatten(2, (h, s)).unflatten(4, (w, s)).sum((3, 5))
        assert_close_rel(dlo[:, :k2], phase_sum, DOT_BWD_TOL[dtype])
        assert_close_rel(dlo[:, k2], gr.grad[:, 0], DOT_BWD_TOL[dtype])
    else:
        ref.reassemble(xr, mr, k, s, groups).backward(dout.double())
    assert_close_rel(dm, mr.grad, DOT_BWD_TOL[dtype])
    assert_close_rel(dx, xr.grad, DOT_BWD_TOL[dtype])


# The tensor-core feature gradient (ops/reassemble_dot_feat.py, reassemble_bwd_feat_dot_kernel) alone,
# forced where "auto" would pick the FMA kernel: (b, c, h, w, s, k, groups, crop, layout). Widths
# past one tile of dx columns (16 - K + 1), heights past one row strip, C=136: a channel block of
# 128 and a remainder; s 2, 4, 8; K 3-9; groups > 1: CARAFE (masks as given, no gate).
DOT_FEAT_CASES = [(1, 136, 7, 30, 2, 5, 1, 0, "nchw"), (2, 24, 9, 17, 2, 3, 1, 1, "channels_last"),
                  (1, 16, 5, 9, 4, 7, 1, 2, "nchw"), (1, 32, 6, 20, 2, 9, 2, 0, "channels_last"),
                  (1, 16, 3, 5, 8, 3, 1, 3, "nchw")]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, *HALF_DTYPES], ids=str)
@pytest.mark.parametrize("case", DOT_FEAT_CASES, ids=lambda c: "b{}c{}h{}w{}s{}k{}g{}crop{}-{}".format(*c))
def test_dot_feature_gradient_kernel(case, dtype, poisoned):
    """``reassemble_bwd_feat_dot_kernel`` launched alone (its plan), against float64 autograd of
    the reference: dx for weights exp(logit - lse) * (1 - sigmoid(gate)) (FADE), or the masks as
    given (CARAFE)."""
    from fade_triton.ops.helpers import dot_precision, launch, spec, target_of
    from fade_triton.ops.reassemble_dot_feat import reassemble_bwd_feat_dot_kernel, reassemble_bwd_feat_dot_plan

    b, c, h, w, s, k, groups, crop, layout = case
    oh, ow, k2 = h * s - crop, w * s - crop, k * k
    fade = groups == 1
    x, dout = torch.randn(b, c, h, w, dtype=dtype), torch.randn(b, c, oh, ow, dtype=dtype)
    if layout == "channels_last":
        x, dout = (t.to(memory_format=torch.channels_last) for t in (x, dout))
    masks = torch.randn(b, groups * k2, oh, ow) * 2 if fade else torch.rand(b, groups * k2, oh, ow).to(dtype)
    if layout == "channels_last":  # channel-fast masks too (each tap row's weights start at an odd tap)
        masks = masks.to(memory_format=torch.channels_last)
    gate = torch.randn(b, h, w) if fade else None
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    lse = torch.logsumexp(masks.double(), 1).to(acc) if fade else None
    dx = torch.empty_like(x)
    plan = reassemble_bwd_feat_dot_plan(spec(dx), masks.stride(), fade, gate.stride() if fade else (0,) * 3,
                                        dout.stride(), masks.shape, k, groups, s, fade,
                                        dot_precision(dtype, target_of(x)))
    assert plan.kernel is reassemble_bwd_feat_dot_kernel
    launch(None, plan, (masks, lse, gate, dout, dx), (True,) * 5)

    xr = x.double().requires_grad_()
    if fade:
        g = torch.sigmoid(ref.up(gate.double()[:, None], s))[..., :oh, :ow]
        ((1 - g) * ref.reassemble(xr, torch.softmax(masks.double(), 1), k, s)).backward(dout.double())
    else:
        ref.reassemble(xr, masks.double(), k, s, groups).backward(dout.double())
    assert_close_rel(dx, xr.grad, DOT_BWD_TOL[dtype])


@pytest.mark.parametrize("dtype,precision,k,expect", [
    (torch.float16, "ieee", 5, "dot"), (torch.bfloat16, "ieee", 9, "dot"), (torch.float32, "tf32", 3, "dot"),
    (torch.float32, "ieee", 5, "fma"), (torch.float64, "ieee", 5, "fma"), (torch.float16, "ieee", 11, "fma")])
def test_feature_gradient_kernel_choice(dtype, precision, k, expect, monkeypatch):
    """``kernel="auto"``: the tensor-core feature gradient where the mask gradient's rule picks
    tensor cores and K <= 9 (at least half of a tile's 16 dx columns stored); "dot" raises past
    that."""
    from fade_triton.ops import reassemble_bwd
    from fade_triton.ops.helpers import Target, spec
    from fade_triton.ops.reassemble_dot_feat import reassemble_bwd_feat_dot_kernel

    monkeypatch.setattr(reassemble_bwd, "dot_precision", lambda dt, target: precision)
    reassemble_bwd.reassemble_bwd_plans.cache_clear()
    x = torch.empty(2, 32, 8, 8, dtype=dtype)
    args = (spec(x), (0,) * 4, True, (0,) * 3, (0,) * 4, (0,) * 4, (0,) * 4, spec(x), (2, k * k, 16, 16), k, 1, 2, True,
            Target(90))
    _, feat = reassemble_bwd.reassemble_bwd_plans(*args)
    assert (feat.kernel is reassemble_bwd_feat_dot_kernel) == (expect == "dot")
    if k > 9:
        with pytest.raises(ValueError, match="K <= 9"):
            reassemble_bwd.reassemble_bwd_plans(*args, "dot")
    reassemble_bwd.reassemble_bwd_plans.cache_clear()
