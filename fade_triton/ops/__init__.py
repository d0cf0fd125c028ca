"""Kernels. ``semi_shift`` and ``reassemble`` import triton; import them only when the
``triton`` backend runs (so ``TRITON_INTERPRET`` is read when the user wants it to be)."""
