#!/usr/bin/env bash
# Build mmcv's CARAFE for the `mmcv` path, against the installed torch, from the package
# registry's source distribution (the registry has no mmcv wheels), and check it on the GPU
# against fade_triton (forward and both gradients). See bench/README.md ("The mmcv path").
#
#   bash bench/tools/build_mmcv.sh download   # on a machine with network: sdist + runtime deps -> wheelhouse
#   bash bench/tools/build_mmcv.sh carafe     # on the CUDA machine: only mmcv's CARAFE op (2 files, about a
#                                       # minute), as the module mmcv_carafe_ext (bench/tools/mmcv_carafe_ext)
#   bash bench/tools/build_mmcv.sh build      # on the CUDA machine: all of mmcv with its ops (about 120
#                                       # files), install, check
#   bash bench/tools/build_mmcv.sh            # download + build, on a CUDA machine with network
#
# Environment: MMCV_VERSION (2.2.0), MMCV_WHEELHOUSE (bench/.mmcv-wheelhouse), PYTHON (python3),
# TORCH_CUDA_ARCH_LIST (default: the visible GPU's capability, e.g. 9.0 on H100/H200),
# MAX_JOBS (default: the core count).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
VERSION="${MMCV_VERSION:-2.2.0}"
WH="${MMCV_WHEELHOUSE:-bench/.mmcv-wheelhouse}"
# mmcv's setup.py imports pkg_resources, which setuptools >= 81 no longer ships; torch >= 2.13
# needs setuptools >= 77.0.3.
SETUPTOOLS='setuptools>=77.0.3,<81'

download() {
  mkdir -p "$WH"
  "$PY" -m pip download -d "$WH" "$SETUPTOOLS"
  "$PY" -m pip install "$SETUPTOOLS"
  "$PY" -m pip download --no-deps --no-binary :all: --no-build-isolation -d "$WH" "mmcv==$VERSION"
  # what `import mmcv.ops` needs at run time besides torch and numpy
  "$PY" -m pip download --no-deps -d "$WH" mmengine addict yapf termcolor opencv-python-headless \
    pyyaml platformdirs tomli rich markdown-it-py mdurl pygments regex
}

cuda_arch() {
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'the build needs a CUDA GPU'"
  echo "${TORCH_CUDA_ARCH_LIST:-$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}"
}

setuptools() {  # the image's own setuptools if it can build, else the one in the wheelhouse
  "$PY" -c "import setuptools, sys; v = int(setuptools.__version__.split('.')[0]); sys.exit(not 77 <= v < 81)" \
    || "$PY" -m pip install --no-index --find-links "$WH" "$SETUPTOOLS"
}

check() {  # mmcv's CARAFE (whichever fade_triton finds) against fade_triton's torch path, on the GPU
  "$PY" - <<'PY'
import torch
import fade_triton as ft
from fade_triton.ops.mmcv_path import load_mmcv_carafe, mmcv_carafe_source
carafe = load_mmcv_carafe()
for dtype, tol in ((torch.float32, 1e-4), (torch.float16, 2e-2)):
    for groups in (1, 4):
        x = torch.randn(2, 16, 9, 7, device="cuda", dtype=dtype, requires_grad=True)
        m = torch.softmax(torch.randn(2, groups, 25, 18, 14, device="cuda"), 2).flatten(1, 2).to(dtype)
        m.requires_grad_()
        g = torch.randn(2, 16, 18, 14, device="cuda", dtype=dtype)
        got = [carafe(x, m, 5, groups, 2)]
        got += torch.autograd.grad(got[0], (x, m), g)
        ref = [ft.carafe(x, m, 5, groups, 2, backend="torch")]
        ref += torch.autograd.grad(ref[0], (x, m), g)
        err = max(((a.float() - b.float()).abs().max() / b.float().abs().max()).item() for a, b in zip(got, ref))
        print(f"{mmcv_carafe_source()} on {torch.cuda.get_device_name()}, {dtype}, groups {groups}: "
              f"output and gradients within {err:.1e} (max abs. error / max abs.) of fade_triton's torch path")
        assert err < tol, err
PY
}

carafe() {
  local arch; arch="$(cuda_arch)"
  setuptools
  echo "building mmcv $VERSION's CARAFE op alone for sm $arch with ${MAX_JOBS:-$(nproc)} jobs"
  # absolute: pip builds in the package's own directory, where a relative path would not resolve
  MMCV_SDIST="$(realpath "$WH/mmcv-$VERSION.tar.gz")" TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "$PY" -m pip install --no-index --no-build-isolation --no-deps bench/tools/mmcv_carafe_ext
  check
}

build() {
  local arch; arch="$(cuda_arch)"
  setuptools
  "$PY" -m pip install --no-index --find-links "$WH" --no-deps mmengine addict yapf termcolor \
    opencv-python-headless pyyaml platformdirs tomli rich markdown-it-py mdurl pygments regex || true
  echo "building mmcv $VERSION for sm $arch with ${MAX_JOBS:-$(nproc)} jobs (several minutes)"
  MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "$PY" -m pip wheel --no-build-isolation --no-deps -w "$WH/built" "$WH/mmcv-$VERSION.tar.gz"
  "$PY" -m pip install --no-deps --force-reinstall "$WH"/built/mmcv-*.whl
  check
}

case "${1:-all}" in
  download) download ;;
  build) build ;;
  carafe) carafe ;;
  all) download && build ;;
  *) echo "usage: $0 [download|carafe|build|all]" >&2; exit 2 ;;
esac
