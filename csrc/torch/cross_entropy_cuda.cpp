// cross_entropy, cross_entropy_with_grad, cross_entropy_backward and scale_grad_ on CUDA:
// checks and operands (cross_entropy.h), then the launchers of csrc/cuda/cross_entropy.cu on
// the current stream.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cuda_glue.h"
#include "cross_entropy.h"

namespace pymakemore {
namespace {

// (loss, lse) and, with_grad, the gradient for grad_loss = 1 from the same pass.
CrossEntropyOutputs cross_entropy_cuda(
    const char* op, const at::Tensor& input, const at::Tensor& target,
    const c10::optional<at::Tensor>& weight, c10::string_view reduction, int64_t ignore_index,
    double label_smoothing, bool with_grad) {
  const CrossEntropyOptions opt =
      calls::check_cross_entropy(at::kCUDA, op, input, target, weight, reduction, ignore_index,
                                 label_smoothing, with_grad);
  const c10::cuda::CUDAGuard guard(input.device());
  const calls::CrossEntropy c =
      calls::cross_entropy(input, target, weight, opt, with_grad, &calls::empty);
  at::Tensor ws = workspace(cuda::cross_entropy_workspace_bytes(c.n()), c.x);
  check_launch(op, cuda::cross_entropy_forward(
                       dtype_of(c.x), index_dtype_of(c.t), c.x.data_ptr(), c.t.data_ptr(),
                       ptr_or_null(c.w), c.n(), c.classes(), opt, c.loss.data_ptr(),
                       c.lse.data_ptr<double>(), with_grad ? c.grad.data_ptr() : nullptr,
                       ws.data_ptr(), stream()));
  return {c.loss, c.lse, c.grad};
}

// grad *= grad_loss; whether grad_loss is 1 is decided on the device (no host read).
void scale_grad_cuda(at::Tensor& grad, const at::Tensor& grad_loss) {
  calls::check_scale_grad(at::kCUDA, grad, grad_loss);
  const c10::cuda::CUDAGuard guard(grad.device());
  const at::Tensor factor = grad_loss.contiguous();
  check_launch("scale_grad_", cuda::scale_grad(dtype_of(grad), grad.data_ptr(), grad.numel(),
                                               factor.data_ptr(), stream()));
}

at::Tensor cross_entropy_backward_cuda(const at::Tensor& grad_loss, const at::Tensor& input,
                                       const at::Tensor& target,
                                       const c10::optional<at::Tensor>& weight,
                                       const at::Tensor& lse, c10::string_view reduction,
                                       int64_t ignore_index, double label_smoothing) {
  const CrossEntropyOptions opt = calls::check_cross_entropy_backward(
      at::kCUDA, grad_loss, input, target, weight, lse, reduction, ignore_index,
      label_smoothing);
  const c10::cuda::CUDAGuard guard(input.device());
  const calls::CrossEntropyBackward c =
      calls::cross_entropy_backward(grad_loss, input, target, weight, lse, &calls::empty);
  at::Tensor ws = workspace(cuda::cross_entropy_workspace_bytes(c.n()), c.x);
  check_launch("cross_entropy_backward",
               cuda::cross_entropy_backward(dtype_of(c.x), index_dtype_of(c.t), c.g.data_ptr(),
                                            c.x.data_ptr(), c.t.data_ptr(), ptr_or_null(c.w),
                                            c.lse.data_ptr<double>(), c.n(), c.classes(), opt,
                                            c.grad_input.data_ptr(), ws.data_ptr(), stream()));
  return c.grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(pymakemore, CUDA, m) {
  CrossEntropyOps<cross_entropy_cuda>::register_into(m);
  m.impl("cross_entropy_backward", &cross_entropy_backward_cuda);
  m.impl("scale_grad_", &scale_grad_cuda);
}

}  // namespace pymakemore
