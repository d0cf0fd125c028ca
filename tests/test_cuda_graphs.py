"""CUDA graphs and streams: the folded-weight cache (``ops/fade/fold.py``) checks weight versions
on the host, which a graph replay never runs. While a capture is in progress the weights are
therefore folded on every call (the folding joins the recorded work); an entry used on another
stream orders that stream after its preparation and marks its tensors in use there.

On CPU: capture reported as in progress (``fold.capture_in_progress`` patched), and fake streams.
On CUDA (``FADE_TEST_DEVICE=cuda``): real captures and replays across optimizer steps, and
``torch.compile(mode="reduce-overhead")``."""
import pytest
import torch

import fade_triton as ft
from fade_triton.ops.fade import fold
from util import ON_CUDA, torch_backend_output


def small_fade():
    model = ft.FADE(8, up_kernel_size=3, embedding_dim=8, backend="triton")
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return model, torch.randn(1, 8, 6, 4), torch.randn(1, 8, 3, 2)


def test_capture_in_progress_folds_weights_on_every_call_outside_the_cache(monkeypatch):
    model, en, de = small_fade()
    with torch.no_grad():
        model(en, de)  # the usual warm-up fills the cache
        cached = model._folded.packed
        folds = []
        real_pack = fold.pack_weights
        monkeypatch.setattr(fold, "pack_weights", lambda *a: folds.append(1) or real_pack(*a))
        monkeypatch.setattr(fold, "capture_in_progress", lambda: True)
        for _ in range(3):
            # a change the host-side version check cannot see (as in a graph replay after a step)
            model.ker_generator.content_encoder.weight.data.add_(0.25)
            torch.testing.assert_close(model(en, de), torch_backend_output(model, en, de), rtol=1e-5, atol=1e-5)
    assert len(folds) == 3  # one fold per call, each part of the captured work
    assert model._folded.packed is cached  # captured (graph-pool) tensors never enter the cache


def test_without_capture_the_cache_is_reused():
    """The counterpart: outside a capture an unchanged weight version reuses the entry."""
    model, en, de = small_fade()
    with torch.no_grad():
        model(en, de)
        first = model._folded.packed
        model(en, de)
    assert model._folded.packed is first


class FakeStream:
    def __init__(self, name):
        self.name, self.waited_on = name, []

    def wait_stream(self, other):
        self.waited_on.append(other)


def test_entry_used_on_another_stream_waits_for_its_preparation_and_is_recorded_there(monkeypatch):
    model, en, de = small_fade()
    made_on, other = FakeStream("made"), FakeStream("other")
    current = [made_on]
    monkeypatch.setattr(fold, "current_stream", lambda device: current[0])
    recorded = []
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda t, s: recorded.append((t.data_ptr(), s)), raising=False)
    with torch.no_grad():
        model(en, de)
        assert recorded == [] and made_on.waited_on == []  # used where it was made: nothing to order
        current[0] = other
        model(en, de)
        model(en, de)
    packed = model._folded.packed
    assert other.waited_on == [made_on]  # once, on the first use there
    assert sorted(recorded) == sorted((t.data_ptr(), other) for t in packed)


def test_capture_check_is_safe_without_cuda():
    assert fold.capture_in_progress() is (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


cuda_only = pytest.mark.skipif(not ON_CUDA, reason="CUDA graphs need a GPU (FADE_TEST_DEVICE=cuda)")


def capture(fn):
    """``fn`` warmed up on a side stream (as torch.cuda.graphs asks), then captured; the graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


@cuda_only
def test_captured_forward_follows_optimizer_steps():
    model, en, de = small_fade()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    with torch.no_grad():
        graph, out = capture(lambda: model(en, de))
    for _ in range(3):
        model(en, de).square().sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        graph.replay()
        torch.testing.assert_close(out, torch_backend_output(model, en, de), rtol=1e-4, atol=1e-4)


@cuda_only
def test_captured_forward_and_backward_follow_optimizer_steps():
    model, en, de = small_fade()
    en.requires_grad_()
    grad = torch.randn(1, 8, 6, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)

    def step():
        optimizer.zero_grad(set_to_none=False)
        en.grad = None if en.grad is None else en.grad.zero_()
        out = model(en, de)
        out.backward(grad)
        return out

    graph, out = capture(step)
    for _ in range(3):
        optimizer.step()  # outside the graph: the weights change between replays
        graph.replay()
        params = [p.detach().clone().requires_grad_() for p in model.parameters()]
        en_ref = en.detach().clone().requires_grad_()
        want = ft.fade(en_ref, de, *params, scale=2, backend="torch")
        want.backward(grad)
        torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(en.grad, en_ref.grad, rtol=1e-4, atol=1e-4)
        for p, r in zip(model.parameters(), params):
            torch.testing.assert_close(p.grad, r.grad, rtol=1e-3, atol=1e-3)


@cuda_only
def test_reduce_overhead_compile_follows_weight_updates():
    model, en, de = small_fade()
    compiled = torch.compile(model, mode="reduce-overhead")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(4):
        with torch.no_grad():
            got = compiled(en, de).clone()
        torch.testing.assert_close(got, torch_backend_output(model, en, de), rtol=1e-4, atol=1e-4)
        model(en, de).square().sum().backward()
        optimizer.step()
        optimizer.zero_grad()
