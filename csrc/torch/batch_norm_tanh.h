// batch_norm_tanh, the part both devices share: its C++ signatures, its checks (with the
// errors F.batch_norm gives for the same mistakes) and the preparation of its operands and
// outputs. The op is functional: the new running statistics come back as outputs, and ops.py
// copies them into the module's buffers.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <tuple>

#include "checks.h"
#include "outputs.h"

namespace pymakemore::batch_norm {

// (y, save_mean, save_invstd, new_running_mean, new_running_var)
using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
// (grad_input, grad_weight, grad_bias)
using Grads = LinearGrads;

}  // namespace pymakemore::batch_norm

// schema.cpp's batch_norm_tanh and its backward in C++ types, as the dispatcher calls them
namespace pymakemore::signatures {
using BatchNormTanh = batch_norm::Outputs(const at::Tensor& input, const OptionalTensor& weight,
                                          const OptionalTensor& bias,
                                          const OptionalTensor& running_mean,
                                          const OptionalTensor& running_var, bool training,
                                          double momentum, double eps, bool unbiased);
using BatchNormTanhBackward = batch_norm::Grads(
    const at::Tensor& grad_output, const at::Tensor& output, const at::Tensor& input,
    const OptionalTensor& weight, const at::Tensor& save_mean, const at::Tensor& save_invstd,
    bool training, bool unbiased, std::array<bool, 3> output_mask);
}  // namespace pymakemore::signatures

