"""The operators and their kernels.

One folder per operator (``fade/``, ``carafe/``): its ``torch.library`` operator, autograd and
FLOP formula (``op.py``), its eager and export forms, and the launchers of its kernels. Shared
beside them: the reassembly kernels (``reassemble.py``, ``reassemble_bwd.py``) and their eager
form (``reassemble_eager.py``), the generic 3x3 convolution (``conv3x3.py``), the ``@triton.jit``
window-walk helpers (``window.py``) and the host-side helpers (``helpers.py``). Which
implementation runs for which backend: ``fade_triton.backend.IMPLEMENTATIONS``.
Importing this package imports every module the table names, which defines the operators.
"""
import importlib

from ..backend import IMPLEMENTATIONS

for _module in sorted({path.partition(":")[0] for path in IMPLEMENTATIONS.values()}):
    importlib.import_module(_module)
