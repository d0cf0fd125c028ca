"""mmcv-compatible CARAFE and CARAFEPack (fade_triton/carafe_modules.py): mmcv's state_dict keys,
initialisation and defaults; forward and every gradient (the mask path included) against a
float64 restatement of mmcv's CARAFEPack forward (tests/reference64.py); both layouts, bf16,
ONNX (run by ONNX Runtime) and torch.compile, on CPU."""
import math
import warnings

import pytest
import torch

import fade_triton as ft
import reference64 as ref
from test_mmcv_conformance import assert_matches_vectors
from util import ON_CUDA, assert_close_rel, grads_of

MMCV_KEYS = ["channel_compressor.weight", "channel_compressor.bias", "content_encoder.weight", "content_encoder.bias"]
# channels, scale, up_kernel, up_group, encoder_kernel, encoder_dilation, compressed_channels
SMALL = dict(channels=8, scale_factor=2, up_kernel=3, up_group=2, encoder_kernel=3, compressed_channels=4)
DILATED = dict(channels=6, scale_factor=3, up_kernel=5, up_group=1, encoder_kernel=5, encoder_dilation=2,
               compressed_channels=5)


def mmcv_state_dict(cfg, dtype=torch.float64):
    """A state dict under mmcv's key names with random, non-zero values (as a trained checkpoint)."""
    k_enc, g, k, s = cfg["encoder_kernel"], cfg["up_group"], cfg["up_kernel"], cfg["scale_factor"]
    cm, c = cfg["compressed_channels"], cfg["channels"]
    shapes = [(cm, c, 1, 1), (cm,), (g * k * k * s * s, cm, k_enc, k_enc), (g * k * k * s * s,)]
    return {name: torch.randn(shape, dtype=torch.float64).mul(0.5).to(dtype) for name, shape in zip(MMCV_KEYS, shapes)}


def reference(x, sd, cfg):
    return ref.carafe_pack(x, *(sd[n] for n in MMCV_KEYS), cfg["scale_factor"], cfg["up_kernel"], cfg["up_group"],
                           cfg.get("encoder_dilation", 1))


def loaded_pack(cfg, backend, dtype=torch.float32):
    sd = mmcv_state_dict(cfg)
    pack = ft.CARAFEPack(**cfg, backend=backend)
    pack.load_state_dict(sd)  # strict: exactly mmcv's keys
    return pack.to(dtype), sd


def test_state_dict_keys_defaults_and_initialisation_are_mmcvs():
    pack = ft.CARAFEPack(64, 2)
    assert list(pack.state_dict()) == MMCV_KEYS
    assert (pack.up_kernel, pack.up_group, pack.encoder_kernel, pack.encoder_dilation,
            pack.compressed_channels) == (5, 1, 3, 1, 64)
    assert pack.content_encoder.weight.shape == (100, 64, 3, 3) and pack.content_encoder.padding == (1, 1)
    bound = math.sqrt(6 / (64 + 64))  # xavier-uniform of the 1x1 compressor, 64 -> 64
    assert pack.channel_compressor.weight.abs().max() <= bound
    assert pack.channel_compressor.weight.std() > bound / 3
    assert 0.0008 < pack.content_encoder.weight.std() < 0.0012  # normal_init(std=0.001)
    assert not pack.channel_compressor.bias.any() and not pack.content_encoder.bias.any()
    dilated = ft.CARAFEPack(16, 2, encoder_kernel=5, encoder_dilation=2)
    assert dilated.content_encoder.padding == (4, 4) and dilated.content_encoder.dilation == (2, 2)


@pytest.mark.parametrize("cfg", [SMALL, pytest.param(DILATED, marks=pytest.mark.slow)], ids=["grouped", "dilated-scale3"])
@pytest.mark.parametrize("backend", ["torch", "naive", "triton"])
def test_mmcv_checkpoint_forward_and_backward_match_float64_mmcv(backend, cfg, poisoned):
    """Output and the gradients of x and of the four weights (the mask path: encoder, shuffle,
    softmax) against float64 autograd of the restatement of mmcv's forward."""
    pack, sd = loaded_pack(cfg, backend)
    x = torch.randn(2, cfg["channels"], 4, 5)
    out = pack(x)
    assert out.shape == (2, cfg["channels"], 4 * cfg["scale_factor"], 5 * cfg["scale_factor"])
    assert_close_rel(out, reference(x, sd, cfg), 1e-5)
    grad = torch.randn_like(out)
    params = [pack.get_parameter(n) for n in MMCV_KEYS]
    got = torch.autograd.grad(pack(x.requires_grad_()), [x, *params], grad)
    want = grads_of(lambda x, *w: reference(x, dict(zip(MMCV_KEYS, w)), cfg), [x.double(), *sd.values()],
                    grad.double())
    for name, g, r in zip(["x", *MMCV_KEYS], got, want):
        err = ft.testing.rel_err(g, r)
        assert err < 1e-4, f"gradient of {name}: relative error {err:.2e}"


