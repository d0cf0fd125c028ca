"""Deployment, on CPU: torch.export with dynamic shapes, ONNX (both exporters, run by ONNX
Runtime), TorchScript, FLOP counts, DDP and FSDP2 on two gloo processes and meta tensors. Every
numeric check is against the independent float64 reference (tests/reference64.py), on sizes
other than the ones exported."""
import contextlib
import datetime
import warnings

import pytest
import torch
from torch.export import Dim

import fade_triton as ft
import reference64 as ref
from util import assert_close_rel

C, K, E, S, G = 8, 3, 8, 2, 2  # channels, kernel, embedding, scale, CARAFE groups
FLOAT32_TOL = 1e-5  # SPEC.md, Precision: float32 relative error
# The exporters, ONNX Runtime (CPUExecutionProvider, numpy inputs) and the gloo processes run on
# CPU in the CUDA suite too (tests/conftest.py, cpu_default_device): what they record does not
# depend on the device, and torch 2.11's TorchScript-based ONNX exporter crashed the process
# (SIGSEGV in _create_node) with CUDA the default device.
ON_CPU = pytest.mark.usefixtures("cpu_default_device")


class CarafeHead(torch.nn.Module):
    """A model that calls ``fade_triton.carafe`` (K, G, S above) on given features and masks."""

    def __init__(self, backend="auto"):
        super().__init__()
        self.backend = backend

    def forward(self, features, masks):
        return ft.carafe(features, masks, K, G, S, backend=self.backend)


def build(kind, backend):
    """(model, reference(inputs) -> float64 output) for "fade", "lite" or "carafe". Random,
    non-zero weights, so no part of the function is trivial."""
    if kind == "carafe":
        return CarafeHead(backend), lambda x, m: ref.reassemble(x.double(), m.double(), K, S, G)
    model = ft.FADELite(C, up_kernel_size=K, backend=backend) if kind == "lite" else \
        ft.FADE(C, up_kernel_size=K, embedding_dim=E, backend=backend)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval(), lambda en, de: ref.fade(en, de, *model.weights(), S)


def inputs(kind, b, h, w, crop=(0, 0)):
    """(en, de) for FADE (en smaller than S x de by ``crop``), (features, masks) for carafe."""
    if kind == "carafe":
        return torch.randn(b, C, h, w), torch.rand(b, G * K * K, S * h, S * w)
    return torch.randn(b, C, S * h - crop[0], S * w - crop[1]), torch.randn(b, C, h, w)


EXAMPLE = (2, 6, 5)  # the sizes exported: (B, H, W) of the low-resolution input
OTHER = (3, 9, 7)  # the sizes run afterwards


def dynamic_shapes(kind):
    """Batch and spatial sizes dynamic; the high-resolution input's are S x the other's."""
    b, h, w = Dim("batch"), Dim("h", min=2), Dim("w", min=2)
    low, high = {0: b, 2: h, 3: w}, {0: b, 2: S * h, 3: S * w}
    return (low, high) if kind == "carafe" else (high, low)


# ----------------------------------------------------------------------------- torch.export
@ON_CPU
@pytest.mark.parametrize("kind,backend", [pytest.param("fade", "torch", marks=pytest.mark.slow), ("lite", "naive"),
                                          ("carafe", "auto")])
def test_torch_export_with_dynamic_shapes(kind, backend):
    model, reference = build(kind, backend)
    program = torch.export.export(model, inputs(kind, *EXAMPLE), dynamic_shapes=dynamic_shapes(kind))
    other = inputs(kind, *OTHER)
    out = program.module()(*other)
    assert_close_rel(out, reference(*other), FLOAT32_TOL)
    torch.testing.assert_close(out, model(*other), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@ON_CPU
def test_torch_export_encoder_smaller_than_scale_times_decoder():
    """A backbone's en of 2h - 1 rows (65 -> 129): a derived dimension (h >= 3: torch.export
    specialises sizes 0 and 1, and the odd rows' phase has h - 1)."""
    model, reference = build("fade", "torch")
    b, h, w = Dim("batch"), Dim("h", min=3), Dim("w", min=2)
    shapes = ({0: b, 2: S * h - 1, 3: S * w}, {0: b, 2: h, 3: w})
    program = torch.export.export(model, inputs("fade", *EXAMPLE, crop=(1, 0)), dynamic_shapes=shapes)
    other = inputs("fade", *OTHER, crop=(1, 0))
    assert_close_rel(program.module()(*other), reference(*other), FLOAT32_TOL)


# ----------------------------------------------------------------------------- ONNX
def onnx_runtime():
    """(onnx, onnxruntime), or skip: they are the optional extra ``fade-triton[export]``."""
    reason = "ONNX tests need the [export] extra: pip install -e '.[export]'"
    return pytest.importorskip("onnx", reason=reason), pytest.importorskip("onnxruntime", reason=reason)


def run_onnx_with_intermediates(path, names, values):
    """Run the ONNX file with every intermediate tensor as an extra output. Returns the model's
    first output and the largest intermediate's (element count, name)."""
    onnx, ort = onnx_runtime()
    model = onnx.load(path)
    final = model.graph.output[0].name
    inner = [o for node in model.graph.node for o in node.output if o and o != final]
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in inner)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out, *rest = session.run([final, *inner], {n: v.numpy() for n, v in zip(names, values)})
    return torch.from_numpy(out), max((v.size, n) for v, n in zip(rest, inner))


