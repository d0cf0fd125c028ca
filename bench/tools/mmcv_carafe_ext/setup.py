"""mmcv's CARAFE CUDA op built on its own, as the Python module ``mmcv_carafe_ext``.

A full mmcv build compiles about 60 CUDA files and 60 C++ files; this one compiles mmcv's CARAFE
kernels and launcher (taken unchanged from mmcv's source distribution, checked by its SHA-256)
and ``binding.cpp``. ``fade_triton``'s ``mmcv`` backend uses it, wrapped in mmcv's own
``CARAFEFunction``, when ``mmcv.ops`` cannot be imported. Build it on the CUDA machine:

    MMCV_SDIST=bench/.mmcv-wheelhouse/mmcv-2.2.0.tar.gz \
        python -m pip install --no-build-isolation --no-deps bench/tools/mmcv_carafe_ext

(``bash bench/tools/build_mmcv.sh carafe`` does that, then checks the op on the GPU.)
Environment: ``MMCV_SDIST`` (required), ``TORCH_CUDA_ARCH_LIST`` (e.g. 9.0), ``MAX_JOBS``.
"""
import hashlib
import os
import tarfile
from pathlib import Path

from setuptools import setup
from torch.utils import cpp_extension
from torch.utils.cpp_extension import BuildExtension, CUDAExtension

HERE = Path(__file__).resolve().parent
SDIST_SHA256 = {"mmcv-2.2.0.tar.gz": "ac479247e808d8802f89eadf04d4118de86bdfe81361ec5aed0cc1bf731c67c9"}
CSRC = "mmcv/ops/csrc"
FILES = (f"{CSRC}/common/cuda/carafe_cuda_kernel.cuh", f"{CSRC}/common/cuda/common_cuda_helper.hpp",
         f"{CSRC}/common/pytorch_cuda_helper.hpp", f"{CSRC}/common/pytorch_cpp_helper.hpp",
         f"{CSRC}/pytorch/cuda/carafe_cuda.cu")


def extract(sdist: Path, dest: Path) -> None:
    """Copy FILES out of the sdist into ``dest``, after checking the sdist's SHA-256."""
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if SDIST_SHA256.get(sdist.name) != digest:
        raise SystemExit(f"{sdist}: unknown sdist or SHA-256 {digest}; expected one of {SDIST_SHA256}")
    root = sdist.name.removesuffix(".tar.gz")
    with tarfile.open(sdist) as tar:
        for name in FILES:
            out = dest / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(tar.extractfile(f"{root}/{name}").read())


# torch's ATen/cuda/CUDAContextLight.h includes the cuBLAS, cuSPARSE and cuSOLVER headers for
# handle types CARAFE never uses. A CUDA toolkit without them (or with them only in pip's nvidia
# packages) gets the handle typedefs alone, as those headers declare them.
LIBRARY_HEADERS = {
    "cusparse.h": "typedef struct cusparseContext *cusparseHandle_t;\ntypedef int cusparseStatus_t;\n",
    "cublas_v2.h": "typedef struct cublasContext *cublasHandle_t;\ntypedef int cublasStatus_t;\n",
    "cublasLt.h": "typedef struct cublasLtContext *cublasLtHandle_t;\n",
    "cusolver_common.h": "typedef int cusolverStatus_t;\n#define CUSOLVER_STATUS_SUCCESS 0\n",
    "cusolverDn.h": '#include "cusolver_common.h"\ntypedef struct cusolverDnContext *cusolverDnHandle_t;\n',
}


def library_header_dirs(dest: Path) -> list[str]:
    """Include directories that provide LIBRARY_HEADERS: the toolkit's, pip's nvidia packages',
    and ``dest`` with handle-type stubs for any header found in neither."""
    toolkit = Path(cpp_extension.CUDA_HOME or "/usr/local/cuda") / "include"
    dirs, missing = [], []
    try:
        import nvidia
        pip_dirs = sorted({str(h.parent) for root in nvidia.__path__ for h in Path(root).glob("**/include/cu*.h")})
    except ImportError:
        pip_dirs = []
    for name in LIBRARY_HEADERS:
        if (toolkit / name).exists():
            continue
        found = [d for d in pip_dirs if (Path(d) / name).exists()]
        dirs += [d for d in found[:1] if d not in dirs]
        missing += [] if found else [name]
    for name in missing:
        dest.mkdir(parents=True, exist_ok=True)
        (dest / name).write_text("#pragma once\n" + LIBRARY_HEADERS[name])
    if missing:
        print(f"mmcv_carafe_ext: {', '.join(missing)} not in {toolkit} nor pip's nvidia packages: "
              f"handle-type stubs in {dest}")
    return dirs + ([str(dest)] if missing else [])


sdist = os.environ.get("MMCV_SDIST")
if not sdist:
    raise SystemExit("set MMCV_SDIST to the path of mmcv's source distribution (mmcv-2.2.0.tar.gz)")
SRC = HERE / "mmcv_src"
extract(Path(sdist).resolve(), SRC)

setup(
    name="mmcv_carafe_ext",
    version="2.2.0",
    ext_modules=[CUDAExtension(
        name="mmcv_carafe_ext",
        sources=[str(SRC / f"{CSRC}/pytorch/cuda/carafe_cuda.cu"), str(HERE / "binding.cpp")],
        include_dirs=[str(SRC / f"{CSRC}/common"), str(SRC / f"{CSRC}/common/cuda"),
                      *library_header_dirs(HERE / "mmcv_src" / "stub_include")],
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3"]},
    )],
    cmdclass={"build_ext": BuildExtension},
)
