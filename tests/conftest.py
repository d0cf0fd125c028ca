"""Test configuration.

``FADE_TEST_DEVICE`` picks where the tests run: ``cpu`` (default, CI) runs the Triton kernels
in Triton's interpreter; ``cuda`` runs them compiled, adds bfloat16 and TF32 cases, and makes
CUDA the default device for every tensor the tests create.
"""
import os

DEVICE_TYPE = os.environ.get("FADE_TEST_DEVICE", "cpu")
if DEVICE_TYPE == "cpu":
    # Triton's CPU interpreter must be chosen before triton is imported anywhere.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Property-based tests (tests/test_properties.py, tests/test_bad_inputs.py): "ci", the default, draws a
# fixed sequence of examples (derandomized) sized for about a minute in all; "long" draws many more at
# random (python -m pytest tests/test_properties.py --hypothesis-profile=long).
_SLOW_EXAMPLES = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=_SLOW_EXAMPLES)
settings.register_profile("long", max_examples=300, deadline=None, print_blob=True,
                          suppress_health_check=_SLOW_EXAMPLES)
settings.load_profile("ci")

from fade_triton.testing import nan_filled_empty  # noqa: E402


@pytest.fixture(autouse=True)
def _device_and_seed():
    torch.manual_seed(0)
    if DEVICE_TYPE == "cpu":
        yield
        return
    # IEEE float32 everywhere unless a test asks for TF32, so float32 checks mean float32 (the
    # newer precision API: reading the legacy allow_tf32 flags raises once it has been used)
    flags = (torch.backends.cudnn.conv, torch.backends.cuda.matmul)
    saved = [f.fp32_precision for f in flags]
    for f in flags:
        f.fp32_precision = "ieee"
    torch.set_default_device(DEVICE_TYPE)
    yield
    torch.set_default_device(None)
    for f, value in zip(flags, saved):
        f.fp32_precision = value


@pytest.fixture
def cpu_default_device(_device_and_seed):
    """CPU as the default device for one test, whatever ``FADE_TEST_DEVICE`` says: for tests of
    device-agnostic host-side machinery that are written for CPU (the exporters and ONNX Runtime,
    gloo processes, the benchmark's ``--device cpu`` runs, the CPU profiler), so that nothing
    they create lands on CUDA beside their CPU tensors."""
    if DEVICE_TYPE == "cpu":
        yield
        return
    torch.set_default_device("cpu")
    yield
    torch.set_default_device(DEVICE_TYPE)


@pytest.fixture
def poisoned():
    """Every float tensor made by torch.empty / torch.empty_like during the test starts as NaN,
    so an output element a kernel forgets to write fails the comparison."""
    with nan_filled_empty():
        yield
