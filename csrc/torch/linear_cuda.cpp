// linear and linear_tanh on CUDA: checks and operands (linear.h), then the launchers of
// csrc/cuda/linear.cu on the current stream.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cuda_glue.h"
#include "linear.h"

namespace pymakemore {
namespace {

at::Tensor linear_forward_cuda(const char* op, Activation act, const at::Tensor& input,
                               const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  calls::check_linear(at::kCUDA, op, input, weight, bias);
  const c10::cuda::CUDAGuard guard(input.device());
  const calls::Linear c = calls::linear(input, weight, bias, &calls::empty);
  check_launch(op, cuda::linear_forward(dtype_of(c.x), c.x.data_ptr(), c.w.data_ptr(),
                                        ptr_or_null(c.b), c.rows, c.in_features,
                                        c.out_features, act, c.y.data_ptr(), stream()));
  return c.y;
}

LinearGrads linear_backward_cuda(
    const char* op, Activation act, const at::Tensor& grad_output, const at::Tensor& output,
    const at::Tensor& input, const at::Tensor& weight, std::array<bool, 3> output_mask) {
  calls::check_linear_backward(at::kCUDA, op, grad_output, output, input, weight);
  const c10::cuda::CUDAGuard guard(input.device());
  const calls::LinearBackward c =
      calls::linear_backward(grad_output, output, input, weight, output_mask, &calls::empty);
  at::Tensor ws = workspace(
      cuda::linear_backward_workspace_bytes(c.rows, c.in_features, c.out_features), c.x);
  check_launch(op, cuda::linear_backward(dtype_of(c.x), c.gy.data_ptr(), c.y_ptr(),
                                         c.x.data_ptr(), c.w.data_ptr(), c.rows, c.in_features,
                                         c.out_features, act, c.grad_x_ptr(), c.grad_w_ptr(),
                                         c.grad_b_ptr(), ws.data_ptr(), stream()));
  return {c.grad_x, c.grad_w, c.grad_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(pymakemore, CUDA, m) {
  LinearOps<linear_forward_cuda, linear_backward_cuda>::register_into(m);
}

}  // namespace pymakemore
