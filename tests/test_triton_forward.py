"""Triton forward kernels (run in Triton's CPU interpreter) against the float64 reference."""

import pytest
import torch

import fade_triton as ft
import reference64 as ref
from fade_triton.backend import float32_conv_precision
from fade_triton.ops.fade.fold import pack_weights
from fade_triton.ops.fade.triton_impl import semi_shift_hi, semi_shift_lo
from fade_triton.ops.helpers import Target, dot_precision, spec
from fade_triton.ops.reassemble import reassemble_fwd
from fade_triton.testing import recorded_launches, simulated_gpu
from util import KERNEL_SHAPE_PARAMS
from util import HALF_DTYPES, ON_CUDA, WEIGHT_NAMES, assert_close_rel, fade_problem, rel_err

TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}  # SPEC.md, Precision


def reference_logits(en, de, w, scale):
    en, de = en.double(), de.double()
    w = {n: t.double() for n, t in w.items()}
    groups = w["kernel_weight"].shape[0] if w["kernel_weight"].shape[1] == 1 else 1
    hi = ref.conv3x3(ref.conv1x1(en, w["en_weight"], w["en_bias"]), w["kernel_weight"], w["kernel_bias"], groups)
    lo = ref.conv3x3(ref.conv1x1(de, w["de_weight"]), w["kernel_weight"], w["kernel_bias"], groups)
    return hi + ref.up(lo, scale)


@pytest.mark.parametrize("dtype", [torch.float32, *HALF_DTYPES], ids=str)
@pytest.mark.parametrize("lite", [False, True], ids=["fade", "lite"])
@pytest.mark.parametrize("shape", KERNEL_SHAPE_PARAMS)
def test_semi_shift_kernels(shape, lite, dtype, poisoned):
    """The low-resolution kernel (decoder branch + gate logit at channel K2) and the logits."""
    b, c, h, w, s, k, emb = shape
    en, de, wts = fade_problem(b, c, h, w, s, k, emb, lite, dtype, weight_std=0.2)
    packed = pack_weights(tuple(wts[n] for n in WEIGHT_NAMES), dtype)
    lo = semi_shift_lo(de, packed)
    logits = semi_shift_hi(en, lo, packed, k * k, s)
    assert logits.shape == (b, k * k, h * s, w * s) and lo.shape[:3] == (b, h, w)
    assert_close_rel(logits, reference_logits(en, de, wts, s), TOL[dtype])
    gate = ref.conv1x1(de.double(), wts["gate_weight"].double(), wts["gate_bias"].double())[:, 0]
    assert_close_rel(lo[..., k * k], gate, TOL[dtype])


# conv3x3_kernel alone: (b, c_in, c_out, h, w, layout). Widths 7, 16, 20, 33 and 130: whole-row
# tiles (FOLD_X) of 16, 16, 32, 64 and 256 columns (16: a row's last pixel is the tile's, so the
# right-hand shift must stop at the row's end; 130: the input gradient keeps its tap loads);
# c_in = 40 ends on a partial channel step, 32 on a whole one (no channel mask: EVEN_K).
CONV_CASES = [(2, 5, 6, 3, 7, "nchw"), (1, 40, 25, 5, 16, "nchw"), (1, 8, 40, 4, 33, "nchw"),
              (1, 6, 9, 2, 130, "nchw"), (1, 32, 9, 3, 20, "nchw"), (1, 12, 25, 4, 9, "channels_last"),
              (1, 40, 6, 3, 16, "channels_last")]
CONV_TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


TILINGS = ["sm90", "sm80", "sm90-taps"]  # the target's tiles; "taps": FOLD_X off (images wider than it spans)


