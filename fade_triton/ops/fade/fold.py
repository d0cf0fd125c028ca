"""The semi-shift weights prepared for the Triton kernels: the 1x1 compressors folded into the
shared 3x3, padded and in the compute dtype; and the cache that prepares them once per weight
version and remembers the calls validated with them. No triton import (the modules hold the
cache)."""
from __future__ import annotations

from typing import NamedTuple

import torch

from ...backend import exporting, interpreter_enabled
from ...checks import autocast_enabled
from .. import helpers
from ..helpers import accumulator_dtype, direct_call_ok, next_pow2


class PackedWeights(NamedTuple):
    """The semi-shift weights, folded and laid out for ``tl.dot`` (KP = K2 + 1 rounded up to
    a power of two >= 16; padding is zero).

    w_hi: (9, C, KP) compute dtype, ``Wk`` folded with ``We``. w_lo: (9, C, KP), ``Wk`` folded
    with ``Wd``; channel K2 is the gate 1x1 (centre tap only). tap_bias: (16, KP), the sum of
    the per-tap biases ``Wk . be`` over the taps that land inside the image, for each of the 16
    edge states of a pixel (``edge_bias_table``). bias_hi: (KP,) ``bk``.
    bias_lo: (KP,) ``bk``, with the gate bias at channel K2. Biases fp32 (fp64 for fp64).
    """

    w_hi: torch.Tensor
    w_lo: torch.Tensor
    tap_bias: torch.Tensor
    bias_hi: torch.Tensor
    bias_lo: torch.Tensor


def padded_channels(k2: int) -> int:
    """KP: the K2 logit channels plus the gate, rounded up to a power of two (>= 16 for tl.dot)."""
    return next_pow2(k2 + 1, 16)


@torch.no_grad()
def pack_weights(weights: tuple, dtype: torch.dtype) -> PackedWeights:
    """Fold the 1x1 compressors of ``weights`` (gate w, gate b, We, be, Wd, Wk, bk) into the 3x3
    content encoder (FADE and FADE-Lite alike) and pack for the kernels, in ``dtype`` (the compute
    dtype). A handful of small torch ops: run once per weight version (``FoldedWeightCache``)."""
    gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias = weights
    acc = accumulator_dtype(dtype)
    k2, c = kernel_weight.shape[0], en_weight.shape[1]
    kp = padded_channels(k2)
    if 9 * c * kp >= 2**31:  # the kernels index the packed weights in 32 bits (bench.tools.aot, BOUNDED_ARGS)
        raise ValueError(f"en_weight: {c} input channels make the packed weights 9 x {c} x {kp} >= 2**31 elements")
    wk = kernel_weight.to(acc).flatten(2)  # (K2, E or 1, 9)
    we, wd, be = en_weight.to(acc).flatten(1), de_weight.to(acc).flatten(1), en_bias.to(acc)
    if kernel_weight.shape[1] == 1 and en_weight.shape[0] == k2 > 1:  # FADE-Lite: depthwise 3x3
        w_hi, w_lo = wk.permute(2, 0, 1) * we, wk.permute(2, 0, 1) * wd  # (9, K2, C)
        tap_bias = wk[:, 0].t() * be  # (9, K2)
    else:
        w_hi, w_lo = torch.einsum("ket,ec->tkc", wk, we), torch.einsum("ket,ec->tkc", wk, wd)
        tap_bias = torch.einsum("ket,e->tk", wk, be)
    w_hi_p = w_hi.new_zeros((9, c, kp))
    w_lo_p = w_hi.new_zeros((9, c, kp))
    w_hi_p[:, :, :k2] = w_hi.transpose(1, 2)
    w_lo_p[:, :, :k2] = w_lo.transpose(1, 2)
    w_lo_p[4, :, k2] = gate_weight.to(acc).flatten()
    tap_bias_p = w_hi.new_zeros((9, kp))
    tap_bias_p[:, :k2] = tap_bias
    tap_bias_p = edge_bias_table(tap_bias_p)
    bias_hi = w_hi.new_zeros(kp)
    bias_hi[:k2] = kernel_bias.to(acc)
    bias_lo = bias_hi.clone()
    bias_lo[k2] = gate_bias.to(acc)[0]
    return PackedWeights(w_hi_p.to(dtype), w_lo_p.to(dtype), tap_bias_p, bias_hi, bias_lo)


