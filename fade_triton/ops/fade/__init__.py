"""FADE / FADE-Lite. ``op.py``: the ``fade_triton::fade`` operator (Triton kernels or eager
PyTorch), its autograd and FLOP formula, and the entry points of the ``triton`` and ``torch``
backends; ``triton_impl.py``: the 3-launch forward and 7-launch backward on the shared kernels;
``fold.py``: the 1x1 compressors folded into the 3x3 (and the cache of the folded weights);
``unfold_grad.py``: the inverse, the module's weight gradients from the folded ones;
``eager.py``: the ``torch`` backend; ``naive.py``: the official form and the export form."""
