// The Python binding of mmcv's CARAFE CUDA op, built on its own (see setup.py).
// The launchers are mmcv's own (mmcv/ops/csrc/pytorch/cuda/carafe_cuda.cu, Apache-2.0,
// Copyright (c) OpenMMLab), compiled unchanged from mmcv's source distribution; this file only
// exposes them under the names and keyword arguments of mmcv's _ext (mmcv/ops/csrc/pytorch/
// pybind.cpp), so mmcv's CARAFEFunction calls them exactly as it calls mmcv._ext.
#include <torch/extension.h>

using at::Tensor;

void CARAFEForwardCUDAKernelLauncher(const Tensor features, const Tensor masks,
                                     Tensor rfeatures, Tensor routput,
                                     Tensor rmasks, Tensor output,
                                     const int kernel_size, const int group_size,
                                     const int scale_factor);

void CARAFEBackwardCUDAKernelLauncher(
    const Tensor top_grad, const Tensor rfeatures, const Tensor masks,
    Tensor rtop_grad, Tensor rbottom_grad_hs, Tensor rbottom_grad,
    Tensor rmask_grad, Tensor bottom_grad, Tensor mask_grad,
    const int kernel_size, const int group_size, const int scale_factor);

// mmcv's dispatcher (DISPATCH_DEVICE_IMPL) rejects tensors on different devices or not on CUDA.
static void check_cuda(std::initializer_list<Tensor> tensors) {
  const auto device = tensors.begin()->device();
  for (const auto& t : tensors) {
    TORCH_CHECK(t.is_cuda(), "mmcv_carafe_ext: CUDA tensors only, got ", t.device());
    TORCH_CHECK(t.device() == device, "mmcv_carafe_ext: tensors on ", device, " and ", t.device());
  }
}

void carafe_forward(Tensor features, Tensor masks, Tensor rfeatures, Tensor routput,
                    Tensor rmasks, Tensor output, int kernel_size, int group_size,
                    int scale_factor) {
  check_cuda({features, masks, rfeatures, routput, rmasks, output});
  CARAFEForwardCUDAKernelLauncher(features, masks, rfeatures, routput, rmasks, output,
                                  kernel_size, group_size, scale_factor);
}

void carafe_backward(Tensor top_grad, Tensor rfeatures, Tensor masks, Tensor rtop_grad,
                     Tensor rbottom_grad_hs, Tensor rbottom_grad, Tensor rmask_grad,
                     Tensor bottom_grad, Tensor mask_grad, int kernel_size, int group_size,
                     int scale_factor) {
  check_cuda({top_grad, rfeatures, masks, rtop_grad, rbottom_grad_hs, rbottom_grad,
              rmask_grad, bottom_grad, mask_grad});
  CARAFEBackwardCUDAKernelLauncher(top_grad, rfeatures, masks, rtop_grad, rbottom_grad_hs,
                                   rbottom_grad, rmask_grad, bottom_grad, mask_grad,
                                   kernel_size, group_size, scale_factor);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("carafe_forward", &carafe_forward, "carafe_forward", py::arg("features"),
        py::arg("masks"), py::arg("rfeatures"), py::arg("routput"), py::arg("rmasks"),
        py::arg("output"), py::arg("kernel_size"), py::arg("group_size"),
        py::arg("scale_factor"));
  m.def("carafe_backward", &carafe_backward, "carafe_backward", py::arg("top_grad"),
        py::arg("rfeatures"), py::arg("masks"), py::arg("rtop_grad"),
        py::arg("rbottom_grad_hs"), py::arg("rbottom_grad"), py::arg("rmask_grad"),
        py::arg("bottom_grad"), py::arg("mask_grad"), py::arg("kernel_size"),
        py::arg("group_size"), py::arg("scale_factor"));
}