def edge_bias_table(tap_bias: torch.Tensor) -> torch.Tensor:
    """(16, N) from per-tap biases (9, N) of a 3x3 'same' convolution: row ``4 * rs + cs`` is the
    sum over the taps inside the image of a pixel whose row state is ``rs`` and column state
    ``cs`` (bit 0: the row / column before it is outside the image, i.e. y == 0; bit 1: the one
    after it is, y == H - 1; both for a one-pixel-high image). One gather from this table per
    output element replaces nine masked loads and sums (``conv3x3_kernel``'s HAS_TAP_BIAS)."""
    present = tap_bias.new_tensor([[0 if (s & 1 and d == 0) or (s & 2 and d == 2) else 1 for d in range(3)]
                                   for s in range(4)])  # (state, offset 0..2): the tap row / column is inside
    taps = tap_bias.view(3, 3, -1)
    return torch.einsum("ri,cj,ijn->rcn", present, present, taps).reshape(16, -1)


def capture_in_progress() -> bool:
    """Whether a CUDA graph is being captured on the current stream (False on CPU-only builds,
    where ``torch.cuda`` has no stream to ask)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def current_stream(device: torch.device):
    """The current CUDA stream of ``device``; None for other devices (no streams to order)."""
    return torch.cuda.current_stream(device) if device.type == "cuda" else None


# signatures an entry validates at most (inputs of many sizes: the rest take the full path)
MAX_VALIDATED_CALLS = 1024


class CacheEntry(NamedTuple):
    """One ``FoldedWeightCache`` entry: the weights' key, their storages (pinned), the packed
    weights, the CUDA stream they were prepared on and those they were used on, and the calls
    validated with these weights (``FoldedWeightCache.remember``: call signature -> runner)."""

    key: tuple
    pinned: list
    packed: PackedWeights
    made_on: object
    used_on: set
    calls: dict


class FoldedWeightCache:
    """The folded weights of one module, prepared once per weight version, and the calls already
    validated with them.

    The key holds each weight's storage, version counter (bumped by optimizer steps,
    ``load_state_dict`` and any in-place change, but not by a change through ``.data``, which
    counts its own: change weights in place under ``torch.no_grad()``), dtype, device, shape and
    strides, and the compute dtype; the cache pins the storages it was made from, so their memory
    cannot be reused under the same address. Under torch.compile / export the preparation is
    traced instead (a few small ops in the graph), and inference tensors (no version counter) are
    not cached. An entry made under ``torch.inference_mode`` holds ordinary tensors, so later
    calls may train.

    Replay: a module call whose ``call_signature`` (inputs' shapes, dtypes, devices; plain eager
    state) was validated with the entry's weights (``remember``: it passed the argument checks and
    the backend choice gave the Triton path) runs again without them (``replay``): the checks and
    the choice read nothing the signature and the weights' key do not hold. A new weight version
    starts a new entry, with no validated calls.

    CUDA graphs: the version check runs on the host, so a graph that replayed cached tensors
    would never see a later optimizer step. While a capture is in progress the weights are
    therefore folded on every call, outside the cache: the folding kernels become part of the
    recorded work, and each replay folds the weights as they are then (``docs/DEPLOY.md``).

    Streams: an entry remembers the CUDA stream it was prepared on. Used from another stream, that
    stream first waits for the preparation, and the packed tensors are marked as in use there
    (``record_stream``), so the caching allocator does not hand their memory out while that
    stream's kernels may still read it.
    """

    def __init__(self):
        self._entry: CacheEntry | None = None

    def get(self, weights: tuple, dtype: torch.dtype) -> PackedWeights:
        if torch.compiler.is_compiling() or capture_in_progress():
            return pack_weights(weights, dtype)
        key = weights_key(weights, dtype)
        if key is None:  # inference tensors have no version counter
            return pack_weights(weights, dtype)
        if self._entry is None or self._entry.key != key:
            stream = current_stream(weights[0].device)
            with torch.inference_mode(False):  # a first call under inference_mode: later calls may train
                packed = pack_weights(weights, dtype)
            self._entry = CacheEntry(key, [w.detach() for w in weights], packed, stream, {stream}, {})
        return self._use(self._entry, weights[0].device)

    def remember(self, en, de, weights: tuple, scale, runner) -> None:
        """Record that a call on ``en``, ``de`` with ``weights`` and ``scale`` passed the checks and
        took the Triton path (the caller has just run it): ``replay`` runs a call of the same
        ``call_signature`` with the same weights through ``runner(en, de, weights, packed, scale)``.
        Nothing is recorded outside plain eager state or where the entry holds other weights."""
        entry = self._entry
        if entry is None or len(entry.calls) >= MAX_VALIDATED_CALLS:
            return
        signature = call_signature(en, de, weights, scale)
        if signature is not None and weights_key(weights, en.dtype) == entry.key:
            entry.calls[signature] = runner

    def replay(self, en, de, weights: tuple, scale, backend: str):
        """The output of a call validated before (``remember``) with these weights, run by its
        runner without the checks and the backend choice; None for any other call (which then
        takes the full path). ``backend``: the user's; "auto" and "triton" both give the Triton
        path wherever it was validated."""
        if torch.compiler.is_compiling():  # first: torch.compile traces the full path
            return None
        entry = self._entry
        if entry is None or not entry.calls or backend not in ("auto", "triton"):
            return None
        runner = entry.calls.get(call_signature(en, de, weights, scale))
        if runner is None or weights_key(weights, en.dtype) != entry.key:
            return None
        return runner(en, de, weights, self._use(entry, weights[0].device), scale)

    def _use(self, entry: CacheEntry, device: torch.device) -> PackedWeights:
        """``entry``'s packed weights for the current stream: the first use on another stream
        orders it after the preparation."""
        stream = current_stream(device)
        if stream not in entry.used_on:
            stream.wait_stream(entry.made_on)
            for t in entry.packed:
                t.record_stream(stream)
            entry.used_on.add(stream)
        return entry.packed

    @property
    def packed(self) -> PackedWeights | None:
        """What the last ``get`` returned from the cache (None before the first)."""
        return None if self._entry is None else self._entry.packed


def weights_key(weights: tuple, dtype: torch.dtype) -> tuple | None:
    """The cache key of ``weights`` folded in ``dtype`` (storage, version, dtype, device, shape and
    strides of each: a weight swapped for a view of itself keeps the first four); None for
    inference tensors (no version counter) or an absent weight."""
    try:
        return dtype, tuple((w.data_ptr(), w._version, w.dtype, w.device, w.shape, w.stride()) for w in weights)
    except (RuntimeError, AttributeError):
        return None


def call_signature(en, de, weights: tuple, scale) -> tuple | None:
    """What a FADE call's argument checks and backend choice read besides the weights, where
    nothing else decides them: ``en`` and ``de``'s shapes, dtypes and devices, ``scale`` (and its
    type: a bool is refused), the simulated GPU and, on CPU, the interpreter switch. None unless
    the call runs in plain eager state: the operator's fast path applies to every tensor
    (``helpers.direct_call_ok``: no torch.compile / export, no dispatch or function mode, no
    functorch transform, plain tensors), no jit trace or ONNX export, autocast off, no CUDA graph
    capture."""
    if not direct_call_ok(en, de, *weights) or en is None or de is None or exporting():
        return None
    device = en.device
    if autocast_enabled(device.type) or capture_in_progress():  # capture: as FoldedWeightCache.get decides
        return None
    return (en.shape, en.dtype, device, de.shape, de.dtype, de.device, type(scale), scale, helpers.SIMULATED_TARGET,
            device.type == "cpu" and interpreter_enabled())
