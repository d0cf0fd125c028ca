"""Every provider that computes the op must agree with the ``torch`` path before it is timed:
its output, and in ``fwd+bwd`` cases the gradients of every input and parameter for the same
output gradient. A provider that disagrees is recorded as ``mismatch``."""
from __future__ import annotations

import torch

from fade_triton.testing import rel_err

from .cases import OPS, Case, make_inputs
from .providers import build

TOLERANCE = {"float32": 2e-3, "float16": 3e-2, "bfloat16": 3e-2}  # vs the torch path, same dtype


def output_grad(case: Case, device: torch.device) -> torch.Tensor:
    """The output gradient every provider is checked and timed with (seeded: the same for all),
    in the case's layout."""
    hi = case.size * case.scale
    gen = torch.Generator(device).manual_seed(2)
    grad = torch.randn(case.batch, case.channels, hi, hi, generator=gen, device=device,
                       dtype=getattr(torch, case.dtype))
    return grad.to(memory_format=torch.channels_last) if case.layout == "channels_last" else grad


def evaluate(module, fn, inputs: tuple, names: tuple, grad=None) -> dict[str, torch.Tensor]:
    """``{"out": ...}`` and, when ``grad`` is given, ``"grad <name>"`` for every input (named by
    ``names``) and every parameter of ``module`` (zeros where autograd gave none). Leaves no
    ``.grad`` behind."""
    if grad is None:
        with torch.no_grad():
            return {"out": fn(*inputs)}
    leaves = {**dict(zip(names, inputs)), **dict(module.named_parameters())}
    for t in leaves.values():
        t.grad = None
    out = fn(*inputs)
    out.backward(grad)
    got = {"out": out.detach()}
    for name, t in leaves.items():
        got[f"grad {name}"] = torch.zeros_like(t) if t.grad is None else t.grad
        t.grad = None
    return got


def reference(case: Case, device: torch.device) -> dict[str, torch.Tensor]:
    """The ``torch`` path's output (and gradients in fwd+bwd cases) on the case's inputs."""
    module, fn = build("torch", case, device)
    inputs = make_inputs(case, device, case.mode == "fwd+bwd")
    return evaluate(module, fn, inputs, OPS[case.op].names, output_grad(case, device) if case.mode == "fwd+bwd" else None)


def compare(got: dict, ref: dict, dtype: str) -> dict:
    """Row fields: ``rel_err_vs_torch`` (output), ``grad_rel_err_vs_torch`` (the worst
    gradient), and ``status``/``reason`` = ``mismatch`` when either exceeds the tolerance."""
    errors = {name: rel_err(t, ref[name]) for name, t in got.items()}
    row = {"rel_err_vs_torch": errors.pop("out")}
    worst = max(errors, key=errors.get, default=None)
    if worst is not None:
        row["grad_rel_err_vs_torch"] = errors[worst]
    bad = [(name, err) for name, err in [("output", row["rel_err_vs_torch"])] + sorted(errors.items())
           if not err <= TOLERANCE[dtype]]
    if bad:
        row["status"] = "mismatch"
        row["reason"] = "; ".join(f"{name}: rel. error {err:.2e} vs the torch path" for name, err in bad[:3])
    return row
