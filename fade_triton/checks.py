"""Argument checks shared by every backend: bad input fails here, with a message that
names the argument and what it got, before any kernel runs."""
from __future__ import annotations

import math
import operator

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(name: str, t, ndim: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(t.shape)}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")


def check_same_kind(names: tuple[str, str], a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dtype != b.dtype:
        raise TypeError(f"{names[0]} and {names[1]} must share a dtype, got {a.dtype} and {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"{names[0]} and {names[1]} must be on one device, got {a.device} and {b.device}")


def check_int(name: str, value) -> int:
    """``value`` as a Python int: anything ``operator.index`` accepts (int, numpy integers, as
    mmcv takes them); a float (even 2.0), a bool or anything else is a TypeError."""
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise TypeError(f"{name} must be an int (or an integer type operator.index accepts, such as numpy.int64), "
                    f"got {type(value).__name__} {value!r}")


def check_positive_int(name: str, value) -> int:
    value = check_int(name, value)
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def check_kernel_size(kernel_size, name: str = "kernel_size") -> int:
    kernel_size = check_int(name, kernel_size)
    if kernel_size <= 0 or kernel_size % 2 == 0:
        raise ValueError(f"{name} must be a positive odd int, got {kernel_size}")
    return kernel_size


def check_scale(scale, name: str = "scale") -> int:
    scale = check_int(name, scale)
    if scale < 1:
        raise ValueError(f"{name} must be an int >= 1, got {scale}")
    return scale


def check_scaled_pair(low_name: str, low: torch.Tensor, high_name: str, high: torch.Tensor, scale: int) -> None:
    """``high`` must be exactly ``scale`` times ``low`` in H and W, with the same batch."""
    if high.shape[0] != low.shape[0]:
        raise ValueError(f"{high_name} and {low_name} batch sizes differ: {tuple(high.shape)} vs {tuple(low.shape)}")
    want = (low.shape[2] * scale, low.shape[3] * scale)
    if tuple(high.shape[2:]) != want:
        raise ValueError(
            f"{high_name} must be exactly scale={scale} times {low_name} in H and W: {low_name} is "
            f"{tuple(low.shape)}, so {high_name} must be (*, *, {want[0]}, {want[1]}), got {tuple(high.shape)}"
        )


def check_encoder_size(de: torch.Tensor, en: torch.Tensor, scale: int) -> None:
    """``en`` is ``scale`` times ``de`` in H and W, or smaller by less than ``scale`` (what a
    backbone gives for sizes that are not multiples of its stride: 65 -> 129 at scale 2)."""
    if en.shape[0] != de.shape[0]:
        raise ValueError(f"en and de batch sizes differ: {tuple(en.shape)} vs {tuple(de.shape)}")
    for dim, name in ((2, "H"), (3, "W")):
        full = de.shape[dim] * scale
        if not full - scale < en.shape[dim] <= full:
            raise ValueError(
                f"en must be scale={scale} times de in H and W, or smaller by less than {scale}: de is "
                f"{tuple(de.shape)}, so en's {name} must be in ({full - scale}, {full}] (exactly {full} when "
                f"sizes are multiples of the stride), got en {tuple(en.shape)}")


def check_weight(name: str, w, shape: tuple, like: torch.Tensor, autocast: bool = False) -> None:
    """``w`` must have ``shape`` and ``like``'s device, and ``like``'s dtype unless autocast is on
    (then it only has to be a float dtype: autocast casts it, as it does for a convolution)."""
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
    if tuple(w.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(w.shape)}")
    if autocast and w.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float tensor, got {w.dtype}")
    if not autocast and w.dtype != like.dtype:
        raise TypeError(f"{name} must have the inputs' dtype {like.dtype}, got {w.dtype}")
    if w.device != like.device:
        raise ValueError(f"{name} must be on the inputs' device {like.device}, got {w.device}")


def check_carafe_args(features, masks, kernel_size, group_size, scale_factor) -> tuple[int, int, int]:
    check_tensor("features", features, 4)
    check_tensor("masks", masks, 4)
    check_same_kind(("features", "masks"), features, masks)
    kernel_size = check_kernel_size(kernel_size)
    scale_factor = check_scale(scale_factor, "scale_factor")
    group_size = check_positive_int("group_size", group_size)
    channels = features.shape[1]
    if channels % group_size:
        raise ValueError(f"features channels ({channels}) must be divisible by group_size ({group_size})")
    want = group_size * kernel_size**2
    if masks.shape[1] != want:
        raise ValueError(
            f"masks must have group_size * kernel_size**2 = {group_size} * {kernel_size}**2 = {want} "
            f"channels, got shape {tuple(masks.shape)}"
        )
    check_scaled_pair("features", features, "masks", masks, scale_factor)
    return kernel_size, group_size, scale_factor


def check_fade_args(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale):
    """Validate a FADE / FADE-Lite call; return ``(kernel_size, scale, depthwise)``.

    FADE-Lite (``depthwise=True``) is recognised by ``kernel_weight`` of shape (K2, 1, 3, 3)
    together with ``en_weight`` of K2 output channels; anything else must be full FADE.
    """
    check_tensor("en", en, 4)
    check_tensor("de", de, 4)
    check_same_kind(("en", "de"), en, de)
    scale = check_scale(scale)
    if en.shape[1] != de.shape[1]:
        raise ValueError(
            f"en and de must have the same channels (the gate blends them), got en {tuple(en.shape)} "
            f"and de {tuple(de.shape)}"
        )
    check_encoder_size(de, en, scale)
    if not isinstance(kernel_weight, torch.Tensor) or kernel_weight.dim() != 4:
        raise ValueError("kernel_weight must be a 4-dim tensor (K*K, E, 3, 3) or (K*K, 1, 3, 3)")
    k2 = kernel_weight.shape[0]
    k = math.isqrt(k2)
    if k * k != k2 or k % 2 == 0:
        raise ValueError(f"kernel_weight must have K*K output channels for an odd K, got {tuple(kernel_weight.shape)}")
    if not isinstance(en_weight, torch.Tensor) or en_weight.dim() != 4:
        raise ValueError("en_weight must be a 4-dim tensor (E, C, 1, 1)")
    emb = en_weight.shape[0]
    depthwise = is_depthwise(en_weight, kernel_weight)
    channels = en.shape[1]
    shapes = {"gate_weight": (1, channels, 1, 1), "gate_bias": (1,), "en_weight": (emb, channels, 1, 1),
              "en_bias": (emb,), "de_weight": (emb, channels, 1, 1),
              "kernel_weight": (k2, 1 if depthwise else emb, 3, 3), "kernel_bias": (k2,)}
    weights = (gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias)
    autocast = autocast_enabled(en.device.type)
    if not weights_pass(weights, shapes.values(), en, autocast):  # then one of these raises, naming it
        for (name, shape), w in zip(shapes.items(), weights):
            check_weight(name, w, shape, en, autocast)
    return k, scale, depthwise


def weights_pass(weights, shapes, like: torch.Tensor, autocast: bool) -> bool:
    """Whether every weight passes ``check_weight`` against its shape: one pass over the
    weights on the usual path; the per-weight checks run (for their messages) only when not."""
    dtype, device = like.dtype, like.device
    return all(isinstance(w, torch.Tensor) and w.shape == shape and w.device == device
               and (w.dtype in FLOAT_DTYPES if autocast else w.dtype == dtype) for w, shape in zip(weights, shapes))


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type``; False for device types autocast does not
    know (meta: asking ``torch.is_autocast_enabled`` about them raises)."""
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def is_depthwise(en_weight: torch.Tensor, kernel_weight: torch.Tensor) -> bool:
    """FADE-Lite's kernel generator: K2 compressed channels and a depthwise 3x3. A Python bool
    (while ``torch.jit.trace`` records, sizes and their comparisons are tensors)."""
    k2 = kernel_weight.shape[0]
    return bool(kernel_weight.shape[1] == 1 and en_weight.shape[0] == k2 and k2 > 1)
