// batch_norm_tanh on the CPU: checks and operands (batch_norm_tanh.h), then the torch-free
// kernels of csrc/cpu/kernels/batch_norm.cpp; float16 and bfloat16 compute in float32.
// Its autograd, for every device.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <numeric>
#include <vector>

#include "batch_norm_tanh.h"
#include "cpu_glue.h"
#include "dispatcher_glue.h"
#include "pymakemore/kernels.h"

namespace pymakemore {
namespace {

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

using autograd::AutogradContext;
using autograd::variable_list;

// The backward reads the saved output (tanh's derivative 1 - y^2) and the batch's statistics.
// create_graph: the composite's formulas, the batch's statistics recomputed from the input (the
// running ones, in evaluation, as saved); nothing is updated.
struct BatchNormTanhFunction : torch::autograd::Function<BatchNormTanhFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const OptionalTensor& weight, const OptionalTensor& bias,
                               const OptionalTensor& running_mean,
                               const OptionalTensor& running_var, bool training, double momentum,
                               double eps, bool unbiased) {
    static const auto fwd = op_handle<signatures::BatchNormTanh>("pymakemore::batch_norm_tanh");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, mean, invstd, new_mean, new_var] = fwd.call(
        input, weight, bias, running_mean, running_var, training, momentum, eps, unbiased);
    ctx->save_for_backward({y, input, weight ? *weight : at::Tensor(),
                            bias ? *bias : at::Tensor(), mean, invstd});
    ctx->saved_data["training"] = training;
    ctx->saved_data["unbiased"] = unbiased;
    ctx->saved_data["eps"] = eps;
    ctx->mark_non_differentiable({mean, invstd, new_mean, new_var});
    ctx->set_materialize_grads(false);
    return {y, mean, invstd, new_mean, new_var};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd =
        op_handle<signatures::BatchNormTanhBackward>("pymakemore::batch_norm_tanh_backward");
    variable_list out(9);
    const at::Tensor& grad_output = grads[0];
    if (!grad_output.defined()) return out;
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &y = saved[0], &input = saved[1], &weight = saved[2], &bias = saved[3];
    const bool training = ctx->saved_data["training"].toBool();
    const bool unbiased = ctx->saved_data["unbiased"].toBool();
    const std::array<bool, 3> wanted{ctx->needs_input_grad(0),
                                     weight.defined() && ctx->needs_input_grad(1),
                                     bias.defined() && ctx->needs_input_grad(2)};
    at::Tensor g[3];
    if (at::GradMode::is_enabled()) {
      std::vector<int64_t> dims(input.dim() - 1);
      std::iota(dims.begin(), dims.end(), int64_t(0));
      at::Tensor mean, invstd;
      if (training) {
        mean = input.mean(dims);
        invstd = at::rsqrt(at::var(input, dims, at::Scalar(unbiased ? 1 : 0), false) +
                           ctx->saved_data["eps"].toDouble());
      } else {
        mean = saved[4].to(input.scalar_type());
        invstd = saved[5].to(input.scalar_type());
      }
      at::Tensor z = (input - mean) * invstd;
      if (weight.defined()) z = z * weight;
      if (bias.defined()) z = z + bias;
      variable_list inputs;
      const at::Tensor* tensors[3] = {&input, &weight, &bias};
      for (size_t i = 0; i < 3; ++i)
        if (wanted[i]) inputs.push_back(*tensors[i]);
      const variable_list found = torch::autograd::grad({at::tanh(z)}, inputs, {grad_output},
                                                        /*retain_graph=*/true,
                                                        /*create_graph=*/true);
      for (size_t i = 0, k = 0; i < 3; ++i)
        if (wanted[i]) g[i] = found[k++];
    } else {
      std::tie(g[0], g[1], g[2]) =
          bwd.call(grad_output, y, input, optional_of(weight), saved[4], saved[5], training,
                   unbiased, wanted);
    }
    for (size_t i = 0; i < 3; ++i)
      if (wanted[i]) out[i] = g[i];
    return out;
  }
};

batch_norm::Outputs batch_norm_tanh_autograd(const at::Tensor& input,
                                             const OptionalTensor& weight,
                                             const OptionalTensor& bias,
                                             const OptionalTensor& running_mean,
                                             const OptionalTensor& running_var, bool training,
                                             double momentum, double eps, bool unbiased) {
  variable_list out = BatchNormTanhFunction::apply(input, weight, bias, running_mean,
                                                   running_var, training, momentum, eps,
                                                   unbiased);
  return {out[0], out[1], out[2], out[3], out[4]};
}

}  // namespace

TORCH_LIBRARY_IMPL(pymakemore, CPU, m) {
  m.impl("batch_norm_tanh", &forward_cpu);
  m.impl("batch_norm_tanh_backward", &backward_cpu);
}

TORCH_LIBRARY_IMPL(pymakemore, Autograd, m) {
  m.impl("batch_norm_tanh", &batch_norm_tanh_autograd);
}

}  // namespace pymakemore
