"""Modules, checkpoints, backend choice and argument checking."""
import numpy as np
import pytest
import torch

import fade_triton as ft
import reference64 as ref
from fade_triton.backend import resolve_backend
from fade_triton.profiling import peak_memory
from util import WEIGHT_NAMES, fade_problem

OFFICIAL = {  # SPEC.md's table: name -> (FADE shape, FADE-Lite shape) for C channels, E=64, K=5
    "gate_generator.conv.weight": lambda c: ((1, c, 1, 1), (1, c, 1, 1)),
    "gate_generator.conv.bias": lambda c: ((1,), (1,)),
    "ker_generator.compressor_en.weight": lambda c: ((64, c, 1, 1), (25, c, 1, 1)),
    "ker_generator.compressor_en.bias": lambda c: ((64,), (25,)),
    "ker_generator.compressor_de.weight": lambda c: ((64, c, 1, 1), (25, c, 1, 1)),
    "ker_generator.content_encoder.weight": lambda c: ((25, 64, 3, 3), (25, 1, 3, 3)),
    "ker_generator.content_encoder.bias": lambda c: ((25,), (25,)),
}


@pytest.mark.parametrize("c", [16, 64, 256])
def test_state_dict_names_shapes_and_parameter_count(c):
    for lite, module, count in [(0, ft.FADE(c), 129 * c + 14490), (1, ft.FADELite(c), 51 * c + 276)]:
        sd = module.state_dict()
        assert {k: tuple(v.shape) for k, v in sd.items()} == {k: f(c)[lite] for k, f in OFFICIAL.items()}
        assert sum(p.numel() for p in module.parameters()) == count


def test_init_is_xavier_uniform_with_zero_biases():
    m = ft.FADE(256)
    w = m.ker_generator.compressor_en.weight  # fan_in 256, fan_out 64: bound sqrt(6 / 320)
    assert w.abs().max() <= (6 / 320) ** 0.5 and w.abs().max() > 0.9 * (6 / 320) ** 0.5
    assert all((p == 0).all() for n, p in m.named_parameters() if n.endswith("bias"))


def _official_state_dict(c, lite):
    _, _, wts = fade_problem(c=c, k=5, emb=64, lite=lite)
    names = dict(zip(WEIGHT_NAMES, OFFICIAL))
    return {names[n]: w.float() for n, w in wts.items()}


@pytest.mark.parametrize("lite", [False, True], ids=["fade", "lite"])
def test_official_checkpoint_loads_and_reproduces_the_function(lite):
    sd = _official_state_dict(8, lite)
    m = (ft.FADELite if lite else ft.FADE)(8, backend="torch")
    m.load_state_dict(sd)  # strict: every name must match
    en, de = torch.randn(2, 8, 12, 10), torch.randn(2, 8, 6, 5)
    expect = ref.fade(en, de, *(sd[n] for n in OFFICIAL), 2)
    assert (m(en, de).double() - expect).norm() / expect.norm() < 1e-5


def test_eccv_checkpoint_loads_automatically_and_by_function():
    sd = _official_state_dict(8, False)
    to_eccv = {v: k for k, v in ft.checkpoint.ECCV_TO_IJCV.items()}
    eccv = {"upsampler." + to_eccv.get(k, k): v for k, v in sd.items()}
    assert "upsampler.kernel_generator.conv2_kernels" in eccv
    holder = torch.nn.Module()
    holder.upsampler = ft.FADE(8)
    holder.load_state_dict(eccv)  # renamed by the module's load hook, under a prefix
    for k, v in sd.items():
        assert torch.equal(holder.upsampler.state_dict()[k], v)
    converted = ft.convert_eccv_state_dict(eccv, prefix="upsampler.")
    assert set(converted) == {"upsampler." + k for k in sd}


def test_module_backends_agree_and_repr():
    m = ft.FADE(6, up_kernel_size=3, embedding_dim=8).double()
    en, de = torch.randn(1, 6, 8, 6, dtype=torch.float64), torch.randn(1, 6, 4, 3, dtype=torch.float64)
    outs = {}
    for b in ["naive", "torch", "triton", "auto"]:
        m.backend = b
        outs[b] = m(en, de)
    for b in outs:
        torch.testing.assert_close(outs[b], outs["naive"], rtol=1e-12, atol=1e-12)
    device = m.gate_generator.conv.weight.device.type
    assert f"backend='auto' (triton on {device})" in repr(m)  # what it resolves to (the tests run the interpreter)