def conv_problem(b, c_in, c_out, h, w, layout, dtype, request, monkeypatch, tiling):
    """The ``tiling``'s target (and for "-taps" MAX_FOLD_WIDTH 0, the plan cache cleared around the
    test); an input (b, c_in, h, w) in ``layout``; packed weights (9, c_in, KP) zero-padded past
    c_out and the same as a float64 (c_out, c_in, 3, 3) conv2d weight; a low-resolution gate logit
    (b, ceil(h / 2), ceil(w / 2)) and its float64 sigmoid at (h, w)."""
    from fade_triton.ops import conv3x3, helpers
    monkeypatch.setattr(helpers, "SIMULATED_TARGET", Target(80 if tiling == "sm80" else 90, interpreter=not ON_CUDA))
    if tiling.endswith("taps"):
        monkeypatch.setattr(conv3x3, "MAX_FOLD_WIDTH", 0)
        conv3x3.conv3x3_plan.cache_clear()
        request.addfinalizer(conv3x3.conv3x3_plan.cache_clear)  # no plan of this test outlives it
    x = torch.randn(b, c_in, h, w).to(dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    packed = torch.zeros(9, c_in, max(16, 1 << (c_out - 1).bit_length()), dtype=dtype)
    packed[:, :, :c_out] = torch.randn(9, c_in, c_out).to(dtype) / 3
    weight = packed[:, :, :c_out].double().permute(2, 1, 0).reshape(c_out, c_in, 3, 3)
    gate = torch.randn(b, (h + 1) // 2, (w + 1) // 2)
    return x, packed, weight, gate, torch.sigmoid(ref.up(gate.double()[:, None], 2)[..., :h, :w])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, *HALF_DTYPES], ids=str)
@pytest.mark.parametrize("tiling", TILINGS)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "b{}i{}o{}h{}w{}-{}".format(*c))
def test_conv3x3_kernel(case, tiling, dtype, poisoned, request, monkeypatch):
    """The 3x3 'same' convolution with its epilogue (bias, a low-resolution addend at s = 2, a
    gated addend) against float64 conv2d: with the folded tap columns (whole-row tiles, three
    accumulators shifted once) on sm_90 and sm_80 tiles, and with a load per tap."""
    from fade_triton.ops import helpers
    from fade_triton.ops.conv3x3 import conv3x3, conv3x3_config
    b, c_in, c_out, h, w, layout = case
    x, packed, weight, gate, g = conv_problem(b, c_in, c_out, h, w, layout, dtype, request, monkeypatch, tiling)
    bias, add = torch.randn(c_out).to(dtype), torch.randn(b, c_out, h, w)
    lo = torch.randn(b, c_out, (h + 1) // 2, (w + 1) // 2)
    out = torch.empty(b, c_out, h, w, dtype=dtype)
    conv3x3(x, packed, c_out, out, bias=bias, lo=lo, add=add, gate=gate, scale=2)
    expect = torch.nn.functional.conv2d(x.double(), weight, bias.double(), padding=1)
    expect += ref.up(lo.double(), 2)[..., :h, :w] + g * add
    folded = tiling != "sm90-taps" and dtype != torch.float64  # float64 keeps the tap loads (it spills folded)
    assert conv3x3_config(spec(x), c_out, helpers.SIMULATED_TARGET)["FOLD_X"] == folded
    assert_close_rel(out, expect, CONV_TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, *HALF_DTYPES], ids=str)
@pytest.mark.parametrize("tiling", TILINGS)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "b{}i{}o{}h{}w{}-{}".format(*c))
def test_conv3x3_input_grad_kernel(case, tiling, dtype, poisoned, request, monkeypatch):
    """The transposed 3x3 (the input gradient: packed weights read transposed and mirrored, their
    zero-padded rows unmasked on sm_90) with a gated addend, against float64 conv_transpose2d:
    folded on sm_90 (up to 128 columns), a load per tap on sm_80 and with the fold off."""
    from fade_triton.ops import helpers
    from fade_triton.ops.conv3x3 import conv3x3_config, conv3x3_input_grad
    b, c, n, h, w, layout = case  # c: the forward's input channels (the gradient's), n: its outputs
    _, packed, weight, gate, g = conv_problem(b, c, n, h, w, layout, dtype, request, monkeypatch, tiling)
    grad = torch.randn(b, n, h, w).to(dtype)
    if layout == "channels_last":
        grad = grad.to(memory_format=torch.channels_last)
    add = torch.randn(b, c, h, w)
    out = torch.empty(b, c, h, w, dtype=dtype)
    conv3x3_input_grad(grad, packed, c, out, add=add, gate=gate, scale=2)
    expect = torch.nn.functional.conv_transpose2d(grad.double(), weight, padding=1) + g * add
    folded = tiling == "sm90" and dtype != torch.float64 and w <= 128
    assert conv3x3_config(spec(grad), c, helpers.SIMULATED_TARGET, flip=True)["FOLD_X"] == folded
    assert_close_rel(out, expect, CONV_TOL[dtype])


