#!/usr/bin/env bash
# A GPU session's work, in stages that each fit one 10-minute call on a lent GPU machine
# (run from the repository root; the image's python3 has torch, triton, pytest, matplotlib, tqdm).
# Everything it writes goes under $OUT (default bench/results/_scratch), logs included.
#
#   bash bench/gpu_session.sh tests      # whole suite on CUDA: compiled kernels, bf16, TF32, >2**31 elements
#   bash bench/gpu_session.sh headline   # B=8, C=256, 64^2 -> 128^2; float32 + bfloat16; NCHW + channels_last
#   bash bench/gpu_session.sh sweep      # the 'gpu' preset: resolution, channel, batch and dtype sweeps
#   bash bench/gpu_session.sh mmcv       # build mmcv from a carried bench/.mmcv-wheelhouse (build_mmcv.sh)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/_scratch}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, torch.cuda.get_device_name())"
} | tee "$OUT/device.txt"
case "${1:-}" in
  tests) FADE_TEST_DEVICE=cuda python3 -m pytest -q -p no:cacheprovider -rs tests 2>&1 | tee "$OUT/tests_cuda.log" ;;
  headline) python3 -m bench --preset headline --out "$OUT/headline" 2>&1 | tee "$OUT/headline.log" ;;
  sweep) python3 -m bench --preset gpu --out "$OUT/gpu" 2>&1 | tee "$OUT/gpu.log" ;;
  mmcv) bash bench/build_mmcv.sh build 2>&1 | tee "$OUT/mmcv_build.log" ;;
  *) echo "usage: $0 tests|headline|sweep|mmcv" >&2; exit 2 ;;
esac
