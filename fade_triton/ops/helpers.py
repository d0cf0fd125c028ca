"""Host-side helpers shared by every operator's launchers: the compile target, sizes, strides,
layouts, accumulator dtype and dot precision. No triton import: the eager paths use it too."""
from __future__ import annotations

import contextlib
import functools
from typing import NamedTuple

import torch
from torch._library.triton import is_wrap_triton_enabled, set_wrap_triton_enabled, wrap_triton
from torch._subclasses.fake_tensor import FakeTensor

from ..backend import float32_conv_precision, forward_ad_open
from ..checks import autocast_enabled


class Target(NamedTuple):
    """What the kernels are launched for; the tile choices read it, nothing else.

    arch: compute capability the tiles are chosen for (90: H100/H200, 80: A100). What compiles
        without spills on sm_90 is not always what does on sm_80 (the compile report checks both).
    interpreter: Triton's CPU interpreter runs the kernels. Its cost is per operation, not per
        element, so the launchers pick wider channel blocks there (the same code, run faster),
        and float32 dot products are IEEE (there is no TF32 on a CPU).
    """

    arch: int = 90
    interpreter: bool = False


# Set only inside ``fade_triton.testing.simulated_gpu`` (the compile report, host-time and tile tests):
# CPU tensors are then launched as for a GPU of that target. None: the tensors' own device decides.
# A module attribute (read by torch.compile as a guarded constant), not a ContextVar it cannot trace.
SIMULATED_TARGET: Target | None = None


def target_of(t: torch.Tensor) -> Target:
    """The target a launch on ``t`` runs on: its GPU's compute capability, or the interpreter for
    CPU tensors (the only way the Triton backend runs on them), unless a simulated GPU is set."""
    if SIMULATED_TARGET is not None:
        return SIMULATED_TARGET
    if t.is_cuda:
        return cuda_target(t.device.index)
    return Target(90, interpreter=True)


@functools.lru_cache(maxsize=None)
def cuda_target(index: int) -> Target:
    """The target of CUDA device ``index``, read once (a device's compute capability is fixed)."""
    major, minor = torch.cuda.get_device_capability(index)
    return Target(10 * major + minor, interpreter=False)


