// linear and linear_tanh, the part both devices share: their C++ signatures, their checks
// (F.linear's errors), the preparation of operands and outputs, and the four op entry points
// made from a device's two generic functions (LinearOps).
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <tuple>
#include <string>
#include <vector>

#include "checks.h"
#include "outputs.h"
#include "pymakemore/kernels.h"

namespace pymakemore {

// schema.cpp's linear, linear_tanh and their backwards in C++ types, as the dispatcher calls them
namespace signatures {
using Linear = at::Tensor(const at::Tensor& input, const at::Tensor& weight,
                          const OptionalTensor& bias);
using LinearBackward = LinearGrads(const at::Tensor& grad_output, const at::Tensor& input,
                                   const at::Tensor& weight, std::array<bool, 3> output_mask);
using LinearTanhBackward = LinearGrads(const at::Tensor& grad_output, const at::Tensor& output,
                                       const at::Tensor& input, const at::Tensor& weight,
                                       std::array<bool, 3> output_mask);
}  // namespace signatures

namespace checks {

inline void linear_args(const char* op, const at::Tensor& input, const at::Tensor& weight,
                        const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(input.dim() >= 1, op, ": input must be at least 1-D, but got 0-D");
  TORCH_CHECK(weight.dim() == 2, op, ": weight must be 2-D (out_features, in_features), but got ",
              weight.dim(), "-D of shape ", weight.sizes());
  float_dtype(op, "input", input);
  same_dtype(op, input, "input", weight, "weight");
  TORCH_CHECK(input.size(-1) == weight.size(1), op, ": input and weight shapes cannot be "
              "multiplied (input ", input.sizes(), " has ", input.size(-1),
              " features, weight ", weight.sizes(), " expects ", weight.size(1), ")");
  if (bias && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), op,
                ": bias must have shape (", weight.size(0), ",), but got ", bias->sizes());
    same_dtype(op, input, "input", *bias, "bias");
    same_device(op, {&input, &weight, &*bias});
  } else {
    same_device(op, {&input, &weight});
  }
}

inline std::vector<int64_t> linear_output_shape(const at::Tensor& input, const at::Tensor& weight) {
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end() - 1);
  shape.push_back(weight.size(0));
  return shape;
}

// output may be undefined (linear keeps no output).
inline void linear_backward_args(const char* op, const at::Tensor& grad,
                                 const at::Tensor& output, const at::Tensor& input,
                                 const at::Tensor& weight) {
  linear_args(op, input, weight, c10::nullopt);
  const std::vector<int64_t> shape = linear_output_shape(input, weight);
  TORCH_CHECK(grad.sizes() == at::IntArrayRef(shape), op, ": grad_output ", grad.sizes(),
              " must have shape ", at::IntArrayRef(shape));
  same_dtype(op, grad, "grad_output", input, "input");
  same_device(op, {&grad, &input, &weight});
  if (output.defined()) {
    TORCH_CHECK(output.sizes() == at::IntArrayRef(shape), op, ": output ", output.sizes(),
                " must have shape ", at::IntArrayRef(shape));
    same_dtype(op, output, "output", input, "input");
    same_device(op, {&output, &input});
  }
}

}  // namespace checks

