"""``FADE`` and ``FADELite`` modules: thin layers over :func:`fade_triton.functional.fade`.

The submodules mirror the official code, so ``state_dict()`` holds exactly the official
names (``gate_generator.conv.*``, ``ker_generator.compressor_en.*``, ...) and an official
checkpoint loads as is. ECCV-named checkpoints are renamed on load.
"""
from __future__ import annotations

import torch
from torch import nn

from .backend import check_backend, resolve_backend
from .checkpoint import convert_eccv_state_dict
from .checks import check_kernel_size, check_positive_int, check_scale
from .functional import fade_with_cache, tracer_warnings_off
from .ops.fade.fold import FoldedWeightCache

PROJECTIONS = (None, "de", "en")  # FADE's ``project``: which feature a 1x1 conv maps to the other's channels


class GateGenerator(nn.Module):
    """Holds the gate's 1x1 conv, ``conv``: C -> 1 (the gate itself is computed in ``fade``)."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 1, kernel_size=1)


class SemiShift(nn.Module):
    """Holds the kernel generator's weights under the official names.

    FADE: ``compressor_en`` C -> E (bias), ``compressor_de`` C -> E (no bias),
    ``content_encoder`` a 3x3 E -> K*K. FADE-Lite: E = K*K and ``content_encoder`` is depthwise.
    """

    def __init__(self, in_channels: int, embedding_dim: int, up_kernel_size: int, depthwise: bool):
        super().__init__()
        k2 = up_kernel_size * up_kernel_size
        self.compressor_en = nn.Conv2d(in_channels, embedding_dim, kernel_size=1)
        self.compressor_de = nn.Conv2d(in_channels, embedding_dim, kernel_size=1, bias=False)
        self.content_encoder = nn.Conv2d(embedding_dim, k2, kernel_size=3, padding=1,
                                         groups=k2 if depthwise else 1)


class FADE(nn.Module):
    """FADE upsampler (Lu et al., ECCV 2022 / IJCV 2024): ``forward(en, de)`` upsamples the
    decoder feature ``de`` (B, C, H, W) by ``scale`` under the guidance of the encoder feature
    ``en`` (B, C, scale*H, scale*W) and returns (B, C, scale*H, scale*W).

    The gate blends ``en`` with the upsampled ``de``, so FADE itself needs one channel count C.
    Where a decoder's channels differ (a Unet stage: skip 256, decoder 512), ``project`` adds a
    1x1 convolution (with bias, Xavier-uniform, zero bias) that maps one feature to the other's
    channels before FADE:

    - ``project="de"`` (``de_proj``: C_de -> C_en at the low resolution; the output has C_en
      channels): ``C_de*C_en + C_en`` parameters and ``2*B*H*W*C_de*C_en`` FLOPs, the cheaper one.
    - ``project="en"`` (``en_proj``: C_en -> C_de at the high resolution; the output has C_de
      channels): ``C_en*C_de + C_de`` parameters and ``2*B*sH*sW*C_en*C_de`` FLOPs, scale**2
      times more.

    The module's FLOPs are then ``fade_flops`` at the output's C plus the projection's (what
    ``FlopCounterMode`` counts). Without ``project`` the state dict holds exactly the official
    names; with it, also ``de_proj.*`` or ``en_proj.*``.

    Args:
        in_channels_en: channels of ``en``.
        in_channels_de: channels of ``de`` (default: ``in_channels_en``); must equal
            ``in_channels_en`` unless ``project`` is given.
        scale: integer upsampling factor >= 1.
        up_kernel_size: odd reassembly kernel size K.
        embedding_dim: E, width of the kernel generator.
        backend: "auto", "triton", "torch", "naive" or "mmcv" (see ``fade_triton.backend``).
        project: None, "de" or "en": which feature a 1x1 convolution maps to the other's
            channels when they differ (see above).

    Attributes: ``in_channels_en``, ``in_channels_de``; ``in_channels``, the channels FADE runs
    at and returns (C_en with ``project="de"``, C_de with ``"en"``).
    """

    _depthwise = False

    def __init__(self, in_channels_en: int, in_channels_de: int | None = None, scale: int = 2,
                 up_kernel_size: int = 5, embedding_dim: int = 64, backend: str = "auto",
                 project: str | None = None):
        super().__init__()
        in_channels_en = check_positive_int("in_channels_en", in_channels_en)
        in_channels_de = in_channels_en if in_channels_de is None else check_positive_int("in_channels_de",
                                                                                         in_channels_de)
        if project not in PROJECTIONS:
            raise ValueError(f"project must be one of {PROJECTIONS}, got {project!r}")
        if project is None and in_channels_de != in_channels_en:
            raise ValueError(f"in_channels_de ({in_channels_de}) must equal in_channels_en ({in_channels_en}): "
                             "the gate blends en with the upsampled de. Pass project='de' to map de to "
                             "in_channels_en with a 1x1 convolution (or 'en' to map en to in_channels_de)")
        if project is not None and in_channels_de == in_channels_en:
            raise ValueError(f"project={project!r} maps between unequal channels, but in_channels_de equals "
                             f"in_channels_en ({in_channels_en}); leave project=None")
        up_kernel_size = check_kernel_size(up_kernel_size, "up_kernel_size")
        embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        scale = check_scale(scale)
        check_backend(backend)
        self.in_channels_en, self.in_channels_de = in_channels_en, in_channels_de
        self.in_channels = in_channels_de if project == "en" else in_channels_en
        self.project = project
        self.scale = scale
        self.up_kernel_size = up_kernel_size
        self.backend = backend
        self._folded = FoldedWeightCache()  # the Triton path's folded weights, per weight version
        self.gate_generator = GateGenerator(self.in_channels)
        self.ker_generator = SemiShift(self.in_channels, embedding_dim, up_kernel_size, self._depthwise)
        if project == "de":
            self.de_proj = nn.Conv2d(in_channels_de, in_channels_en, kernel_size=1)
        elif project == "en":
            self.en_proj = nn.Conv2d(in_channels_en, in_channels_de, kernel_size=1)
        self.reset_parameters()
        self._register_load_state_dict_pre_hook(self._rename_eccv_keys)
        self._register_load_state_dict_pre_hook(self._check_state_dict)

    def reset_parameters(self) -> None:
        """Xavier-uniform weights, zero biases (as the official code)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @staticmethod
    def _rename_eccv_keys(state_dict, prefix, *args):
        renamed = convert_eccv_state_dict(state_dict, prefix)
        if renamed.keys() != state_dict.keys():
            state_dict.clear()
            state_dict.update(renamed)

    def _check_state_dict(self, state_dict, prefix, *args):
        """Before loading (this module alone or inside a model): each of this module's entries a
        tensor of its parameter's shape (TypeError / ValueError naming the key), rather than
        torch's RuntimeError afterwards. Missing and unknown keys: ``load_state_dict``."""
        for name, param in self.named_parameters():
            key = prefix + name
            if key in state_dict:
                value = state_dict[key]
                if not isinstance(value, torch.Tensor):
                    raise TypeError(f"state_dict[{key!r}] must be a torch.Tensor, got {type(value).__name__}")
                if value.shape != param.shape:
                    raise ValueError(f"state_dict[{key!r}] must have shape {tuple(param.shape)}, "
                                     f"got {tuple(value.shape)}")

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``; with ``strict``, missing or unknown keys (after the ECCV
        names are renamed) raise a ValueError naming them before anything is loaded. (A load
        hook cannot do this: torch passes every hook ``strict=True``.)"""
        if strict:
            given, own = convert_eccv_state_dict(state_dict).keys(), self.state_dict().keys()
            missing, unknown = sorted(own - given), sorted(given - own)
            if missing or unknown:
                raise ValueError(f"state_dict for {type(self).__name__}: missing keys {missing}, "
                                 f"unknown keys {unknown}")
        return super().load_state_dict(state_dict, strict, assign)

    def forward(self, en: torch.Tensor, de: torch.Tensor) -> torch.Tensor:
        with tracer_warnings_off():
            for name, t, c in (("en", en, self.in_channels_en), ("de", de, self.in_channels_de)):
                if isinstance(t, torch.Tensor) and t.dim() == 4 and t.shape[1] != c:
                    raise ValueError(f"{type(self).__name__} was built for {name} with {c} channels, "
                                     f"got {name} of shape {tuple(t.shape)}")
        if self.project == "de":
            de = self.de_proj(de)
        elif self.project == "en":
            en = self.en_proj(en)
        return fade_with_cache(en, de, self.weights(), self.scale, self.backend, self._folded)

    def weights(self) -> tuple:
        """The seven weights in ``fade_triton.fade``'s order."""
        gate, gen = _child(self, "gate_generator"), _child(self, "ker_generator")
        gate_conv, en, de, kernel = (_child(gate, "conv"), _child(gen, "compressor_en"), _child(gen, "compressor_de"),
                                     _child(gen, "content_encoder"))
        return (_param(gate_conv, "weight"), _param(gate_conv, "bias"), _param(en, "weight"), _param(en, "bias"),
                _param(de, "weight"), _param(kernel, "weight"), _param(kernel, "bias"))

    def __prepare_scriptable__(self):
        """``torch.jit.script`` calls this first (on every submodule of what it scripts): FADE's
        dispatch is Python that TorchScript cannot compile, so say what works instead."""
        raise RuntimeError(
            f"{type(self).__name__} cannot be compiled by torch.jit.script (its backend dispatch is Python). "
            "Use torch.jit.trace(module, (en, de)) for TorchScript (it records an export-friendly graph of "
            "standard operators with dynamic sizes), torch.export.export or torch.compile for PyTorch 2, or "
            "torch.onnx.export for ONNX")

    def __getstate__(self):  # the cache is derived state: not pickled or deep-copied
        return {**super().__getstate__(), "_folded": FoldedWeightCache()}

    def extra_repr(self) -> str:
        device = self.gate_generator.conv.weight.device
        try:
            resolved = resolve_backend(self.backend, device)
        except RuntimeError as err:
            resolved = f"unavailable: {err}"
        channels = (f"in_channels={self.in_channels}" if self.project is None else
                    f"in_channels_en={self.in_channels_en}, in_channels_de={self.in_channels_de}, "
                    f"project={self.project!r}")
        return (f"{channels}, scale={self.scale}, up_kernel_size={self.up_kernel_size}, "
                f"backend={self.backend!r} ({resolved} on {device.type})")


def _child(module: nn.Module, name: str) -> nn.Module:
    """``getattr(module, name)`` for a submodule, read from ``_modules`` (nn.Module's
    ``__getattr__`` costs a microsecond a call)."""
    child = module._modules.get(name)
    return child if child is not None else getattr(module, name)


def _param(module: nn.Module, name: str):
    """``getattr(module, name)`` for a parameter, from ``_parameters`` when it is one there
    (otherwise the attribute: a parametrization's property, a weight-norm hook's tensor)."""
    param = module._parameters.get(name)
    return param if param is not None else getattr(module, name)


class FADELite(FADE):
    """FADE-Lite: no embedding; the encoder/decoder compressors map C -> K*K directly and the
    content encoder is a depthwise 3x3 over the K*K channels. Same arguments as :class:`FADE`
    without ``embedding_dim``."""

    _depthwise = True

    def __init__(self, in_channels_en: int, in_channels_de: int | None = None, scale: int = 2,
                 up_kernel_size: int = 5, backend: str = "auto", project: str | None = None):
        super().__init__(in_channels_en, in_channels_de, scale, up_kernel_size,
                         embedding_dim=up_kernel_size * up_kernel_size, backend=backend, project=project)