def cdiv(a, b):
    """Ceiling division on the host (``triton.cdiv`` is a jitted function: several microseconds a
    call from Python); works on SymInts without guards."""
    return -(-a // b)


def next_pow2(n: int, minimum: int = 1) -> int:
    """Smallest power of two >= max(n, minimum)."""
    n = max(int(n), minimum)
    return 1 << (n - 1).bit_length()


# CUDA's limit on grid axes 1 and 2 (axis 0 takes up to 2**31 - 1). Read at each launch, so a
# test can lower it to run the batch-split launches under the interpreter.
MAX_GRID_YZ = 65535


def batch_slices(batch, programs_per_image, what: str) -> list:
    """The batch in slices whose launches keep grid axis 2 (``images * programs_per_image``)
    within ``MAX_GRID_YZ``: one ``slice(None)`` (the whole batch, one launch) for every usual
    size, more launches on views (no copies) past the limit. Raises ValueError naming ``what``
    when one image alone needs more programs than the axis takes."""
    if programs_per_image > MAX_GRID_YZ:
        raise ValueError(f"{what}: {programs_per_image} programs per image exceed CUDA's grid limit of {MAX_GRID_YZ}")
    if batch * programs_per_image <= MAX_GRID_YZ:
        return [slice(None)]
    per = MAX_GRID_YZ // programs_per_image
    return [slice(i, min(i + per, batch)) for i in range(0, batch, per)]


def batch_grids(batch, programs_per_image, what: str, grid_xy: tuple) -> tuple:
    """``((rows, grid), ...)``: one launch per slice of ``batch_slices``, grid axis 2 the slice's
    images times ``programs_per_image`` after ``grid_xy``, the launch's axes 0 and 1."""
    return tuple((rows, (*grid_xy, (batch if rows == slice(None) else rows.stop - rows.start) * programs_per_image))
                 for rows in batch_slices(batch, programs_per_image, what))


def check_grid_axis1(programs, what: str) -> None:
    """Raise ValueError naming ``what`` when grid axis 1 needs more than ``MAX_GRID_YZ`` programs."""
    if programs > MAX_GRID_YZ:
        raise ValueError(f"{what}: {programs} programs along grid axis 1 exceed CUDA's limit of {MAX_GRID_YZ}")


def batch_view(t: torch.Tensor | None, rows: slice) -> torch.Tensor | None:
    """``t[rows]`` along the batch (a view; ``t`` itself for the whole batch), or None for an
    absent optional tensor."""
    if t is None or rows == slice(None):
        return t
    return t[rows]


class Spec(NamedTuple):
    """A tensor's shape, strides and dtype: what a launch plan is computed from (hashable, unlike
    the tensor). It answers ``shape``, ``stride()``, ``dtype`` and ``element_size()`` as the tensor
    would, so the tile choices take either."""

    shape: tuple
    strides: tuple
    dtype: torch.dtype

    def stride(self, dim: int | None = None):
        return self.strides if dim is None else self.strides[dim]

    def element_size(self) -> int:
        return self.dtype.itemsize


def spec(t: torch.Tensor | None) -> Spec | None:
    """``t``'s ``Spec`` (None for an absent optional tensor)."""
    return None if t is None else Spec(t.shape, t.stride(), t.dtype)


class LaunchPlan(NamedTuple):
    """What a launcher passes its kernel besides the tensors, for one signature (``cached_plan``).

    grids: ``((rows, grid), ...)``, one launch per batch slice (``batch_grids``; one for every
        usual size, ``rows`` then ``slice(None)``).
    args: the scalar arguments after the tensors (sizes, strides), in the kernel's order.
    meta: the keyword arguments (constexpr flags and tiles, ``num_warps``, ``num_stages``).
    kernel: the kernel to launch where a launcher chooses between two (None: the launcher's own).
    """

    grids: tuple
    args: tuple
    meta: dict
    kernel: object = None


def cached_plan(build):
    """``build`` (a launcher's plan: a pure function of hashable arguments, the tensors' ``Spec``s,
    flags and the target) computed once per distinct arguments and ``MAX_GRID_YZ``: a repeated
    call skips the tile choice, grid and argument assembly. Computed afresh, uncached, under
    torch.compile and for symbolic sizes (not hashable). An error is raised again on every call
    (``functools.lru_cache`` keeps results only)."""
    cached = functools.lru_cache(maxsize=1024)(lambda _grid_limit, *args: build(*args))

    @functools.wraps(build)
    def plan(*args):
        if torch.compiler.is_compiling():
            return build(*args)
        try:
            return cached(MAX_GRID_YZ, *args)
        except TypeError:  # a SymInt size or stride (dynamic shapes) is not hashable
            return build(*args)

    plan.cache_clear = cached.cache_clear
    return plan


# An operator call's launch plans, one dict per call signature (the operator's tag and its
# arguments' Specs, strides, flags and target): its launchers fill it on first use (``slot_plan``),
# so a repeated call looks its signature up once instead of once per launch.
signature_plans = cached_plan(lambda *signature: {})


def slot_plan(slot, build) -> LaunchPlan:
    """The plan in ``slot``, ``(plans, name)``: an operator call's ``signature_plans`` and the
    launch's name in it, built by ``build()`` on first use; ``build()`` itself when ``slot`` is
    None (a launcher called on its own)."""
    if slot is None:
        return build()
    plans, name = slot
    plan = plans.get(name)
    if plan is None:
        plan = plans[name] = build()
    return plan


def launch(kernel, plan: LaunchPlan, tensors: tuple, batched: tuple) -> None:
    """``kernel[grid](*tensors, *plan.args, **plan.meta)`` for each launch of ``plan``; on a split
    batch the tensors flagged in ``batched`` (those with a batch axis) are passed as that slice's
    views (``batch_view``). ``plan.kernel``, where set, is launched instead of ``kernel``."""
    run = wrap_kernel(plan.kernel or kernel)
    for rows, grid in plan.grids:
        views = tensors if rows == slice(None) else tuple(batch_view(t, rows) if sliced else t
                                                          for t, sliced in zip(tensors, batched))
        run[grid](*views, *plan.args, **plan.meta)


def strides(t: torch.Tensor | None, n: int = 4) -> tuple:
    """``t.stride()``, or ``n`` zeros for an absent optional tensor (its kernel flag is off)."""
    return t.stride() if t is not None else (0,) * n


def channel_fast(t: torch.Tensor) -> bool:
    """Whether ``t``'s channels are its contiguous axis (channels_last and alike): the kernels then
    load channel vectors, else pixel rows. Read from strides only, never from spatial sizes."""
    return t.stride(1) == 1 and t.shape[1] > 1


def memory_format_of(t: torch.Tensor) -> torch.memory_format:
    """channels_last for a channels_last tensor, else contiguous: the layout outputs and gradients
    are allocated in (channels_last in, channels_last out, as torch's convolutions do)."""
    if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half types and float32, float64 for float64 (SPEC.md, Precision). (A comparison,
    not ``torch.promote_types``: that is an aten op, which the launch-budget test counts.)"""
    return torch.float64 if dtype == torch.float64 else torch.float32


def dot_precision(dtype: torch.dtype, target: Target) -> str:
    """``tl.dot`` input precision: TF32 for float32 exactly when PyTorch would use it for a
    convolution (``fade_triton.backend.float32_conv_precision``) and the kernels run on a GPU;
    IEEE otherwise (and for every other dtype, where it does not apply)."""
    if dtype == torch.float32 and not target.interpreter and float32_conv_precision() == "tf32":
        return "tf32"
    return "ieee"


def device_guard(t: torch.Tensor):
    """Launch on the tensor's own GPU (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


def launches_skipped(t: torch.Tensor) -> bool:
    """True for fake and meta tensors: an operator then runs for its output shapes only (shape
    propagation, torch.export) and launches nothing. Under torch.compile the operator's
    implementation is traced with functional tensors instead, and its launches are recorded."""
    return t.device.type == "meta" or isinstance(t, FakeTensor)


def wrap_kernel(kernel):
    """``torch.library.wrap_triton(kernel)``: what every launcher indexes with its grid. On the eager
    fast path (the wrap switched off by ``run_unwrapped``) the kernel itself, as ``wrap_triton``
    would return it, without its per-call imports (about 2 µs a launch on the 2-core CPU machine:
    FADE's forward, 3 launches, went from 93.9 to 88 µs in ``bench.tools.host_time``)."""
    if torch.compiler.is_compiling() or is_wrap_triton_enabled():  # compiling first: a constant to dynamo
        return wrap_triton(kernel)
    return kernel


def run_unwrapped(implementation, args: tuple):
    """``implementation(*args)`` with torch's wrap switched off: the launchers call the kernels
    themselves (``wrap_kernel``) instead of through the higher-order op, as an operator's eager
    dispatch does."""
    with set_wrap_triton_enabled(False):
        return implementation(*args)


PLAIN_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


def direct_call_ok(*tensors) -> bool:
    """Whether an operator's implementation may run without the dispatcher (its eager fast path:
    a ``torch.autograd.Function`` around the same implementation): plain eager execution on plain
    tensors. False under torch.compile / torch.export, an active TorchDispatchMode
    (``FlopCounterMode``, fake and functional tensors, tracing) or TorchFunctionMode (including
    ``torch.set_default_device``), a functorch transform (``vmap``, ``grad``), an open
    forward-AD level (``backend.forward_ad_active`` decides such a call first; a replay must not
    skip it), and for tensor subclasses: the operator then runs through the dispatcher, so each
    of them sees it. ``tensors``: the call's tensor arguments (None allowed)."""
    if torch.compiler.is_compiling():  # first: the C checks below are not traced
        return False
    if (torch._C._len_torch_dispatch_stack() or torch._C._is_torch_function_mode_enabled()
            or torch._C._functorch.peek_interpreter_stack() is not None or forward_ad_open()):
        return False
    return all(t is None or type(t) in PLAIN_TENSOR_TYPES for t in tensors)


def needs_autograd(*tensors) -> bool:
    """Whether a call on ``tensors`` records an autograd graph (grad mode on and an input that
    requires grad), as the dispatcher's autograd kernel decides it."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def direct_function(name: str, implementation, setup_context, backward) -> type[torch.autograd.Function]:
    """An operator's eager fast path as a ``torch.autograd.Function``: ``implementation`` and the
    operator's own ``setup_context`` and ``backward`` without the dispatcher (``ctx.direct`` tells
    the backward it may call its implementation directly too, ``backward_call``)."""

    def forward(ctx, *args):  # ctx in forward (no separate setup_context): apply binds no signature
        output = run_unwrapped(implementation, args)
        setup_context(ctx, args, output)
        ctx.direct = True
        return output

    return type(name, (torch.autograd.Function,), {"forward": staticmethod(forward), "backward": staticmethod(backward),
                                                   "__doc__": direct_function.__doc__})


def direct_call(operator, function, implementation, args: tuple, tensors: tuple, inputs: tuple):
    """``operator(*args)``, or the same through its eager fast path where ``direct_call_ok(*tensors)``:
    ``function`` (a ``direct_function``) when autograd records ``inputs``, else the implementation."""
    if not direct_call_ok(*tensors):
        return operator(*args)
    return direct_run(function, implementation, args, inputs)


def direct_run(function, implementation, args: tuple, inputs: tuple):
    """The eager fast path of ``direct_call`` where ``direct_call_ok`` is known to hold:
    ``function.apply(*args)`` when autograd records ``inputs``, else the implementation."""
    if needs_autograd(*inputs):
        return function.apply(*args)
    return run_unwrapped(implementation, args)


def backward_call(ctx, operator, implementation, args: tuple, tensors: tuple):
    """The backward operator's ``operator(*args)`` from an autograd backward; its implementation
    directly when the forward took the fast path (``ctx.direct``) and nothing needs the operator
    (no mode, and no graph of the backward itself: ``create_graph=True`` goes through it)."""
    if getattr(ctx, "direct", False) and direct_call_ok(*tensors) and not needs_autograd(*tensors):
        return run_unwrapped(implementation, args)
    return operator(*args)


def autocast_inputs(*tensors):
    """Under autocast, float32 tensors in the autocast dtype (as a convolution would cast them);
    the operators then run with autocast off (``autocast_off``). Otherwise the tensors as they are."""
    device_type = tensors[0].device.type
    if not autocast_enabled(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    cast = tuple(t.to(dtype) if t.dtype == torch.float32 else t for t in tensors)
    if len({t.dtype for t in cast}) > 1:
        raise TypeError(f"under autocast, the inputs and weights must be float32 or {dtype}, "
                        f"got {sorted({str(t.dtype) for t in tensors})}")
    return cast


def autocast_off(device_type: str):
    """Autocast switched off for an operator call (a no-op where autocast is not on)."""
    if autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()
