#!/usr/bin/env bash
# A GPU session's work, in stages (run from the repository root; the image's python3 has torch,
# triton, pytest, matplotlib, tqdm). One call may run several stages in order:
#   bash bench/tools/gpu_session.sh mmcv-carafe tests sanitize
# Everything it writes goes under $OUT (default bench/results/_scratch), logs included.
#
#   tests        the whole suite on CUDA: compiled kernels, bf16, TF32 vs IEEE, >2**31 elements
#   rerun        the tests the 2026-11-30 session could not explain (its unexplained_on_cuda.txt),
#                one process, no xdist, full tracebacks
#   sanitize     compute-sanitizer memcheck and racecheck on one forward+backward of FADE, FADE-Lite
#                and carafe (groups 1 and 4), small shapes (bench.one_step); the pass/fail of each
#                tool is its exit status (--error-exitcode); SANITIZE_TIMEOUT (s) bounds each tool
#   sanitize-more   the same under initcheck and synccheck
#   mmcv-carafe  build mmcv's CARAFE op alone (about a minute) from a carried bench/.mmcv-wheelhouse
#   mmcv         build all of mmcv with its ops instead (about 120 files: may not fit one call)
#   headline     B=8, C=256, 64^2 -> 128^2; float32 + bfloat16; NCHW + channels_last; every provider
#   ncu          Nsight Compute (--set full, clocks left alone) on the triton path's kernels, one
#                forward+backward at the headline shape, bf16 and fp32 NCHW and bf16 channels_last
#                ($NCU_CASES), each with its raw CSV and a summary table (bench.ncu_summary)
#   sweep        the 'gpu' preset: resolution, channel, batch and dtype sweeps
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-bench/results/_scratch}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
KERNELS='regex:conv3x3_kernel|conv3x3_weight_grad_kernel|unfold_weight_grad_kernel|reassemble_(fwd|bwd|bwd_feat)(_dot)?_kernel'
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, torch.cuda.get_device_name())"
  command -v ncu >/dev/null && ncu --version | tail -1
  command -v compute-sanitizer >/dev/null && compute-sanitizer --version | tail -1
} | tee "$OUT/device.txt"

sanitize() {  # tool...
  local tool status=0
  for tool in "$@"; do
    echo "== compute-sanitizer --tool $tool"
    # without the caching allocator every tensor is its own allocation, so memcheck sees overruns
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout "${SANITIZE_TIMEOUT:-900}" compute-sanitizer --tool "$tool" --error-exitcode 3 \
      python3 -m bench.tools.one_step --shape small 2>&1 | tee "$OUT/sanitize_$tool.log"
    local rc=$?  # with pipefail: compute-sanitizer's status, not tee's
    echo "== compute-sanitizer --tool $tool: exit $rc" | tee -a "$OUT/sanitize_summary.txt"
    [ "$rc" = 0 ] || status=1
  done
  return $status
}

profile() {
  local spec dtype layout name rc status=0
  for spec in ${NCU_CASES:-bfloat16:nchw float32:nchw bfloat16:channels_last}; do
    dtype="${spec%%:*}" layout="${spec##*:}" name="ncu_headline_${dtype}_${layout}"
    ncu --clock-control none --set full --kernel-name "$KERNELS" -f -o "$OUT/$name" \
      python3 -m bench.tools.one_step --shape headline --ops fade --dtype "$dtype" --layout "$layout" --no-poison \
      > "$OUT/$name.log" 2>&1
    rc=$?
    echo "ncu $dtype $layout: exit $rc ($(grep -c '==PROF== Profiling' "$OUT/$name.log") kernels profiled)"
    [ "$rc" = 0 ] || status=1
    ncu --import "$OUT/$name.ncu-rep" --page raw --csv --print-units base > "$OUT/$name.csv" \
      && python3 -m bench.tools.ncu_summary "$OUT/$name.csv" --dtype "$dtype" --layout "$layout" | tee "$OUT/$name.md" \
      || status=1
  done
  return $status
}

[ $# -gt 0 ] || { echo "usage: $0 STAGE... (tests rerun sanitize sanitize-more mmcv-carafe mmcv headline ncu sweep)" >&2; exit 2; }
status=0
for stage in "$@"; do
  echo "=== stage $stage"
  case "$stage" in
    # PYTEST_ARGS: e.g. "-n 8 -v" (pytest-xdist is in the GPU image; -v keeps each verdict in the
    # log even when a time limit cuts the run short)
    tests) FADE_TEST_DEVICE=cuda python3 -m pytest -p no:cacheprovider -rfEs ${PYTEST_ARGS:--q} tests 2>&1 \
             | tee "$OUT/tests_cuda.log" ;;
    rerun) FADE_TEST_DEVICE=cuda python3 -m pytest -p no:cacheprovider -p no:xdist -v --tb=long \
             @bench/results/h200_2026-11-30_gpu-session/unexplained_on_cuda.txt 2>&1 | tee "$OUT/tests_rerun.log" ;;
    sanitize) sanitize memcheck racecheck ;;
    sanitize-more) sanitize initcheck synccheck ;;
    # the built module is copied to $OUT/mmcv_carafe_ext/: carried to a later (bare) machine and put
    # on PYTHONPATH, it saves the rebuild
    mmcv-carafe) bash bench/tools/build_mmcv.sh carafe 2>&1 | tee "$OUT/mmcv_carafe_build.log" \
                   && mkdir -p "$OUT/mmcv_carafe_ext" \
                   && cp "$(python3 -c 'import torch, mmcv_carafe_ext; print(mmcv_carafe_ext.__file__)')" "$OUT/mmcv_carafe_ext/" ;;
    mmcv) bash bench/tools/build_mmcv.sh build 2>&1 | tee "$OUT/mmcv_build.log" ;;
    headline) python3 -m bench --preset headline --out "$OUT/headline" 2>&1 | tee "$OUT/headline.log" ;;
    ncu) profile ;;
    sweep) python3 -m bench --preset gpu --out "$OUT/gpu" 2>&1 | tee "$OUT/gpu.log" ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
  rc=$?  # with pipefail: the stage's own status, not tee's
  echo "=== stage $stage: exit $rc" | tee -a "$OUT/stages.txt"
  [ "$rc" = 0 ] || status=1
done
exit $status
