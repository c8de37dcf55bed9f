// linear and linear_tanh on the CPU: checks and operands (linear.h), then the torch-free
// kernels of csrc/cpu/kernels/linear.cpp; float16 and bfloat16 compute in float32. Their
// autograd, for every device.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "cpu_glue.h"
#include "dispatcher_glue.h"
#include "linear.h"

namespace pymakemore {
namespace {

at::Tensor linear_forward_cpu(const char* op, Activation act, const at::Tensor& input,
                              const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  calls::check_linear(at::kCPU, op, input, weight, bias);
  if (half_precision(input))
    return linear_forward_cpu(op, act, upcast(input), upcast(weight), upcast(bias))
        .to(input.scalar_type());
  const calls::Linear c = calls::linear(input, weight, bias, &new_output);
  AT_DISPATCH_FLOATING_TYPES(c.x.scalar_type(), "linear_cpu", [&] {
    linear_forward<scalar_t>(c.x.data_ptr<scalar_t>(), c.w.data_ptr<scalar_t>(),
                             ptr_or_null<scalar_t>(c.b), c.rows, c.in_features, c.out_features,
                             act, c.y.data_ptr<scalar_t>(), torch_parallel_for());
  });
  return c.y;
}

LinearGrads linear_backward_cpu(
    const char* op, Activation act, const at::Tensor& grad_output, const at::Tensor& output,
    const at::Tensor& input, const at::Tensor& weight, std::array<bool, 3> output_mask) {
  calls::check_linear_backward(at::kCPU, op, grad_output, output, input, weight);
  if (half_precision(input)) {
    auto [gx, gw, gb] = linear_backward_cpu(op, act, upcast(grad_output), upcast(output),
                                            upcast(input), upcast(weight), output_mask);
    const auto st = input.scalar_type();
    return {gx.to(st), gw.to(st), gb.to(st)};
  }
  const calls::LinearBackward c =
      calls::linear_backward(grad_output, output, input, weight, output_mask, &new_output);
  AT_DISPATCH_FLOATING_TYPES(c.x.scalar_type(), "linear_backward_cpu", [&] {
    linear_backward<scalar_t>(c.gy.data_ptr<scalar_t>(), c.y_ptr<scalar_t>(),
                              c.x.data_ptr<scalar_t>(), c.w.data_ptr<scalar_t>(), c.rows,
                              c.in_features, c.out_features, act, c.grad_x_ptr<scalar_t>(),
                              c.grad_w_ptr<scalar_t>(), c.grad_b_ptr<scalar_t>(),
                              torch_parallel_for());
  });
  return {c.grad_x, c.grad_w, c.grad_b};
}

using autograd::AutogradContext;
using autograd::variable_list;

// Tanh saves the output y (its derivative is 1 - y^2); the plain linear saves no output.
template <bool kTanh>
struct LinearFunction : torch::autograd::Function<LinearFunction<kTanh>> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& weight, const OptionalTensor& bias) {
    static const auto fwd = op_handle<signatures::Linear>(kTanh ? "pymakemore::linear_tanh"
                                                                : "pymakemore::linear");
    // Which gradients are wanted is known here; recorded for backward.
    ctx->saved_data["mask"] = c10::List<bool>(
        {input.requires_grad(), weight.requires_grad(), autograd::requires_grad(bias)});
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor output = fwd.call(input, weight, bias);
    if (kTanh)
      ctx->save_for_backward({input, weight, output});
    else
      ctx->save_for_backward({input, weight});
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const c10::List<bool> wanted = ctx->saved_data["mask"].toBoolList();
    const std::array<bool, 3> mask = {wanted[0], wanted[1], wanted[2]};
    if (!mask[0] && !mask[1] && !mask[2]) return {at::Tensor(), at::Tensor(), at::Tensor()};
    LinearGrads g;
    if (at::GradMode::is_enabled()) {  // create_graph: differentiable formulas
      g = differentiable_backward(grads[0], saved, mask);
    } else if constexpr (kTanh) {
      static const auto bwd =
          op_handle<signatures::LinearTanhBackward>("pymakemore::linear_tanh_backward");
      g = bwd.call(grads[0], saved[2], saved[0], saved[1], mask);
    } else {
      static const auto bwd =
          op_handle<signatures::LinearBackward>("pymakemore::linear_backward");
      g = bwd.call(grads[0], saved[0], saved[1], mask);
    }
    return {mask[0] ? std::get<0>(g) : at::Tensor(), mask[1] ? std::get<1>(g) : at::Tensor(),
            mask[2] ? std::get<2>(g) : at::Tensor()};
  }

  // gz = gy (* (1 - y^2), through the saved output y, whose history leads back here);
  // grad_x = gz @ w, grad_w = gz^T x, grad_b = sum of gz over the rows
  static LinearGrads differentiable_backward(const at::Tensor& gy, const variable_list& saved,
                                             std::array<bool, 3> mask) {
    const at::Tensor& x = saved[0];
    const at::Tensor& w = saved[1];
    const at::Tensor gz = kTanh ? gy * (1 - saved[2] * saved[2]) : gy;
    const at::Tensor rows = gz.reshape({-1, w.size(0)});
    return {mask[0] ? at::matmul(gz, w) : at::Tensor(),
            mask[1] ? rows.t().mm(x.reshape({-1, w.size(1)})) : at::Tensor(),
            mask[2] ? rows.sum(0) : at::Tensor()};
  }
};

template <bool kTanh>
at::Tensor linear_autograd(const at::Tensor& input, const at::Tensor& weight,
                           const OptionalTensor& bias) {
  return LinearFunction<kTanh>::apply(input, weight, bias);
}

}  // namespace

TORCH_LIBRARY_IMPL(pymakemore, CPU, m) {
  LinearOps<linear_forward_cpu, linear_backward_cpu>::register_into(m);
}

TORCH_LIBRARY_IMPL(pymakemore, Autograd, m) {
  m.impl("linear", &linear_autograd<false>);
  m.impl("linear_tanh", &linear_autograd<true>);
}

}  // namespace pymakemore