@pytest.mark.parametrize("shape,flip,dtype,folded", [
    ((1, 8, 1000, 200), False, torch.bfloat16, True), ((1, 8, 70000, 200), False, torch.bfloat16, False),
    ((1, 8, 70000, 8), False, torch.bfloat16, True), ((1, 8, 10, 300), False, torch.bfloat16, False),
    ((1, 8, 10, 128), True, torch.float32, True), ((1, 8, 10, 130), True, torch.float32, False),
    ((1, 8, 10, 64), False, torch.float64, False)])
def test_conv3x3_fold_choice(shape, flip, dtype, folded):
    """Whole-row tiles where they fit: up to 256 columns (input gradients 128), not float64, and
    not where one-row tiles would pass grid axis 1's 65,535 (at width 8 a tile holds 8 rows)."""
    from fade_triton.ops.conv3x3 import conv3x3_config
    x = torch.empty(shape, dtype=dtype, device="meta")
    assert conv3x3_config(spec(x), 25, Target(90), flip=flip)["FOLD_X"] == folded


@pytest.mark.parametrize("dtype", [torch.float32, *HALF_DTYPES], ids=str)
@pytest.mark.parametrize("shape", KERNEL_SHAPE_PARAMS)
def test_fused_softmax_reassembly_gate_kernel(shape, dtype, poisoned):
    b, c, h, w, s, k, _ = shape
    de = torch.randn(b, c, h, w).to(dtype)
    en = torch.randn(b, c, h * s, w * s).to(dtype)
    logits = torch.randn(b, k * k, h * s, w * s) * 3
    gate = torch.randn(b, 1, h, w)
    out = torch.empty_like(en)
    reassemble_fwd(de, logits, gate[:, 0], en, out, k, 1, s, softmax=True)
    g = torch.sigmoid(ref.up(gate.double(), s))
    expect = g * en.double() + (1 - g) * ref.reassemble(de.double(), torch.softmax(logits.double(), 1), k, s)
    assert out.dtype == dtype
    assert_close_rel(out, expect, TOL[dtype])


# The tensor-core reassembly (ops/reassemble_dot.py), forced where "auto" would pick the FMA kernel
# (float64, and float32 under the interpreter, which has no TF32): (b, c, h, w, s, k, groups, crop,
# layout). C=70: a channel remainder and two channel splits; groups > 1: CARAFE's given masks;
# crop: an output smaller than s x de; s = 3 and 4: other tiles (one row of 64, four of 16). The
# last three are channels_last past 64 channels a group, where float32 x on sm_90 takes 32-channel
# steps with their loads before the dots: one step a program (C=70, three splits), CARAFE with two
# groups of 70 and no gate, and four steps a program with a remainder (C=200, one split).
DOT_CASES = [(2, 70, 5, 7, 2, 5, 1, 0, "nchw"), (1, 24, 6, 9, 2, 3, 2, 1, "channels_last"),
             (1, 16, 4, 5, 3, 5, 1, 0, "nchw"), (1, 16, 3, 4, 4, 7, 1, 2, "channels_last"),
             (1, 64, 3, 40, 2, 5, 1, 0, "nchw"), (1, 70, 4, 6, 2, 5, 1, 1, "channels_last"),
             (1, 140, 4, 6, 2, 5, 2, 1, "channels_last"), (1, 200, 9, 40, 2, 5, 1, 1, "channels_last")]
DOT_TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-2}


# sm_90's plans, and sm_80's where they differ (float32 channels_last x past 64 channels)
DOT_CASE_PARAMS = [pytest.param(case, arch, id="b{}c{}h{}w{}s{}k{}g{}crop{}-{}".format(*case) + f"-sm{arch}")
                   for case, arch in [*((case, 90) for case in DOT_CASES), (DOT_CASES[5], 80)]]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, *HALF_DTYPES], ids=str)