def check_onnx_file(path, kind, opset, names, other, reference):
    """Standard operators only, at ``opset``; batch and spatial inputs dynamic; a bounded
    graph with nothing of K*K*C channels at high resolution; ONNX Runtime's output on
    ``other`` (sizes not exported) against the float64 reference."""
    onnx, _ = onnx_runtime()
    model = onnx.load(path)
    onnx.checker.check_model(model)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", opset)]
    assert {node.domain for node in model.graph.node} == {""}
    assert not model.functions  # no local (custom) functions either
    for graph_input in model.graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        assert [bool(d.dim_param) for d in dims] == [True, False, True, True], graph_input
    computing = [n for n in model.graph.node if n.op_type != "Constant"]
    assert len(computing) <= 5 * K * K + 150, len(computing)
    out, (largest, name) = run_onnx_with_intermediates(path, names, other)
    b, _, h, w = other[0 if kind == "carafe" else 1].shape  # the low-resolution input
    # E, K*K or G*K*K channels at high resolution at most (the logits, masks, enc), C*K*K never
    assert largest <= max(C, E, G * K * K) * b * S * h * S * w < K * K * C * b * S * h * S * w, (largest, name)
    assert_close_rel(out, reference(*other), FLOAT32_TOL)


@pytest.mark.slow
@ON_CPU
@pytest.mark.parametrize("kind,backend", [("fade", "torch"), ("lite", "naive"), ("carafe", "triton")])
def test_onnx_dynamo_exporter(kind, backend, tmp_path):
    """torch.onnx.export(dynamo=True): every backend records the export formulation (on CPU
    "triton" runs in the interpreter, but the exporter never runs it)."""
    onnx_runtime()
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript: pip install -e '.[export]'")
    model, reference = build(kind, backend)
    names = ["features", "masks"] if kind == "carafe" else ["en", "de"]
    path = tmp_path / f"{kind}.onnx"
    with _quiet_exporter():
        torch.onnx.export(model, inputs(kind, *EXAMPLE), path, dynamo=True, opset_version=18, input_names=names,
                          output_names=["out"], dynamic_shapes=dynamic_shapes(kind), verbose=False)
    check_onnx_file(path, kind, 18, names, inputs(kind, *OTHER), reference)


@ON_CPU
@pytest.mark.parametrize("backend", ["torch", "naive", "triton"])
@pytest.mark.parametrize("kind", ["fade", "lite", "carafe"])
def test_onnx_legacy_exporter(kind, backend, tmp_path):
    """torch.onnx.export(dynamo=False), opset 17. The torch backend's in-place updates of views
    once gave a silently wrong graph here; every backend now records the export formulation.
    FADE is run on an encoder one row and one column short of S x the decoder's (65 -> 129)."""
    onnx_runtime()
    model, reference = build(kind, backend)
    names = ["features", "masks"] if kind == "carafe" else ["en", "de"]
    axes = {name: {0: "batch", 2: f"{name}_height", 3: f"{name}_width"} for name in (*names, "out")}
    path = tmp_path / f"{kind}.onnx"
    with _quiet_exporter():
        torch.onnx.export(model, inputs(kind, *EXAMPLE), path, dynamo=False, opset_version=17, input_names=names,
                          output_names=["out"], dynamic_axes=axes)
    other = inputs(kind, *OTHER) if kind == "carafe" else inputs(kind, *OTHER, crop=(1, 1))
    check_onnx_file(path, kind, 17, names, other, reference)


