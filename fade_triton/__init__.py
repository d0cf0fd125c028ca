"""fade_triton: FADE and FADE-Lite feature upsampling with Triton kernels.

Public API: :class:`FADE`, :class:`FADELite`, :func:`fade`, :func:`carafe`,
:func:`convert_eccv_state_dict`. Importing the package does not import triton.
"""
from .checkpoint import convert_eccv_state_dict
from .functional import carafe, fade
from .modules import FADE, FADELite

__all__ = ["FADE", "FADELite", "fade", "carafe", "convert_eccv_state_dict"]
__version__ = "0.1.0"
