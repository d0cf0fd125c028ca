"""CARAFE (``mmcv.ops.carafe``'s function): ``op.py`` holds the ``fade_triton::carafe`` operator
(Triton kernels or eager PyTorch), its autograd and FLOP formula; ``naive.py`` the unfold form
(the benchmark's baseline) and the export form."""