def test_auto_backend_choice(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend("auto", cpu) == "triton"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert resolve_backend("auto", cpu) == "torch"
    assert resolve_backend("naive", cpu) == "naive"
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        resolve_backend("triton", cpu)
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("cuda", cpu)


def test_mmcv_backend_says_what_is_missing(monkeypatch):
    import sys

    from fade_triton.ops import mmcv_path

    monkeypatch.setitem(sys.modules, "mmcv", None)  # as if mmcv were not installed
    monkeypatch.setitem(sys.modules, "mmcv_carafe_ext", None)  # nor its CARAFE op built alone
    with pytest.raises(RuntimeError, match="build_mmcv.sh"):
        mmcv_path.load_mmcv_carafe()
    x = torch.randn(1, 4, 3, 3)
    with pytest.raises(RuntimeError, match="CUDA"):
        ft.carafe(x, torch.rand(1, 9, 6, 6), 3, 1, 2, backend="mmcv")


def _good_args():
    en, de, wts = fade_problem(1, 4, 3, 5, 2, 3, dtype=torch.float32)
    return dict(en=en, de=de, **wts, scale=2)


BAD_FADE = [
    ("en dims", lambda a: a.update(en=a["en"][0]), ValueError, "en must have 4 dims"),
    ("de not a tensor", lambda a: a.update(de=a["de"].cpu().numpy()), TypeError, "de must be a torch.Tensor"),
    ("en too small", lambda a: a.update(en=a["en"][..., :-2]), ValueError, "smaller by less than 2"),
    ("en too large", lambda a: a.update(en=torch.cat([a["en"]] * 2, 3)), ValueError, "must be in \\(8, 10\\]"),
    ("batch mismatch", lambda a: a.update(en=torch.cat([a["en"]] * 2)), ValueError, "batch sizes differ"),
    ("channel mismatch", lambda a: a.update(de=a["de"][:, :3]), ValueError, "same channels"),
    ("weights vs channels", lambda a: a.update(en=a["en"][:, :3], de=a["de"][:, :3]), ValueError, "gate_weight must have shape"),
    ("dtype mismatch", lambda a: a.update(de=a["de"].double()), TypeError, "must share a dtype"),
    ("weight dtype", lambda a: a.update(kernel_bias=a["kernel_bias"].double()), TypeError, "kernel_bias must have"),
    ("int dtype", lambda a: a.update(en=a["en"].int(), de=a["de"].int()), TypeError, "float16, bfloat16"),
    ("even kernel", lambda a: a.update(kernel_weight=torch.randn(16, 8, 3, 3), kernel_bias=torch.randn(16)), ValueError, "odd K"),
    ("scale 0", lambda a: a.update(scale=0), ValueError, "scale must be an int >= 1"),
    ("scale 1.5", lambda a: a.update(scale=1.5), TypeError, "scale must be an int"),
    ("scale 2.0", lambda a: a.update(scale=2.0), TypeError, "scale must be an int .*got float 2.0"),
    ("scale True", lambda a: a.update(scale=True), TypeError, "scale must be an int .*got bool"),
]


@pytest.mark.parametrize("mutate,exc,match", [b[1:] for b in BAD_FADE], ids=[b[0] for b in BAD_FADE])
def test_fade_bad_input(mutate, exc, match):
    args = _good_args()
    mutate(args)
    scale = args.pop("scale")
    for backend in ["torch", "triton"]:
        with pytest.raises(exc, match=match):
            ft.fade(*args.values(), scale=scale, backend=backend)


# Each override is built inside the test (a lambda), so its tensors land on the test's device
# (FADE_TEST_DEVICE=cuda makes CUDA the default there; tensors made at collection time would be
# CPU tensors beside CUDA features, and a device error would come first).
BAD_CARAFE = [
    ("mask channels", lambda: dict(masks=torch.rand(1, 8, 6, 6)), ValueError, "group_size \\* kernel_size\\*\\*2"),
    ("mask size", lambda: dict(masks=torch.rand(1, 9, 6, 5)), ValueError, "exactly scale=2"),
    ("even kernel", lambda: dict(kernel_size=4), ValueError, "positive odd"),
    ("groups", lambda: dict(group_size=3, masks=torch.rand(1, 27, 6, 6)), ValueError, "divisible by group_size"),
    ("dtype", lambda: dict(masks=torch.rand(1, 9, 6, 6, dtype=torch.float64)), TypeError, "must share a dtype"),
    ("dims", lambda: dict(features=torch.rand(4, 3, 3)), ValueError, "features must have 4 dims"),
    ("kernel float", lambda: dict(kernel_size=3.0), TypeError, "kernel_size must be an int .*got float 3.0"),
    ("groups bool", lambda: dict(group_size=True), TypeError, "group_size must be an int .*got bool"),
    ("scale float", lambda: dict(scale_factor=2.0), TypeError, "scale_factor must be an int .*got float 2.0"),
    ("scale tensor", lambda: dict(scale_factor=torch.tensor(2.0)), TypeError, "scale_factor must be an int"),
]


@pytest.mark.parametrize("override,exc,match", [b[1:] for b in BAD_CARAFE], ids=[b[0] for b in BAD_CARAFE])
def test_carafe_bad_input(override, exc, match):
    args = dict(features=torch.rand(1, 4, 3, 3), masks=torch.rand(1, 9, 6, 6), kernel_size=3, group_size=1,
                scale_factor=2)
    args.update(override())
    with pytest.raises(exc, match=match):
        ft.carafe(**args, backend="torch")


def test_integer_arguments_accept_numpy_integers():
    """As mmcv takes them: anything operator.index accepts (numpy integers), as Python ints."""
    x, m = torch.rand(1, 4, 3, 3), torch.rand(1, 2 * 9, 6, 6)
    expect = ft.carafe(x, m, 3, 2, 2, backend="torch")
    got = ft.carafe(x, m, np.int64(3), np.int32(2), np.int64(2), backend="torch")
    assert torch.equal(got, expect)
    args = _good_args()
    scale = args.pop("scale")
    assert torch.equal(ft.fade(*args.values(), scale=np.int64(scale), backend="torch"),
                       ft.fade(*args.values(), scale=scale, backend="torch"))
    module = ft.FADE(np.int64(8), scale=np.int64(2), up_kernel_size=np.int32(3), embedding_dim=np.int64(4))
    assert (type(module.scale), type(module.up_kernel_size), module.scale, module.up_kernel_size) == (int, int, 2, 3)
    assert module(torch.randn(1, 8, 6, 4), torch.randn(1, 8, 3, 2)).shape == (1, 8, 6, 4)


BAD_CONSTRUCTOR = [  # (arguments, exception, message)
    (dict(up_kernel_size=5.0), TypeError, "up_kernel_size must be an int .*got float 5.0"),
    (dict(scale=2.5), TypeError, "scale must be an int .*got float 2.5"),
    (dict(scale=2.0), TypeError, "scale must be an int .*got float 2.0"),
    (dict(scale=False), TypeError, "scale must be an int .*got bool"),
    (dict(embedding_dim=64.0), TypeError, "embedding_dim must be an int"),
    (dict(in_channels_en=8.0), TypeError, "in_channels_en must be an int"),
    (dict(in_channels_de="8"), TypeError, "in_channels_de must be an int .*got str"),
    (dict(scale=0), ValueError, "scale must be an int >= 1"),
    (dict(embedding_dim=0), ValueError, "embedding_dim must be a positive int"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD_CONSTRUCTOR, ids=[str(b[0]) for b in BAD_CONSTRUCTOR])
def test_module_constructor_types(kwargs, exc, match):
    kwargs = {"in_channels_en": 8, **kwargs}
    with pytest.raises(exc, match=match):
        ft.FADE(**kwargs)
    if "embedding_dim" not in kwargs:
        with pytest.raises(exc, match=match):
            ft.FADELite(**kwargs)


def test_module_constructor_checks():
    with pytest.raises(ValueError, match="backend must be one of"):
        ft.FADE(64, backend="cuda")
    with pytest.raises(ValueError, match="in_channels_de"):
        ft.FADE(64, 32)
    with pytest.raises(ValueError, match="up_kernel_size"):
        ft.FADELite(64, up_kernel_size=4)
    with pytest.raises(ValueError, match="channels"):
        ft.FADE(8)(torch.randn(1, 4, 6, 6), torch.randn(1, 4, 3, 3))


def test_torch_path_peak_memory_is_a_tenth_of_naive():
    """Issue target: B=2, C=64, 64x64 -> 128x128, float32 (measured by fade_triton.profiling)."""
    m = ft.FADE(64)
    en, de = torch.randn(2, 64, 128, 128), torch.randn(2, 64, 64, 64)
    peaks = {}
    with torch.no_grad():
        for backend in ["naive", "torch"]:
            m.backend = backend
            peaks[backend] = peak_memory(lambda: m(en, de), en.device)
    out_bytes = en.numel() * 4
    assert peaks["torch"] >= out_bytes  # the measure sees at least the output
    assert peaks["torch"] * 10 <= peaks["naive"], peaks