namespace pymakemore::batch_norm {

inline const at::Tensor* given(const OptionalTensor& t) {
  return t && t->defined() ? &*t : nullptr;
}

// The statistics' dtype: float for float16 and bfloat16 inputs, else the input's.
inline at::ScalarType stats_dtype(const at::Tensor& input) {
  return at::isReducedFloatingType(input.scalar_type()) ? at::kFloat : input.scalar_type();
}

inline void check_args(c10::DeviceType device, const at::Tensor& input,
                       const OptionalTensor& weight, const OptionalTensor& bias,
                       const OptionalTensor& running_mean, const OptionalTensor& running_var,
                       bool training) {
  const char* op = "batch_norm_tanh";
  TORCH_CHECK(input.dim() >= 2, op, ": expected input of 2 or more dimensions (the last one "
              "the features), got ", input.dim());
  checks::float_dtype(op, "input", input);
  const int64_t c = input.size(-1);
  const std::array<std::pair<const at::Tensor*, const char*>, 4> params = {
      {{given(weight), "weight"}, {given(bias), "bias"}, {given(running_mean), "running_mean"},
       {given(running_var), "running_var"}}};
  for (const auto& [t, name] : params) {
    if (!t) continue;
    TORCH_CHECK(t->dim() == 1 && t->size(0) == c, op, ": ", name, " should contain ", c,
                " elements not ", t->numel());
    checks::same_device(op, {&input, t});
    TORCH_CHECK(t->scalar_type() == input.scalar_type() ||
                    (t->scalar_type() == at::kFloat && stats_dtype(input) == at::kFloat),
                op, ": ", name, " is ", t->scalar_type(), ", input is ", input.scalar_type());
  }
  TORCH_CHECK(training || (given(running_mean) && given(running_var)), op,
              ": running_mean and running_var must be defined in evaluation mode");
  checks::all_on(device, op, {&input});
  TORCH_CHECK_VALUE(!training || input.numel() / std::max<int64_t>(c, 1) > 1 || c == 0,
                    "Expected more than 1 value per channel when training, got input size ",
                    input.sizes());
}

// The operands as the kernels read them: contiguous, (m, c), in the compute dtype.
struct Prepared {
  at::Tensor x, weight, bias, running_mean, running_var;  // undefined where not given
  at::Tensor y, save_mean, save_invstd;
  int64_t m, c;
};

inline at::Tensor as_compute(const OptionalTensor& t, at::ScalarType dtype) {
  return given(t) ? t->to(dtype).contiguous() : at::Tensor();
}

inline Prepared prepare(const at::Tensor& input, const OptionalTensor& weight,
                        const OptionalTensor& bias, const OptionalTensor& running_mean,
                        const OptionalTensor& running_var, at::ScalarType compute) {
  Prepared p;
  p.c = input.size(-1);
  p.m = p.c ? input.numel() / p.c : 0;
  p.x = input.to(compute).contiguous().view({p.m, p.c});
  p.weight = as_compute(weight, compute);
  p.bias = as_compute(bias, compute);
  // copies: the op is functional, the new statistics are outputs
  p.running_mean = given(running_mean) ? running_mean->to(compute, false, true).contiguous()
                                       : at::Tensor();
  p.running_var = given(running_var) ? running_var->to(compute, false, true).contiguous()
                                     : at::Tensor();
  p.y = at::empty({p.m, p.c}, p.x.options());
  p.save_mean = at::empty({p.c}, p.x.options());
  p.save_invstd = at::empty({p.c}, p.x.options());
  return p;
}

inline Outputs outputs(Prepared& p, const at::Tensor& input, const OptionalTensor& running_mean,
                       const OptionalTensor& running_var) {
  const at::ScalarType stats = stats_dtype(input);
  auto back = [](const at::Tensor& t, const OptionalTensor& like) {
    return t.defined() ? t.to(like->scalar_type()) : at::empty({0}, t.options());
  };
  at::Tensor rm = given(running_mean) ? back(p.running_mean, running_mean)
                                      : at::empty({0}, input.options().dtype(stats));
  at::Tensor rv = given(running_var) ? back(p.running_var, running_var)
                                     : at::empty({0}, input.options().dtype(stats));
  return {p.y.to(input.scalar_type()).view(input.sizes()), p.save_mean.to(stats),
          p.save_invstd.to(stats), rm, rv};
}

inline void check_backward_args(c10::DeviceType device, const at::Tensor& grad,
                                const at::Tensor& output, const at::Tensor& input,
                                const at::Tensor& save_mean, const at::Tensor& save_invstd) {
  const char* op = "batch_norm_tanh_backward";
  TORCH_CHECK(input.dim() >= 2 && grad.sizes() == input.sizes() &&
                  output.sizes() == input.sizes(),
              op, ": grad_output, output and input must have one shape, got ", grad.sizes(),
              ", ", output.sizes(), ", ", input.sizes());
  TORCH_CHECK(save_mean.numel() == input.size(-1) && save_invstd.numel() == input.size(-1), op,
              ": the saved statistics must have one value per feature");
  checks::same_device(op, {&grad, &output, &input, &save_mean, &save_invstd});
  checks::all_on(device, op, {&input});
}

// The backward's operands (contiguous, (m, c), in the compute dtype) and its gradients.
struct PreparedBackward {
  at::Tensor gy, y, x, weight, mean, invstd;
  at::Tensor gx, gw, gb;  // undefined where the mask says no
  int64_t m, c;
};

inline PreparedBackward prepare_backward(const at::Tensor& grad_output, const at::Tensor& output,
                                         const at::Tensor& input, const OptionalTensor& weight,
                                         const at::Tensor& save_mean,
                                         const at::Tensor& save_invstd,
                                         std::array<bool, 3> mask) {
  const at::ScalarType compute = stats_dtype(input);
  PreparedBackward p;
  p.c = input.size(-1);
  p.m = p.c ? input.numel() / p.c : 0;
  auto flat = [&](const at::Tensor& t) { return t.to(compute).contiguous().view({p.m, p.c}); };
  p.gy = flat(grad_output);
  p.y = flat(output);
  p.x = flat(input);
  p.weight = as_compute(weight, compute);
  p.mean = save_mean.to(compute).contiguous();
  p.invstd = save_invstd.to(compute).contiguous();
  p.gx = mask[0] ? at::empty({p.m, p.c}, p.x.options()) : at::Tensor();
  p.gw = mask[1] ? at::empty({p.c}, p.x.options()) : at::Tensor();
  p.gb = mask[2] ? at::empty({p.c}, p.x.options()) : at::Tensor();
  return p;
}

// The gradients in the dtypes of what they are the gradients of.
inline Grads grads(const PreparedBackward& p, const at::Tensor& input,
                   const OptionalTensor& weight) {
  const at::ScalarType param = given(weight) ? weight->scalar_type() : input.scalar_type();
  return {p.gx.defined() ? p.gx.to(input.scalar_type()).view(input.sizes()) : at::Tensor(),
          p.gw.defined() ? p.gw.to(param) : at::Tensor(),
          p.gb.defined() ? p.gb.to(param) : at::Tensor()};
}

}  // namespace pymakemore::batch_norm
