"""Tools beside the benchmark pipeline: what the kernels compile to (``aot``), the bytes they move
(``traffic``), the host time per call (``host_time``), one checked call for compute-sanitizer and
Nsight Compute (``one_step``), ncu's CSV as a table (``ncu_summary``), and the GPU session's
scripts (``gpu_session.sh``, ``build_mmcv.sh``, ``mmcv_carafe_ext/``). Run each with
``python -m bench.tools.NAME --help``."""
