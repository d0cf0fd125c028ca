"""FLOP counts of FADE and CARAFE, for ``torch.utils.flop_counter.FlopCounterMode``.

``FlopCounterMode`` counts only the operators it has a formula for; the ``fade_triton::``
operators are opaque to it, so without these formulas the ``triton`` and ``torch`` backends
would count 0. ``ops/fade.py`` and ``ops/carafe.py`` register them where they define the
operators. A ``FlopCounterMode`` copies the formulas it knows when it is created: the
modules define the operators when they are built; before the first functional call, import
``fade_triton.ops.fade`` / ``fade_triton.ops.carafe`` (``functional.define_operators``).

The count is the function's (SPEC.md), multiply-add = 2 FLOPs, per forward call, with ``B``
the batch, ``C`` channels, ``E`` the embedding (K2 for FADE-Lite), ``Ek`` the content
encoder's input channels per group (E for FADE, 1 for FADE-Lite's depthwise 3x3),
``K2 = K*K``, (H, W) the decoder's and (OH, OW) the output's size::

    FADE   = 2*B*OH*OW * (C*E + 9*Ek*K2 + K2*C)     # encoder 1x1, 3x3, reassembly
           + 2*B*H*W   * (C*E + 9*Ek*K2 + C)        # decoder 1x1, 3x3, gate 1x1
    CARAFE = 2*B*OH*OW * K2*C                       # any group size

These are the products the ``naive`` backend runs as ``aten.convolution`` and the einsum's
``aten.bmm``, so every backend reports the same forward count. Elementwise work (softmax,
sigmoid, the gate blend, bias additions) is not counted, as ``FlopCounterMode`` counts no
elementwise operator anywhere. A backward call counts twice its forward: the input and the
weight gradient of every product. It is the function's cost, as papers report it, not the
work of a particular implementation: the Triton semi-shift, with the 1x1 compressors folded
into its 3x3, does ``9*K2*C`` multiply-adds per pixel instead of ``C*E + 9*Ek*K2``; the fold
itself (FADE, not FADE-Lite) counts as the ``aten.bmm`` of a few einsums, ``4*9*K2*E*C +
2*9*K2*E`` FLOPs, at every functional call and at a module's first call after its weights
change.
"""
from __future__ import annotations


def fade_flops(en_shape, de_shape, en_weight_shape, kernel_weight_shape) -> int:
    """FADE / FADE-Lite forward FLOPs from the shapes of ``en``, ``de``, ``en_weight``
    (E, C, 1, 1) and ``kernel_weight`` (K2, Ek, 3, 3)."""
    b, c, oh, ow = en_shape
    h, w = de_shape[2:]
    emb = en_weight_shape[0]
    k2, emb_per_group = kernel_weight_shape[:2]
    generator = c * emb + 9 * emb_per_group * k2
    return 2 * b * (oh * ow * (generator + k2 * c) + h * w * (generator + c))


def carafe_flops(features_shape, masks_shape, kernel_size: int) -> int:
    """CARAFE forward FLOPs: ``2*K2*C`` per output pixel."""
    b, c = features_shape[:2]
    oh, ow = masks_shape[2:]
    return 2 * b * oh * ow * kernel_size * kernel_size * c


# The operators' formulas: FlopCounterMode passes each tensor argument as its shape.
def fade_op_flops(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, *args,
                  **kwargs) -> int:
    return fade_flops(en, de, en_weight, kernel_weight)


def fade_backward_op_flops(dout, en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight,
                           *args, **kwargs) -> int:
    return 2 * fade_flops(en, de, en_weight, kernel_weight)


def carafe_op_flops(features, masks, kernel_size, *args, **kwargs) -> int:
    return carafe_flops(features, masks, kernel_size)


def carafe_backward_op_flops(dout, features, masks, kernel_size, *args, **kwargs) -> int:
    return 2 * carafe_flops(features, masks, kernel_size)
