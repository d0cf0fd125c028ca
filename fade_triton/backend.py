"""The one place that decides which implementation runs.

Backends (all compute the function in SPEC.md):

- ``"triton"``: fade_triton's Triton kernels. CUDA tensors, or CPU tensors when
  ``TRITON_INTERPRET=1`` was set before triton was first imported (Triton's interpreter).
- ``"torch"``: the memory-lean pure-PyTorch path (any device, any dtype).
- ``"naive"``: the official pure-PyTorch formulation, kept as the benchmark baseline.
- ``"mmcv"``: the official implementation, ``mmcv.ops.carafe`` (CUDA, compiled mmcv only).
- ``"auto"``: ``"triton"`` where it can run, otherwise ``"torch"``.

Whatever the choice, two cases resolve by themselves. While an exporter records the model
(``torch.onnx.export``, either exporter, or ``torch.jit.trace``) every backend resolves to
``"export"``: a formulation in standard operators (``reference.fade_export``), so the
exported graph needs nothing from fade_triton (``torch.export.export`` itself keeps the
``fade_triton::`` operators). On meta tensors, where nothing is computed, every backend but
``"naive"`` resolves to ``"torch"``: the same output shape, dtype and layout as the Triton path.

Nothing here runs at import time: the environment is read when a backend is resolved.
"""
from __future__ import annotations

import importlib.util
import os

import torch

BACKENDS = ("auto", "triton", "torch", "naive", "mmcv")


def interpreter_enabled() -> bool:
    """True when Triton's CPU interpreter is requested (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_installed() -> bool:
    # find_spec answers from sys.modules once triton is imported; no cache of our own, so
    # torch.compile traces this without a warning.
    return importlib.util.find_spec("triton") is not None


def triton_supports(device: torch.device) -> bool:
    """Whether the Triton kernels can run on tensors of ``device``: CUDA, or CPU under Triton's
    interpreter outside torch.compile / torch.export (interpreted kernels cannot be compiled)."""
    if not triton_installed():
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and interpreter_enabled() and not torch.compiler.is_compiling()


def float32_conv_precision() -> str:
    """"tf32" or "ieee": what PyTorch's own float32 convolutions use on CUDA, and so what the
    Triton kernels' float32 dot products use (SPEC.md, Precision). Reads the newer
    ``torch.backends.cudnn.conv.fp32_precision`` API where it exists ("none" defers to the
    parent setting, and all "none" means IEEE), else the legacy ``cudnn.allow_tf32``."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    level = getattr(conv, "fp32_precision", None)
    if level is None:
        return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"
    for value in (level, getattr(torch.backends.cudnn, "fp32_precision", "none"),
                  getattr(torch.backends, "fp32_precision", "none")):
        if value != "none":
            return value
    return "ieee"


def exporting() -> bool:
    """True while ``torch.onnx.export`` (TorchScript-based or ``dynamo=True``) or
    ``torch.jit.trace`` records the model."""
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


def resolve_backend(backend: str, device: torch.device) -> str:
    """Map a user's ``backend`` argument to the implementation that will run on ``device``:
    one of ``BACKENDS`` but "auto", or "export" while an exporter records (see the module's
    docstring).

    Raises ValueError for an unknown name and RuntimeError for an explicit request that
    cannot run here (rather than silently running something else).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if exporting():
        return "export"
    if device.type == "meta":
        return "naive" if backend == "naive" else "torch"
    if backend == "auto":
        return "triton" if triton_supports(device) else "torch"
    if backend == "triton" and not triton_supports(device):
        if not triton_installed():
            raise RuntimeError("backend='triton' needs the 'triton' package (pip install triton)")
        if device.type == "cpu" and interpreter_enabled():
            raise RuntimeError("backend='triton' under torch.compile / torch.export needs CUDA tensors: Triton's "
                               "CPU interpreter cannot be compiled; use backend='torch' (or 'auto') on CPU")
        raise RuntimeError(
            f"backend='triton' cannot run on {device.type} tensors: use CUDA tensors, or set "
            "TRITON_INTERPRET=1 before triton is imported to run the kernels in Triton's CPU "
            "interpreter (slow; meant for testing)"
        )
    return backend
