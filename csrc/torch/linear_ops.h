// The four linear op entry points (linear, linear_backward, linear_tanh,
// linear_tanh_backward) of one device, made from that device's two generic functions, so the
// op names and their activations are written once for the CPU and CUDA registrations.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "op_handles.h"
#include "pymakemore/kernels.h"

namespace pymakemore {

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
