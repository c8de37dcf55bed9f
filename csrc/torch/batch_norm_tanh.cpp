// batch_norm_tanh on the CPU: checks and operands (batch_norm_tanh.h), then the torch-free
// kernels of csrc/cpu/kernels/batch_norm.cpp; float16 and bfloat16 compute in float32.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "batch_norm_tanh.h"
#include "cpu_glue.h"
#include "pymakemore/kernels.h"

namespace pymakemore {
namespace {

using batch_norm::OptionalTensor;

batch_norm::Outputs forward_cpu(const at::Tensor& input, const OptionalTensor& weight,
                                const OptionalTensor& bias, const OptionalTensor& running_mean,
                                const OptionalTensor& running_var, bool training,
                                double momentum, double eps, bool unbiased) {
  batch_norm::check_args(at::kCPU, input, weight, bias, running_mean, running_var, training);
  batch_norm::Prepared p = batch_norm::prepare(input, weight, bias, running_mean, running_var,
                                               batch_norm::stats_dtype(input));
  AT_DISPATCH_FLOATING_TYPES(p.x.scalar_type(), "batch_norm_tanh", [&] {
    batch_norm_tanh_forward<scalar_t>(
        p.x.data_ptr<scalar_t>(), p.m, p.c, ptr_or_null<scalar_t>(p.weight),
        ptr_or_null<scalar_t>(p.bias), ptr_or_null<scalar_t>(p.running_mean),
        ptr_or_null<scalar_t>(p.running_var), training, momentum, eps, unbiased,
        p.y.data_ptr<scalar_t>(), p.save_mean.data_ptr<scalar_t>(),
        p.save_invstd.data_ptr<scalar_t>(), torch_parallel_for());
  });
  return batch_norm::outputs(p, input, running_mean, running_var);
}

batch_norm::Grads backward_cpu(const at::Tensor& grad_output, const at::Tensor& output,
                               const at::Tensor& input, const OptionalTensor& weight,
                               const at::Tensor& save_mean, const at::Tensor& save_invstd,
                               bool training, bool unbiased, std::array<bool, 3> mask) {
  batch_norm::check_backward_args(at::kCPU, grad_output, output, input, save_mean, save_invstd);
  batch_norm::PreparedBackward p = batch_norm::prepare_backward(grad_output, output, input,
                                                                weight, save_mean, save_invstd,
                                                                mask);
  AT_DISPATCH_FLOATING_TYPES(p.x.scalar_type(), "batch_norm_tanh_backward", [&] {
    batch_norm_tanh_backward<scalar_t>(
        p.gy.data_ptr<scalar_t>(), p.y.data_ptr<scalar_t>(), p.x.data_ptr<scalar_t>(), p.m, p.c,
        ptr_or_null<scalar_t>(p.weight), p.mean.data_ptr<scalar_t>(),
        p.invstd.data_ptr<scalar_t>(), training, unbiased, ptr_or_null<scalar_t>(p.gx),
        ptr_or_null<scalar_t>(p.gw), ptr_or_null<scalar_t>(p.gb), torch_parallel_for());
  });
  return batch_norm::grads(p, input, weight);
}

}  // namespace

TORCH_LIBRARY_IMPL(pymakemore, CPU, m) {
  m.impl("batch_norm_tanh", &forward_cpu);
  m.impl("batch_norm_tanh_backward", &backward_cpu);
}

}  // namespace pymakemore
