// What the CPU and CUDA implementations of each op share, written once: the argument checks
// (device included), contiguous operands, the output shapes and their allocation. A device
// file supplies its allocator, its kernel call and what only it needs (the CPU computes
// float16/bfloat16 in float32; CUDA sets its device guard).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <initializer_list>

#include "checks.h"
#include "pymakemore/kernels.h"

namespace pymakemore {
namespace calls {

// A device's allocation of an output (the CPU adds a huge-page hint to large ones).
using Allocate = at::Tensor (*)(at::IntArrayRef, const at::TensorOptions&);

inline at::Tensor empty(at::IntArrayRef shape, const at::TensorOptions& options) {
  return at::empty(shape, options);
}

// t as dtype st, contiguous; without the dispatcher round trip of .to() when nothing changes.
inline at::Tensor contiguous_as(const at::Tensor& t, at::ScalarType st) {
  return (t.scalar_type() == st ? t : t.to(st)).contiguous();
}

// rows of a (..., k) tensor: the product of every size but the last
inline int64_t leading_rows(const at::Tensor& t) {
  return c10::multiply_integers(t.sizes().begin(), t.sizes().end() - 1);
}

// ---- embedding ------------------------------------------------------------------------------
inline void check_embedding(c10::DeviceType device, const at::Tensor& input,
                            const at::Tensor& weight) {
  checks::embedding_args(input, weight);
  checks::all_on(device, "embedding", {&input, &weight});
}

struct Embedding {
  at::Tensor idx, weight, out;
  int64_t rows() const { return weight.size(0); }
  int64_t dim() const { return weight.size(1); }
};

inline Embedding embedding(const at::Tensor& input, const at::Tensor& weight, Allocate alloc) {
  Embedding c{input.contiguous(), weight.contiguous(), {}};
  c.out = alloc(checks::embedding_output_shape(c.idx, c.dim()), c.weight.options());
  return c;
}

inline void check_embedding_backward(c10::DeviceType device, const at::Tensor& grad_output,
                                     const at::Tensor& input, int64_t num_weights) {
  checks::embedding_backward_args(grad_output, input, num_weights);
  checks::all_on(device, "embedding_backward", {&grad_output, &input});
}

struct EmbeddingBackward {
  at::Tensor idx, grad, grad_weight;
  int64_t dim() const { return grad.size(-1); }
};

inline EmbeddingBackward embedding_backward(const at::Tensor& grad_output,
                                            const at::Tensor& input, int64_t num_weights,
                                            Allocate alloc) {
  EmbeddingBackward c{input.contiguous(), grad_output.contiguous(), {}};
  c.grad_weight = alloc({num_weights, c.dim()}, c.grad.options());
  return c;
}

// ---- linear, linear_tanh ---------------------------------------------------------------------
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

// ---- cross_entropy --------------------------------------------------------------------------
inline CrossEntropyOptions check_cross_entropy(
    c10::DeviceType device, const char* op, const at::Tensor& input, const at::Tensor& target,
    const c10::optional<at::Tensor>& weight, c10::string_view reduction, int64_t ignore_index,
    double label_smoothing, bool with_grad) {
  const CrossEntropyOptions opt = checks::cross_entropy_forward_args(
      input, target, weight, reduction, ignore_index, label_smoothing);
  if (with_grad) checks::reduced_for_gradient(op, opt);
  checks::all_on(device, op, {&input, &target});
  if (weight) checks::all_on(device, op, {&*weight});
  return opt;
}

// (loss, lse) and, with_grad, the gradient for grad_loss = 1 (undefined otherwise)
struct CrossEntropy {
  at::Tensor x, t;
  c10::optional<at::Tensor> w;
  at::Tensor loss, lse, grad;
  int64_t n() const { return x.size(0); }
  int64_t classes() const { return x.size(1); }
};

inline CrossEntropy cross_entropy(const at::Tensor& input, const at::Tensor& target,
                                  const c10::optional<at::Tensor>& weight,
                                  const CrossEntropyOptions& opt, bool with_grad,
                                  Allocate alloc) {
  CrossEntropy c{input.contiguous(), target.contiguous(), checks::contiguous(weight), {}, {}, {}};
  const at::TensorOptions options = c.x.options();
  c.loss = opt.reduction == Reduction::None ? at::empty({c.n()}, options)
                                            : at::empty({}, options);
  c.lse = at::empty({c.n()}, options.dtype(checks::kLseDtype));
  if (with_grad) c.grad = alloc(c.x.sizes(), options);
  return c;
}

inline void check_scale_grad(c10::DeviceType device, const at::Tensor& grad,
                             const at::Tensor& grad_loss) {
  checks::scale_grad_args(grad, grad_loss);
  checks::all_on(device, "scale_grad_", {&grad, &grad_loss});
}

inline CrossEntropyOptions check_cross_entropy_backward(
    c10::DeviceType device, const at::Tensor& grad_loss, const at::Tensor& input,
    const at::Tensor& target, const c10::optional<at::Tensor>& weight, const at::Tensor& lse,
    c10::string_view reduction, int64_t ignore_index, double label_smoothing) {
  const CrossEntropyOptions opt = checks::cross_entropy_backward_args(
      grad_loss, input, target, weight, lse, reduction, ignore_index, label_smoothing);
  checks::all_on(device, "cross_entropy_backward", {&grad_loss, &input, &target, &lse});
  return opt;
}

struct CrossEntropyBackward {
  at::Tensor g, x, t;
  c10::optional<at::Tensor> w;
  at::Tensor lse, grad_input;
  int64_t n() const { return x.size(0); }
  int64_t classes() const { return x.size(1); }
};

inline CrossEntropyBackward cross_entropy_backward(const at::Tensor& grad_loss,
                                                   const at::Tensor& input,
                                                   const at::Tensor& target,
                                                   const c10::optional<at::Tensor>& weight,
                                                   const at::Tensor& lse, Allocate alloc) {
  const at::Tensor x = input.contiguous();
  CrossEntropyBackward c{contiguous_as(grad_loss, x.scalar_type()), x, target.contiguous(),
                         checks::contiguous(weight), contiguous_as(lse, checks::kLseDtype), {}};
  c.grad_input = alloc(x.sizes(), x.options());
  return c;
}

}  // namespace calls
}  // namespace pymakemore