@pytest.mark.parametrize("case,arch", DOT_CASE_PARAMS)
def test_dot_reassembly_kernel(case, arch, dtype, poisoned):
    b, c, h, w, s, k, groups, crop, layout = case
    oh, ow = h * s - crop, w * s - crop
    x = torch.randn(b, c, h, w).to(dtype)
    en = torch.randn(b, c, oh, ow).to(dtype)
    if layout == "channels_last":
        x, en = x.to(memory_format=torch.channels_last), en.to(memory_format=torch.channels_last)
    out = torch.empty_like(en)
    if groups == 1:  # FADE: logits, softmax, gate
        logits = torch.randn(b, k * k, oh, ow) * 3
        gate = torch.randn(b, 1, h, w)
        with simulated_gpu(arch), recorded_launches(keep_args=True) as launches:
            reassemble_fwd(x, logits, gate[:, 0], en, out, k, 1, s, softmax=True, kernel="dot")
        g = ref.up(torch.sigmoid(gate.double()), s)[..., :oh, :ow]
        expect = g * en.double() + (1 - g) * ref.reassemble(x.double(), torch.softmax(logits.double(), 1), k, s)
    else:  # CARAFE: the masks as given
        masks = torch.softmax(torch.randn(b, groups, k * k, oh, ow), 2).flatten(1, 2).to(dtype)
        with simulated_gpu(arch), recorded_launches(keep_args=True) as launches:
            reassemble_fwd(x, masks, None, None, out, k, groups, s, softmax=False, kernel="dot")
        expect = ref.reassemble(x.double(), masks.double(), k, s, groups)
    slabs_first = dtype == torch.float32 and layout == "channels_last" and c // groups > 64 and arch == 90
    assert [launch.kwargs["SLABS_FIRST"] for launch in launches] == [slabs_first]  # the order this case tests
    assert out.dtype == dtype
    assert_close_rel(out, expect, DOT_TOL[dtype])


@pytest.mark.parametrize("dtype,precision,scale,expect", [
    (torch.float16, "ieee", 2, "dot"), (torch.bfloat16, "ieee", 2, "dot"), (torch.float32, "tf32", 2, "dot"),
    (torch.float32, "ieee", 2, "fma"), (torch.float64, "ieee", 2, "fma"), (torch.float16, "ieee", 1, "fma")])
def test_reassembly_kernel_choice(dtype, precision, scale, expect, monkeypatch):
    """``kernel="auto"``: the tensor-core kernel for half inputs and TF32 float32 at s >= 2, the FMA
    kernel for IEEE float32, float64 and s = 1."""
    from fade_triton.ops import reassemble
    from fade_triton.ops.reassemble_dot import reassemble_fwd_dot_kernel

    monkeypatch.setattr(reassemble, "dot_precision", lambda dt, target: precision)
    reassemble.reassemble_fwd_plan.cache_clear()
    x = torch.empty(2, 32, 8, 8, dtype=dtype)
    plan = reassemble.reassemble_fwd_plan(spec(x), (0,) * 4, True, (0,) * 3, (0,) * 4, (2, 32, 8 * scale, 8 * scale),
                                          (0,) * 4, 5, 1, scale, True, Target(90))
    reassemble.reassemble_fwd_plan.cache_clear()
    assert (plan.kernel is reassemble_fwd_dot_kernel) == (expect == "dot")


@pytest.mark.parametrize("dtype,layout,channels,arch,expect", [
    (torch.float32, "channels_last", 256, 90, (32, True)), (torch.float32, "channels_last", 64, 90, (64, False)),
    (torch.float32, "nchw", 256, 90, (64, False)), (torch.float32, "channels_last", 256, 80, (64, False)),
    (torch.float32, "channels_last", 256, 100, (64, False)), (torch.float64, "channels_last", 256, 90, (64, False)),
    (torch.bfloat16, "channels_last", 256, 90, (64, False))])
def test_dot_reassembly_step(dtype, layout, channels, arch, expect):
    """The forward's channel step and load order (``reassemble_fwd_dot_plan``): 32 channels with
    every load before the dots for float32 channels_last x on sm_90 past one 64-channel step; 64,
    one slab before each dot, elsewhere. The kernel test above runs both orders."""
    from fade_triton.ops.reassemble_dot import dot_tile, reassemble_fwd_dot_plan

    x = torch.empty(2, channels, 8, 8, dtype=dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    plan = reassemble_fwd_dot_plan(spec(x), (0,) * 4, True, (0,) * 3, (0,) * 4, (2, channels, 16, 16), (0,) * 4, 5,
                                   1, 2, True, "tf32", dot_tile(x, 5, 2), arch)
    assert (plan.meta["BLOCK_C"], plan.meta["SLABS_FIRST"]) == expect


def test_dot_reassembly_batch_slices(monkeypatch, poisoned):
    """Past the grid's axis-2 limit the dot kernel is launched per batch slice, as every kernel."""
    from fade_triton.ops import helpers

    monkeypatch.setattr(helpers, "MAX_GRID_YZ", 2)  # 3 images: two launches
    # one row of output tiles (axis 1 is limited too)
    x, logits, en = torch.randn(3, 8, 1, 4), torch.randn(3, 9, 2, 8), torch.randn(3, 8, 2, 8)
    gate, out = torch.randn(3, 1, 4), torch.empty(3, 8, 2, 8)
    reassemble_fwd(x, logits, gate, en, out, 3, 1, 2, softmax=True, kernel="dot")
    g = ref.up(torch.sigmoid(gate[:, None].double()), 2)
    expect = g * en.double() + (1 - g) * ref.reassemble(x.double(), torch.softmax(logits.double(), 1), 3, 2)
    assert_close_rel(out, expect, 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, *HALF_DTYPES], ids=str)