@contextlib.contextmanager
def _quiet_exporter():
    """The exporters' own notices (deprecation of the TorchScript exporter, constant folding,
    missing torchvision, training-mode reminders) are not the project's warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


# ----------------------------------------------------------------------------- TorchScript
@pytest.mark.parametrize("kind", ["fade", "lite", "carafe"])
def test_jit_trace_generalises_to_other_sizes(kind):
    """The trace records the export formulation with every size read from the inputs; the
    tracer finds nothing in it that could freeze a size (TracerWarning is an error here)."""
    model, reference = build(kind, "torch")
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "`torch.jit.trace", DeprecationWarning)
        traced = torch.jit.trace(model, inputs(kind, *EXAMPLE))
    other = inputs(kind, *OTHER) if kind == "carafe" else inputs(kind, *OTHER, crop=(0, 1))
    assert_close_rel(traced(*other), reference(*other), FLOAT32_TOL)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_jit_script_says_what_works_instead():
    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = ft.FADELite(C)

        def forward(self, en, de):
            return self.up(en, de)

    for model in (ft.FADE(C), Decoder()):
        with pytest.raises(RuntimeError, match="cannot be compiled by torch.jit.script.*torch.jit.trace"):
            torch.jit.script(model)


# ----------------------------------------------------------------------------- FLOPs
def fade_forward_flops(b, c, h, w, oh, ow, k, emb, lite):
    """README, Deploy: 2*B*OH*OW*(C*E + 9*Ek*K2 + K2*C) + 2*B*H*W*(C*E + 9*Ek*K2 + C),
    E = K2 and Ek = 1 for FADE-Lite, Ek = E for FADE."""
    k2 = k * k
    emb, emb_per_group = (k2, 1) if lite else (emb, emb)
    generator = c * emb + 9 * emb_per_group * k2
    return 2 * b * oh * ow * (generator + k2 * c) + 2 * b * h * w * (generator + c)


def counted_flops(fn):
    """FLOPs of ``fn()`` by FlopCounterMode, created after the operators are defined (README)."""
    from torch.utils.flop_counter import FlopCounterMode

    import fade_triton.ops.carafe  # noqa: F401  (the modules define it when built; carafe() at its first call)

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("backend", ["naive", "torch", "triton"])
@pytest.mark.parametrize("kind", ["fade", "lite"])
def test_flop_counter_reports_the_formula_on_every_backend(kind, backend):
    """en, de and every weight require grad (the training case inside a network): then a
    backward counts twice the forward on every backend, but for one miscount of torch's own
    FlopCounterMode on the naive path (README, Deploy): a grouped convolution's weight gradient
    is counted as if dense, groups (K2 for FADE-Lite's depthwise 3x3) times too many."""
    model, _ = build(kind, backend)
    b, h, w = 2, 4, 3
    en, de = (t.requires_grad_() for t in inputs("fade", b, h, w, crop=(1, 0)))
    oh, ow = en.shape[2:]
    model(en, de)  # the triton backend folds its weights once per weight version (README, Deploy)
    forward = fade_forward_flops(b, C, h, w, oh, ow, K, E, kind == "lite")
    assert counted_flops(lambda: model(en, de)) == forward
    training = 3 * forward
    if kind == "lite" and backend == "naive":
        training += (K * K - 1) * 2 * b * 9 * K * K * (oh * ow + h * w)
    assert counted_flops(lambda: model(en, de).sum().backward()) == training


@pytest.mark.parametrize("backend", ["naive", "torch", "triton"])
@pytest.mark.parametrize("groups", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_flop_counter_reports_carafe(groups, backend):
    b, c, h, w, k, s = 2, 6, 3, 4, 5, 2
    x = torch.randn(b, c, h, w, requires_grad=True)
    masks = torch.rand(b, groups * k * k, s * h, s * w, requires_grad=True)
    forward = 2 * b * s * h * s * w * k * k * c  # any group size
    assert counted_flops(lambda: ft.carafe(x, masks, k, groups, s, backend=backend)) == forward
    assert counted_flops(lambda: ft.carafe(x, masks, k, groups, s, backend=backend).sum().backward()) == 3 * forward


# ----------------------------------------------------------------------------- DDP, FSDP2
STEPS, LR = 3, 0.1


def train(model, en, de, steps=STEPS):
    """SGD on the mean squared output; returns the gradients of the first step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    first = None
    for _ in range(steps):
        optimizer.zero_grad()
        model(en, de).square().mean().backward()
        if first is None:
            first = [p.grad.clone() for p in model.parameters()]
        optimizer.step()
    return first


def distributed_worker(rank, world, init_method, out_dir):
    """One of ``world`` gloo processes: the same FADE trained on this rank's share of the batch,
    once under DistributedDataParallel and once under FSDP2 (``fully_shard``). Saves the first
    step's gradients and the final parameters, gathered to full tensors (FSDP2 shards them)."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))  # a lost peer fails the test, not CI
    try:
        en, de, state = torch.load(f"{out_dir}/problem.pt")
        share = slice(rank * len(en) // world, (rank + 1) * len(en) // world)
        results = {}
        for name, wrap in (("ddp", DistributedDataParallel), ("fsdp2", fully_shard)):
            model = ft.FADE(C, up_kernel_size=K, embedding_dim=E, backend="torch")
            model.load_state_dict(state)
            wrapped = wrap(model)
            grads = train(wrapped, en[share], de[share])
            full = [getattr(t, "full_tensor", lambda t=t: t)() for t in (*grads, *wrapped.parameters())]
            results[name] = [t.detach().clone() for t in full]
        torch.save(results, f"{out_dir}/rank{rank}.pt")
        # both ranks done before either tears gloo down: a rank destroying its group while its
        # peer still talks aborted the peer once ("terminate called without an active exception")
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@ON_CPU  # gloo on CPU tensors; the spawned processes have no default device of their own
def test_ddp_and_fsdp2_on_two_gloo_processes_match_one_process(tmp_path):
    """Each of 2 processes takes half the batch: the first step's gradients and the parameters
    after a few SGD steps equal those of one process on the whole batch, on both ranks."""
    model = ft.FADE(C, up_kernel_size=K, embedding_dim=E, backend="torch")
    en, de = inputs("fade", 4, 4, 3)
    torch.save((en, de, model.state_dict()), tmp_path / "problem.pt")
    torch.multiprocessing.spawn(distributed_worker, args=(2, f"file://{tmp_path}/rendezvous", str(tmp_path)),
                                nprocs=2)
    grads = train(model, en, de)
    expected = [*grads, *(p.detach() for p in model.parameters())]
    for rank in range(2):
        results = torch.load(tmp_path / f"rank{rank}.pt")
        for wrapper in ("ddp", "fsdp2"):
            assert len(results[wrapper]) == len(expected)
            for got, want in zip(results[wrapper], expected):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=f"{wrapper}, rank {rank}")
    assert all(torch.equal(a, b) for a, b in zip(torch.load(tmp_path / "rank0.pt")["ddp"],
                                                 torch.load(tmp_path / "rank1.pt")["ddp"]))


# ----------------------------------------------------------------------------- meta tensors
def like_on_cpu(t):
    return (tuple(t.shape), t.dtype, t.stride())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("backend", ["auto", "triton", "torch", "naive"])
def test_meta_tensors_give_the_shape_dtype_and_layout_of_eager(backend, dtype):
    """Forward on meta (nothing computed) gives what the same call gives on CPU: shape, dtype
    and strides (channels_last in, channels_last out on every backend but naive's carafe)."""
    cl = torch.channels_last
    en, de = (t.to(dtype, memory_format=cl) for t in inputs("fade", 2, 3, 4, crop=(1, 0)))
    x, masks = (t.to(dtype) for t in inputs("carafe", 2, 3, 4))
    x = x.to(memory_format=cl)
    for cls in (ft.FADE, ft.FADELite):
        with torch.device("meta"):
            model = cls(C, up_kernel_size=K, backend=backend).to(dtype)
        out = model(en.to("meta"), de.to("meta"))
        assert out.device.type == "meta"
        assert like_on_cpu(out) == like_on_cpu(cls(C, up_kernel_size=K, backend=backend).to(dtype)(en, de))
        assert out.is_contiguous(memory_format=cl)
    out = ft.carafe(x.to("meta"), masks.to("meta"), K, G, S, backend=backend)
    assert out.device.type == "meta"
    assert like_on_cpu(out) == like_on_cpu(ft.carafe(x, masks, K, G, S, backend=backend))
