// linear and linear_tanh on the CPU: checks and operands (linear.h), then the torch-free
// kernels of csrc/cpu/kernels/linear.cpp; float16 and bfloat16 compute in float32.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "cpu_glue.h"
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

}  // namespace

TORCH_LIBRARY_IMPL(pymakemore, CPU, m) {
  LinearOps<linear_forward_cpu, linear_backward_cpu>::register_into(m);
}

}  // namespace pymakemore