@pytest.mark.parametrize("lite", [False, True], ids=["fade", "lite"])
@pytest.mark.parametrize("shape", KERNEL_SHAPE_PARAMS)
def test_fade_triton_end_to_end(shape, lite, dtype, poisoned):
    b, c, h, w, s, k, emb = shape
    en, de, wts = fade_problem(b, c, h, w, s, k, emb, lite, dtype, weight_std=0.2)
    out = ft.fade(en, de, *wts.values(), scale=s, backend="triton")
    assert out.dtype == dtype and out.shape == en.shape
    assert_close_rel(out, ref.fade(en, de, *(wts[n] for n in WEIGHT_NAMES), s), TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, *(pytest.param(d, marks=pytest.mark.slow) for d in HALF_DTYPES)], ids=str)
@pytest.mark.parametrize("k,groups,scale", [(5, 4, 2), (3, 2, 3), (7, 1, 1)])
def test_carafe_kernel_groups(k, groups, scale, dtype, poisoned):
    x = torch.randn(2, 72, 5, 6).to(dtype)
    masks = torch.softmax(torch.randn(2, groups, k * k, 5 * scale, 6 * scale), 2).flatten(1, 2).to(dtype)
    out = ft.carafe(x, masks, k, groups, scale, backend="triton")
    assert_close_rel(out, ref.reassemble(x.double(), masks.double(), k, scale, groups), TOL[dtype])


def test_float16_large_logits_stay_finite(poisoned):
    """Logits far beyond float16's exp range: the max-subtracted softmax gives finite output."""
    en, de, wts = fade_problem(1, 8, 4, 5, 2, 5, 16, dtype=torch.float16)
    wts["kernel_bias"] = (torch.arange(25, dtype=torch.float16) * 400).to(torch.float16)  # up to 9600 (x2)
    out = ft.fade(en, de, *wts.values(), scale=2, backend="triton")
    assert torch.isfinite(out).all()
    assert_close_rel(out, ref.fade(en, de, *(wts[n] for n in WEIGHT_NAMES), 2), 1e-2)


@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
def test_strided_inputs_without_copies(layout, poisoned):
    en, de, wts = fade_problem(2, 6, 5, 7, 2, 3, 8, dtype=torch.float32)
    if layout == "channels_last":
        en2, de2 = en.to(memory_format=torch.channels_last), de.to(memory_format=torch.channels_last)
    else:
        en2 = torch.randn(2, 6, 10, 28)[..., ::2].copy_(en)
        de2 = torch.randn(2, 12, 5, 7)[:, 1::2].copy_(de)
    out = ft.fade(en2, de2, *wts.values(), scale=2, backend="triton")
    assert_close_rel(out, ref.fade(en, de, *(wts[n] for n in WEIGHT_NAMES), 2), 1e-5)


def allocation_sizes(fn) -> list[int]:
    """Bytes of every allocation made through PyTorch's CPU allocator while ``fn`` runs, inside
    custom operators too (the profiler's allocation records, ``fade_triton.profiling.memory_timeline``)."""
    from fade_triton.profiling import memory_timeline

    return [e["bytes"] for e in memory_timeline(fn, "cpu") if e["bytes"] > 0]


