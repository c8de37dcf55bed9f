// batch_norm_tanh on CUDA: checks and operands (batch_norm_tanh.h), then the launchers of
// csrc/cuda/batch_norm.cu on the current stream; float16 and bfloat16 compute in float32.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cuda_glue.h"
#include "batch_norm_tanh.h"

namespace pymakemore {
namespace {

batch_norm::Outputs batch_norm_tanh_cuda(const at::Tensor& input,
                                         const c10::optional<at::Tensor>& weight,
                                         const c10::optional<at::Tensor>& bias,
                                         const c10::optional<at::Tensor>& running_mean,
                                         const c10::optional<at::Tensor>& running_var,
                                         bool training, double momentum, double eps,
                                         bool unbiased) {
  batch_norm::check_args(at::kCUDA, input, weight, bias, running_mean, running_var, training);
  const c10::cuda::CUDAGuard guard(input.device());
  batch_norm::Prepared p = batch_norm::prepare(input, weight, bias, running_mean, running_var,
                                               batch_norm::stats_dtype(input));
  check_launch("batch_norm_tanh",
               cuda::batch_norm_tanh_forward(
                   dtype_of(p.x), p.x.data_ptr(), p.m, p.c, ptr_or_null(p.weight),
                   ptr_or_null(p.bias), ptr_or_null(p.running_mean), ptr_or_null(p.running_var),
                   training, momentum, eps, unbiased, p.y.data_ptr(), p.save_mean.data_ptr(),
                   p.save_invstd.data_ptr(), stream()));
  return batch_norm::outputs(p, input, running_mean, running_var);
}

batch_norm::Grads batch_norm_tanh_backward_cuda(const at::Tensor& grad_output,
                                                const at::Tensor& output,
                                                const at::Tensor& input,
                                                const c10::optional<at::Tensor>& weight,
                                                const at::Tensor& save_mean,
                                                const at::Tensor& save_invstd, bool training,
                                                bool unbiased, std::array<bool, 3> mask) {
  batch_norm::check_backward_args(at::kCUDA, grad_output, output, input, save_mean,
                                  save_invstd);
  const c10::cuda::CUDAGuard guard(input.device());
  batch_norm::PreparedBackward p = batch_norm::prepare_backward(grad_output, output, input,
                                                                weight, save_mean, save_invstd,
                                                                mask);
  check_launch("batch_norm_tanh_backward",
               cuda::batch_norm_tanh_backward(
                   dtype_of(p.x), p.gy.data_ptr(), p.y.data_ptr(), p.x.data_ptr(), p.m, p.c,
                   ptr_or_null(p.weight), p.mean.data_ptr(), p.invstd.data_ptr(), training,
                   unbiased, ptr_or_null(p.gx), ptr_or_null(p.gw), ptr_or_null(p.gb), stream()));
  return batch_norm::grads(p, input, weight);
}

}  // namespace

TORCH_LIBRARY_IMPL(pymakemore, CUDA, m) {
  m.impl("batch_norm_tanh", &batch_norm_tanh_cuda);
  m.impl("batch_norm_tanh_backward", &batch_norm_tanh_backward_cuda);
}

}  // namespace pymakemore
