"""The one place that decides which implementation runs: the backend names, how a user's choice
resolves on a device, and ``IMPLEMENTATIONS``, the table from (backend, op) to the function.

Backends (all compute the function in SPEC.md):

- ``"triton"``: fade_triton's Triton kernels. CUDA tensors, or CPU tensors when
  ``TRITON_INTERPRET=1`` was set before triton was first imported (Triton's interpreter).
- ``"torch"``: the memory-lean pure-PyTorch path (any device, any dtype).
- ``"naive"``: the official pure-PyTorch formulation, kept as the benchmark baseline.
- ``"mmcv"``: the official implementation, ``mmcv.ops.carafe`` (CUDA, compiled mmcv only).
- ``"auto"``: ``"triton"`` where it can run, otherwise ``"torch"``.

Forward-mode AD (``torch.func.jvp``, ``jacfwd``, ``hessian``, ``torch.autograd.forward_ad``) has no
formula in the ``triton``, ``torch`` and ``mmcv`` implementations (custom operators and kernels):
while it pushes tangents through a call, ``"auto"`` resolves to ``"naive"`` (standard operators,
forward-differentiable) and an explicit ``"triton"``, ``"torch"`` or ``"mmcv"`` raises
NotImplementedError, rather than return a tangent of zero or none (``forward_ad_active``).

Whatever the choice, two cases resolve by themselves. While an exporter records the model
(``torch.onnx.export``, either exporter, or ``torch.jit.trace``) every backend resolves to
``"export"``: a formulation in standard operators (``ops/fade/naive.py``), so the
exported graph needs nothing from fade_triton (``torch.export.export`` itself keeps the
``fade_triton::`` operators). On meta tensors, where nothing is computed, every backend but
``"naive"`` resolves to ``"torch"`` (without tangents: see below): the same output shape, dtype and
layout as the Triton path.

Nothing here runs at import time: the environment is read when a backend is resolved, and an
implementation's module is imported at its first use.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import torch
from torch.autograd import forward_ad

BACKENDS = ("auto", "triton", "torch", "naive", "mmcv")

# (backend, op) -> "module:function". Every implementation of an op takes the same arguments:
#   fade:   (en, de, weights, scale, depthwise, cache)   weights: the seven, in fade()'s order
#   carafe: (features, masks, kernel_size, group_size, scale_factor)
# "export" is what every backend resolves to while an exporter records (standard operators).
IMPLEMENTATIONS = {
    ("triton", "fade"): "fade_triton.ops.fade.op:fade_triton_path",
    ("torch", "fade"): "fade_triton.ops.fade.op:fade_torch_path",
    ("naive", "fade"): "fade_triton.ops.fade.naive:fade_naive_path",
    ("mmcv", "fade"): "fade_triton.ops.mmcv_path:fade_mmcv_path",
    ("export", "fade"): "fade_triton.ops.fade.naive:fade_export_path",
    ("triton", "carafe"): "fade_triton.ops.carafe.op:carafe_triton_path",
    ("torch", "carafe"): "fade_triton.ops.carafe.op:carafe_torch_path",
    ("naive", "carafe"): "fade_triton.ops.carafe.naive:carafe_naive",
    ("mmcv", "carafe"): "fade_triton.ops.mmcv_path:carafe_mmcv",
    ("export", "carafe"): "fade_triton.ops.carafe.naive:carafe_export",
}


def interpreter_enabled() -> bool:
    """True when Triton's CPU interpreter is requested (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_installed() -> bool:
    # find_spec answers from sys.modules once triton is imported; no cache of our own, so
    # torch.compile traces this without a warning.
    return importlib.util.find_spec("triton") is not None


def triton_supports(device: torch.device) -> bool:
    """Whether the Triton kernels can run on tensors of ``device``: CUDA, or CPU under Triton's
    interpreter outside torch.compile / torch.export (interpreted kernels cannot be compiled), or
    any device while ``fade_triton.testing.simulated_gpu`` records launches for a GPU."""
    if not triton_installed():
        return False
    from .ops import helpers

    if helpers.SIMULATED_TARGET is not None:
        return True
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
    if level != "none":  # the usual case: one read (this runs at every float32 launch)
        return level
    for value in (getattr(torch.backends.cudnn, "fp32_precision", "none"),
                  getattr(torch.backends, "fp32_precision", "none")):
        if value != "none":
            return value
    return "ieee"


def exporting() -> bool:
    """True while ``torch.onnx.export`` (TorchScript-based or ``dynamo=True``) or
    ``torch.jit.trace`` records the model."""
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


def forward_ad_open() -> bool:
    """Whether a forward-AD level is open (``torch.func.jvp`` and the rest, or
    ``torch.autograd.forward_ad.dual_level``): the one read of torch's private level counter."""
    return forward_ad._current_level >= 0


def forward_ad_active(*tensors) -> bool:
    """Whether forward-mode AD may push tangents through a call on ``tensors`` (None allowed): a
    forward-AD level is open and, outside functorch transforms, one of ``tensors`` carries a
    tangent at it. Under a transform (``torch.func.jvp`` and the rest) every call counts: its
    tensors' tangents cannot be read there (``vmap`` has no rule to unpack a dual tensor). One
    module attribute read when no level is open."""
    if not forward_ad_open():
        return False
    if torch._C._functorch.peek_interpreter_stack() is not None:
        return True
    return any(t is not None and forward_ad.unpack_dual(t).tangent is not None for t in tensors)


def check_backend(backend: str) -> str:
    """``backend`` if it is one of ``BACKENDS``, else a ValueError naming the choices."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def resolve_backend(backend: str, device: torch.device, tangents: bool = False) -> str:
    """Map a user's ``backend`` argument to the implementation that will run on ``device``:
    one of ``BACKENDS`` but "auto", or "export" while an exporter records (see the module's
    docstring). ``tangents``: forward-mode AD pushes tangents through the call
    (``forward_ad_active``).

    Raises ValueError for an unknown name, RuntimeError for an explicit request that cannot run
    here and NotImplementedError for one that cannot differentiate in forward mode (rather than
    silently running something else or returning a wrong tangent).
    """
    check_backend(backend)
    if exporting():
        return "export"
    if tangents:  # before meta: a dual meta tensor through the torch path fails inside PyTorch
        if backend in ("auto", "naive"):
            return "naive"
        raise NotImplementedError(
            f"backend={backend!r} has no forward-mode AD formula (torch.func.jvp, jacfwd, hessian, "
            "torch.autograd.forward_ad): use backend='naive' or 'auto', which runs 'naive' while forward-mode "
            "AD is on (standard PyTorch operators, at the naive path's speed and memory)")
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


def implementation(op: str, backend: str, device: torch.device, tangents: bool = False):
    """The function that runs ``op`` ("fade" or "carafe") for the user's ``backend`` on ``device``
    (``resolve_backend``, then ``IMPLEMENTATIONS``)."""
    module, _, name = IMPLEMENTATIONS[(resolve_backend(backend, device, tangents), op)].partition(":")
    if module not in sys.modules:  # fade_triton.ops imports them all: this is for a caller that did not
        importlib.import_module(module)
    return getattr(sys.modules[module], name)  # (a lookup torch.compile traces without a graph break)