def test_channels_last_and_bfloat16(poisoned):
    """channels_last in, channels_last out; bfloat16 within half-precision tolerance (torch
    backend on CPU: the interpreter has no bfloat16)."""
    backend = "auto" if ON_CUDA else "torch"
    pack, sd = loaded_pack(SMALL, backend)
    x = torch.randn(2, 8, 4, 5)
    want = reference(x, sd, SMALL)
    cl = pack.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert cl.is_contiguous(memory_format=torch.channels_last)
    assert_close_rel(cl, want, 1e-5)
    half = pack.to(torch.bfloat16)(x.bfloat16())
    assert half.dtype == torch.bfloat16
    assert_close_rel(half, want, 2e-2)


def test_carafe_module_matches_mmcv_vectors(poisoned):
    up = ft.CARAFE(5, 4, 2, backend="torch")
    assert_matches_vectors(up)


@pytest.mark.parametrize("make,exc,match", [
    (lambda: ft.CARAFEPack(6, 2, up_group=4), ValueError, "up_group"),
    (lambda: ft.CARAFEPack(8, 2, up_kernel=4), ValueError, "up_kernel"),
    (lambda: ft.CARAFEPack(8, 2.0), TypeError, "scale_factor"),
    (lambda: ft.CARAFEPack(8, 2, compressed_channels=0), ValueError, "compressed_channels"),
    (lambda: ft.CARAFEPack(8, 2, backend="cuda"), ValueError, "backend"),
    (lambda: ft.CARAFE(5, 0, 2), ValueError, "group_size"),
    (lambda: ft.CARAFEPack(8, 2)(torch.randn(1, 6, 4, 4)), ValueError, r"\(B, 8, H, W\)"),
])
def test_bad_arguments_name_the_argument(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.usefixtures("cpu_default_device")  # as tests/test_deploy.py's ONNX tests: on CPU on every test device
def test_onnx_export_runs_in_onnx_runtime(tmp_path):
    """TorchScript-based exporter, opset 17, dynamic batch and size; standard operators only;
    ONNX Runtime's output at other sizes against the float64 restatement (numpy: CPU tensors)."""
    onnx = pytest.importorskip("onnx", reason="ONNX tests need the [export] extra: pip install -e '.[export]'")
    ort = pytest.importorskip("onnxruntime", reason="ONNX tests need the [export] extra")
    pack, sd = loaded_pack(SMALL, "auto")
    path = tmp_path / "carafe_pack.onnx"
    axes = {"x": {0: "batch", 2: "h", 3: "w"}, "out": {0: "batch", 2: "oh", 3: "ow"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(pack.eval(), (torch.randn(1, 8, 4, 5),), path, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["out"], dynamic_axes=axes)
    model = onnx.load(path)
    onnx.checker.check_model(model)
    assert {node.domain for node in model.graph.node} == {""}
    x = torch.randn(3, 8, 6, 7)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = torch.from_numpy(session.run(["out"], {"x": x.numpy()})[0])
    assert_close_rel(out, reference(x, sd, SMALL), 1e-5)


def test_torch_compile_fullgraph_forward_and_backward(tmp_path, monkeypatch):
    """torch.compile (fullgraph, aot_eager: the inductor path of the same operator is tested on
    FADE in test_triton_backward) of CARAFEPack with the torch backend on CPU (interpreted Triton
    kernels cannot be compiled): no graph break; output and input gradient as eager."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    pack, _ = loaded_pack(SMALL, "auto" if ON_CUDA else "torch")
    x = torch.randn(2, 8, 4, 5)
    grad = torch.randn(2, 8, 8, 10)
    compiled = torch.compile(pack, backend="aot_eager", fullgraph=True)
    eager_out, compiled_out = pack(x), compiled(x)
    torch.testing.assert_close(compiled_out, eager_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads_of(compiled, [x], grad)[0], grads_of(pack, [x], grad)[0], rtol=1e-5, atol=1e-5)
