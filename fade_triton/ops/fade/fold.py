"""The semi-shift weights prepared for the Triton kernels: the 1x1 compressors folded into the
shared 3x3, padded and in the compute dtype; and the cache that prepares them once per weight
version. No triton import (the modules hold the cache)."""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..helpers import accumulator_dtype, next_pow2


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


class FoldedWeightCache:
    """The folded weights of one module, prepared once per weight version.

    The key holds each weight's storage, version counter (bumped by optimizer steps,
    ``load_state_dict`` and any in-place change), dtype and device, and the compute dtype; the
    cache pins the storages it was made from, so their memory cannot be reused under the same
    address. Under torch.compile / export the preparation is traced instead (a few small ops in
    the graph), and inference tensors (no version counter) are not cached.

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
        self._entry = None  # (key, pinned weights, PackedWeights, stream prepared on, streams used on)

    def get(self, weights: tuple, dtype: torch.dtype) -> PackedWeights:
        if torch.compiler.is_compiling() or capture_in_progress():
            return pack_weights(weights, dtype)
        try:
            key = (dtype, tuple((w.data_ptr(), w._version, w.dtype, w.device) for w in weights))
        except RuntimeError:  # inference tensors have no version counter
            return pack_weights(weights, dtype)
        stream = current_stream(weights[0].device)
        if self._entry is None or self._entry[0] != key:
            self._entry = (key, [w.detach() for w in weights], pack_weights(weights, dtype), stream, {stream})
        _, _, packed, made_on, used_on = self._entry
        if stream not in used_on:  # first use on another stream: order it after the preparation
            stream.wait_stream(made_on)
            for t in packed:
                t.record_stream(stream)
            used_on.add(stream)
        return packed

    @property
    def packed(self) -> PackedWeights | None:
        """What the last ``get`` returned from the cache (None before the first)."""
        return None if self._entry is None else self._entry[2]
