"""fade_triton: FADE and FADE-Lite feature upsampling with Triton kernels.

Public API: :class:`FADE`, :class:`FADELite`, :func:`fade`, :func:`carafe`,
:func:`convert_eccv_state_dict`, and mmcv's CARAFE modules :class:`CARAFE`, :class:`CARAFEPack`.
Importing the package defines its operators (``fade_triton::fade``, ``fade_triton::carafe``
and their backward, with their FLOP formulas), which imports triton where it is installed: set
``TRITON_INTERPRET=1`` before importing fade_triton to run the kernels in Triton's CPU interpreter.
"""
from . import ops  # noqa: F401  (defines the fade_triton:: operators)
from .carafe_modules import CARAFE, CARAFEPack
from .checkpoint import convert_eccv_state_dict
from .functional import carafe, fade
from .modules import FADE, FADELite

__all__ = ["FADE", "FADELite", "fade", "carafe", "convert_eccv_state_dict", "CARAFE", "CARAFEPack"]
__version__ = "0.1.0"