@pytest.mark.skipif(ON_CUDA, reason="counts CPU allocator records; on CUDA the same code allocates the same tensors")
@pytest.mark.parametrize("lite", [False, True], ids=["fade", "lite"])
def test_no_high_resolution_tensor_with_e_or_c_channels(lite):
    """Every allocation of the triton forward, inside its operator included: nothing of E or C
    channels at high resolution but the output (FADE-Lite's K2-channel logits are E channels);
    the naive path, measured the same way, is caught by the same bound."""
    b, c, h, w, s, emb = 2, 12, 16, 20, 2, 16  # large enough that no weight-sized buffer passes the bound
    en, de, wts = fade_problem(b, c, h, w, s, 3, emb, lite, torch.float32)
    wide = b * min(c, 9 if lite else emb) * h * s * w * s * 4  # bytes of one such tensor

    def large(backend):
        with torch.no_grad():
            return [n for n in allocation_sizes(lambda: ft.fade(en, de, *wts.values(), scale=s, backend=backend))
                    if n >= wide]

    expected = [b * 9 * h * s * w * s * 4] if lite else []  # FADE-Lite's logits: E = K2 channels
    assert sorted(large("triton")) == sorted(expected + [b * c * h * s * w * s * 4])
    assert len(large("naive")) > len(expected) + 2


@pytest.mark.skipif(not ON_CUDA, reason="TF32 exists only on CUDA GPUs (FADE_TEST_DEVICE=cuda)")
@pytest.mark.parametrize("precision,tol", [("tf32", 1e-3), ("ieee", 1e-5)])
def test_float32_precision_follows_the_convolution_setting(precision, tol, monkeypatch):
    """Weights of std 0.1 keep the logits O(10), as in a trained model: TF32's 10-bit inputs then
    give a relative error near 3e-4 (SPEC.md; 2-5e-4 emulated on CPU with the inputs of each dot
    rounded or truncated to TF32). With std 0.5 the logits reach +-50 and the same rounding moves
    the softmax by more than 1e-3 (emulated 0.9-1.8e-3)."""
    monkeypatch.setattr(torch.backends.cudnn.conv, "fp32_precision", precision)
    en, de, wts = fade_problem(2, 64, 16, 12, 2, 5, 64, dtype=torch.float32, weight_std=0.1)
    out = ft.fade(en, de, *wts.values(), scale=2, backend="triton")
    err = rel_err(out, ref.fade(en, de, *(wts[n] for n in WEIGHT_NAMES), 2))
    assert err < tol, f"relative error {err:.3e} >= {tol:.1e}"
    if precision == "tf32" and torch.cuda.get_device_capability(out.device) >= (8, 0):
        assert err > 1e-5, f"relative error {err:.3e}: IEEE-like, so the dots did not run in TF32"


@pytest.fixture
def restore_precision_flags():
    """Snapshot and restore every float32 precision flag (the tests below set them)."""
    b = torch.backends
    saved = (b.fp32_precision, b.cudnn.fp32_precision, b.cudnn.conv.fp32_precision, b.cuda.matmul.fp32_precision)
    yield
    b.fp32_precision, b.cudnn.fp32_precision, b.cudnn.conv.fp32_precision, b.cuda.matmul.fp32_precision = saved


GPU = Target(90, interpreter=False)


@pytest.mark.parametrize("api", ["legacy", "new"])
def test_tf32_follows_the_convolution_setting_with_either_api(api, restore_precision_flags):
    """torch.backends.cudnn.allow_tf32 (legacy) or cudnn.conv.fp32_precision (newer); once the
    newer API has been used, reading allow_tf32 raises in torch, so the package never reads it then."""
    for want in ("tf32", "ieee", "tf32"):
        if api == "legacy":
            torch.backends.cudnn.allow_tf32 = want == "tf32"
        else:
            torch.backends.cudnn.conv.fp32_precision = want
        assert float32_conv_precision() == want
        assert dot_precision(torch.float32, GPU) == want
        assert dot_precision(torch.float32, Target(90, interpreter=True)) == "ieee"  # no TF32 on a CPU
    assert dot_precision(torch.float16, GPU) == "ieee"


def test_mixed_precision_apis_resolve_through_the_parents(restore_precision_flags):
    """'none' defers to cudnn.fp32_precision, then to backends.fp32_precision; all 'none' is IEEE."""
    b = torch.backends
    b.cudnn.conv.fp32_precision = "none"
    b.cudnn.fp32_precision = "none"
    b.fp32_precision = "tf32"
    assert float32_conv_precision() == "tf32"
    b.fp32_precision = "none"
    assert float32_conv_precision() == "ieee"
    b.cuda.matmul.fp32_precision = "tf32"  # a matmul setting does not govern convolutions
    assert float32_conv_precision() == "ieee"
