"""The operators and their kernels. ``fade`` and ``carafe`` define the ``fade_triton::``
operators (Triton kernels, or the pure-PyTorch implementation); ``semi_shift`` and
``reassemble`` hold the kernels and import triton, which the operators import only where it
is installed. ``fade_triton.functional`` imports all of this at the first call, not at import
(so ``TRITON_INTERPRET`` is read when the user wants it to be)."""
