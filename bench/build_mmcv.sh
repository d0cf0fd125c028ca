#!/usr/bin/env bash
# Build mmcv (default 2.2.0) with its compiled CUDA ops against the installed torch, from the
# package registry's source distribution (the registry has no mmcv wheels), and check that
# mmcv.ops.carafe runs on the GPU. See bench/README.md ("The mmcv path").
#
#   bash bench/build_mmcv.sh download   # on a machine with network: sdist + runtime deps -> wheelhouse
#   bash bench/build_mmcv.sh build      # on the CUDA machine (no network needed): build, install, check
#   bash bench/build_mmcv.sh            # both, on a CUDA machine with network
#
# Environment: MMCV_VERSION (2.2.0), MMCV_WHEELHOUSE (bench/.mmcv-wheelhouse),
# TORCH_CUDA_ARCH_LIST (default: the visible GPU's capability, e.g. 9.0 on H100/H200),
# MAX_JOBS (default: the core count).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${MMCV_VERSION:-2.2.0}"
WH="${MMCV_WHEELHOUSE:-bench/.mmcv-wheelhouse}"
# mmcv's setup.py imports pkg_resources, which setuptools >= 81 no longer ships; torch >= 2.13
# needs setuptools >= 77.0.3.
SETUPTOOLS='setuptools>=77.0.3,<81'

download() {
  mkdir -p "$WH"
  python -m pip download -d "$WH" "$SETUPTOOLS"
  python -m pip install "$SETUPTOOLS"
  python -m pip download --no-deps --no-binary :all: --no-build-isolation -d "$WH" "mmcv==$VERSION"
  # what `import mmcv.ops` needs at run time besides torch and numpy
  python -m pip download --no-deps -d "$WH" mmengine addict yapf termcolor opencv-python-headless \
    pyyaml platformdirs tomli rich markdown-it-py mdurl pygments regex
}

build() {
  python -c "import torch; assert torch.cuda.is_available(), 'build needs a CUDA GPU'"
  python -m pip install --no-index --find-links "$WH" "$SETUPTOOLS"
  python -m pip install --no-index --find-links "$WH" --no-deps mmengine addict yapf termcolor \
    opencv-python-headless pyyaml platformdirs tomli rich markdown-it-py mdurl pygments regex || true
  local arch
  arch="${TORCH_CUDA_ARCH_LIST:-$(python -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}"
  echo "building mmcv $VERSION for sm $arch with $(nproc) jobs (several minutes)"
  MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    python -m pip wheel --no-build-isolation --no-deps -w "$WH/built" "$WH/mmcv-$VERSION.tar.gz"
  python -m pip install --no-deps --force-reinstall "$WH"/built/mmcv-*.whl
  python - <<'PY'
import torch
from mmcv.ops import carafe  # fails here if the wheel lacks the compiled _ext
import fade_triton as ft
x = torch.randn(2, 16, 9, 7, device="cuda")
m = torch.softmax(torch.randn(2, 25, 18, 14, device="cuda"), 1)
err = (carafe(x, m, 5, 1, 2) - ft.carafe(x, m, 5, 1, 2, backend="torch")).abs().max().item()
print(f"mmcv.ops.carafe works on {torch.cuda.get_device_name()}; max |mmcv - fade_triton| = {err:.2e}")
assert err < 1e-4
PY
}

case "${1:-all}" in
  download) download ;;
  build) build ;;
  all) download && build ;;
  *) echo "usage: $0 [download|build|all]" >&2; exit 2 ;;
esac