namespace calls {

inline void check_linear(c10::DeviceType device, const char* op, const at::Tensor& input,
                         const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  checks::linear_args(op, input, weight, bias);
  checks::all_on(device, op, {&input, &weight});
  if (bias) checks::all_on(device, op, {&*bias});
}

struct Linear {
  at::Tensor x, w;
  c10::optional<at::Tensor> b;
  at::Tensor y;
  int64_t rows, in_features, out_features;
};

inline Linear linear(const at::Tensor& input, const at::Tensor& weight,
                     const c10::optional<at::Tensor>& bias, Allocate alloc) {
  Linear c{input.contiguous(), weight.contiguous(), checks::contiguous(bias), {}, 0, 0, 0};
  c.rows = leading_rows(c.x);
  c.in_features = c.w.size(1);
  c.out_features = c.w.size(0);
  c.y = alloc(checks::linear_output_shape(c.x, c.w), c.x.options());
  return c;
}

inline void check_linear_backward(c10::DeviceType device, const char* op,
                                  const at::Tensor& grad_output, const at::Tensor& output,
                                  const at::Tensor& input, const at::Tensor& weight) {
  checks::linear_backward_args(op, grad_output, output, input, weight);
  checks::all_on(device, op, {&grad_output, &output, &input, &weight});
}

// output: the forward's y for tanh, undefined for identity. The gradients not asked for in
// output_mask are empty tensors and their pointers null.
struct LinearBackward {
  at::Tensor gy, y, x, w, grad_x, grad_w, grad_b;
  int64_t rows, in_features, out_features;
  std::array<bool, 3> mask;
  template <typename T = void>
  T* grad_x_ptr() const { return mask[0] ? static_cast<T*>(grad_x.data_ptr()) : nullptr; }
  template <typename T = void>
  T* grad_w_ptr() const { return mask[1] ? static_cast<T*>(grad_w.data_ptr()) : nullptr; }
  template <typename T = void>
  T* grad_b_ptr() const { return mask[2] ? static_cast<T*>(grad_b.data_ptr()) : nullptr; }
  template <typename T = void>
  const T* y_ptr() const { return y.defined() ? static_cast<const T*>(y.data_ptr()) : nullptr; }
};

inline LinearBackward linear_backward(const at::Tensor& grad_output, const at::Tensor& output,
                                      const at::Tensor& input, const at::Tensor& weight,
                                      std::array<bool, 3> mask, Allocate alloc) {
  LinearBackward c{grad_output.contiguous(),
                   output.defined() ? output.contiguous() : at::Tensor(),
                   input.contiguous(), weight.contiguous(), {}, {}, {}, 0, 0, 0, mask};
  c.rows = leading_rows(c.x);
  c.in_features = c.w.size(1);
  c.out_features = c.w.size(0);
  const at::TensorOptions options = c.x.options();
  c.grad_x = mask[0] ? alloc(c.x.sizes(), options) : at::empty({0}, options);
  c.grad_w = mask[1] ? at::empty_like(c.w) : at::empty({0}, options);
  c.grad_b = mask[2] ? at::empty({c.out_features}, options) : at::empty({0}, options);
  return c;
}

}  // namespace calls

// Forward(op, act, input, weight, bias); Backward(op, act, grad, output or undefined, input,
// weight, output_mask).
template <auto Forward, auto Backward>
struct LinearOps {
  static at::Tensor linear(const at::Tensor& input, const at::Tensor& weight,
                           const c10::optional<at::Tensor>& bias) {
    return Forward("linear", Activation::Identity, input, weight, bias);
  }
  static LinearGrads linear_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                     const at::Tensor& weight, std::array<bool, 3> output_mask) {
    return Backward("linear_backward", Activation::Identity, grad_output, at::Tensor(), input,
                    weight, output_mask);
  }
  static at::Tensor linear_tanh(const at::Tensor& input, const at::Tensor& weight,
                                const c10::optional<at::Tensor>& bias) {
    return Forward("linear_tanh", Activation::Tanh, input, weight, bias);
  }
  static LinearGrads linear_tanh_backward(const at::Tensor& grad_output,
                                          const at::Tensor& output, const at::Tensor& input,
                                          const at::Tensor& weight,
                                          std::array<bool, 3> output_mask) {
    return Backward("linear_tanh_backward", Activation::Tanh, grad_output, output, input,
                    weight, output_mask);
  }
  static void register_into(torch::Library& m) {
    m.impl("linear", &linear);
    m.impl("linear_backward", &linear_backward);
    m.impl("linear_tanh", &linear_tanh);
    m.impl("linear_tanh_backward", &linear_tanh_backward);
  }
};

}  // namespace pymakemore
