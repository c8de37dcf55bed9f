// cross_entropy (and cross_entropy_with_grad, cross_entropy_backward, scale_grad_), the part
// both devices share: the C++ signatures, the options and checks (F.cross_entropy's errors),
// the preparation of operands and outputs, and the two forward entry points made from a
// device's one generic forward (CrossEntropyOps). linear_cross_entropy uses the same options.
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

using CrossEntropyOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// schema.cpp's cross-entropy ops in C++ types, as the dispatcher calls them
namespace signatures {
// (loss, lse)
using CrossEntropy = std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor& input, const at::Tensor& target, const OptionalTensor& weight,
    c10::string_view reduction, int64_t ignore_index, double label_smoothing);
// (loss, lse, grad_input)
using CrossEntropyWithGrad = CrossEntropyOutputs(
    const at::Tensor& input, const at::Tensor& target, const OptionalTensor& weight,
    c10::string_view reduction, int64_t ignore_index, double label_smoothing);
using CrossEntropyBackward = at::Tensor(
    const at::Tensor& grad_loss, const at::Tensor& input, const at::Tensor& target,
    const OptionalTensor& weight, const at::Tensor& lse, c10::string_view reduction,
    int64_t ignore_index, double label_smoothing);
using ScaleGrad = void(at::Tensor& grad, const at::Tensor& grad_loss);
}  // namespace signatures

namespace checks {

inline Reduction parse_reduction(const std::string& reduction) {
  if (reduction == "none") return Reduction::None;
  if (reduction == "mean") return Reduction::Mean;
  if (reduction == "sum") return Reduction::Sum;
  TORCH_CHECK_VALUE(false, reduction, " is not a valid value for reduction");
}

inline CrossEntropyOptions cross_entropy_options(const std::string& reduction,
                                                 int64_t ignore_index, double label_smoothing) {
  TORCH_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0,
              "cross_entropy: label_smoothing must be between 0.0 and 1.0. Got: ",
              label_smoothing);
  return CrossEntropyOptions{parse_reduction(reduction), ignore_index, label_smoothing};
}

inline void cross_entropy_args(const at::Tensor& input, const at::Tensor& target,
                               const c10::optional<at::Tensor>& weight) {
  TORCH_CHECK(input.dim() == 2, "cross_entropy: expected input of shape (N, C), but got ",
              input.dim(), "-D of shape ", input.sizes());
  float_dtype("cross_entropy", "input (logits)", input);
  TORCH_CHECK(target.dim() == 1, "cross_entropy: expected a 1-D target of class indices, but got ",
              target.dim(), "-D of shape ", target.sizes());
  index_dtype("cross_entropy", "target", target);
  TORCH_CHECK_VALUE(input.size(0) == target.size(0), "Expected input batch_size (",
                    input.size(0), ") to match target batch_size (", target.size(0), ").");
  if (weight && weight->defined()) {
    TORCH_CHECK(weight->dim() == 1 && weight->size(0) == input.size(1),
                "cross_entropy: weight tensor should be defined either for all ", input.size(1),
                " classes or no classes but got weight tensor of shape: ", weight->sizes());
    same_dtype("cross_entropy", input, "input", *weight, "weight");
    same_device("cross_entropy", {&input, &target, &*weight});
  } else {
    same_device("cross_entropy", {&input, &target});
  }
}

// The forward's arguments; returns the options.
inline CrossEntropyOptions cross_entropy_forward_args(const at::Tensor& input,
                                                      const at::Tensor& target,
                                                      const c10::optional<at::Tensor>& weight,
                                                      c10::string_view reduction,
                                                      int64_t ignore_index,
                                                      double label_smoothing) {
  cross_entropy_args(input, target, weight);
  return cross_entropy_options(std::string(reduction), ignore_index, label_smoothing);
}

// cross_entropy_with_grad: its gradient is for one scalar grad_loss, so the loss is one value.
inline void reduced_for_gradient(const char* op, const CrossEntropyOptions& opt) {
  TORCH_CHECK(opt.reduction != Reduction::None, op,
              ": needs reduction 'mean' or 'sum' (with 'none' each row has its own grad_loss; "
              "use cross_entropy and cross_entropy_backward)");
}

// scale_grad_(grad, grad_loss): grad contiguous, grad_loss one value of its dtype and device.
inline void scale_grad_args(const at::Tensor& grad, const at::Tensor& grad_loss) {
  TORCH_CHECK(grad_loss.numel() == 1, "scale_grad_: grad_loss must hold one value, but got ",
              grad_loss.numel());
  TORCH_CHECK(grad.is_contiguous(), "scale_grad_: expected a contiguous grad");
  same_dtype("scale_grad_", grad, "grad", grad_loss, "grad_loss");
  same_device("scale_grad_", {&grad, &grad_loss});
}

// The backward's own arguments beside those of the forward; returns the options.
inline CrossEntropyOptions cross_entropy_backward_args(const at::Tensor& grad_loss,
                                                       const at::Tensor& input,
                                                       const at::Tensor& target,
                                                       const c10::optional<at::Tensor>& weight,
                                                       const at::Tensor& lse,
                                                       c10::string_view reduction,
                                                       int64_t ignore_index,
                                                       double label_smoothing) {
  const CrossEntropyOptions opt = cross_entropy_forward_args(input, target, weight, reduction,
                                                             ignore_index, label_smoothing);
  const int64_t n = input.size(0);
  TORCH_CHECK(lse.dim() == 1 && lse.size(0) == n, "cross_entropy_backward: lse must have shape (",
              n, ",), but got ", lse.sizes());
  const int64_t expected_grad = opt.reduction == Reduction::None ? n : 1;
  TORCH_CHECK(grad_loss.numel() == expected_grad, "cross_entropy_backward: grad_loss must hold ",
              expected_grad, " values for reduction='", std::string(reduction), "', but got ",
              grad_loss.numel());
  same_device("cross_entropy_backward", {&grad_loss, &input, &lse});
  return opt;
}

[[noreturn]] inline void bad_target(int64_t value, int64_t pos, int64_t classes,
                                    int64_t ignore_index) {
  TORCH_CHECK_INDEX(false, "cross_entropy: target ", value, " at position ", pos,
                    " is out of bounds for ", classes, " classes (valid: 0 to ", classes - 1,
                    ", or ignore_index=", ignore_index, ")");
}

// The saved per-row log-sum-exp is float64 for every input dtype (see kernels.h).
constexpr at::ScalarType kLseDtype = at::kDouble;

}  // namespace checks

namespace calls {

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

// Each row's weight in the loss, in float64: its target class's weight (1 without class
// weights), 0 for an ignored row (and for a target out of range, which the kernel reports).
inline at::Tensor row_weights(const at::Tensor& target, const at::Tensor& class_weight,
                              int64_t ignore_index, int64_t classes) {
  const at::Tensor counted = target.ne(ignore_index);
  if (!class_weight.defined()) return counted.to(at::kDouble);
  const at::Tensor known = counted.logical_and(target.ge(0)).logical_and_(target.lt(classes));
  const at::Tensor safe = at::where(known, target, at::zeros_like(target)).to(at::kLong);
  const at::Tensor picked = class_weight.to(at::kDouble).index_select(0, safe);
  return at::where(known, picked, at::zeros_like(picked));
}

}  // namespace calls

// Forward(op, input, target, weight, reduction, ignore_index, label_smoothing, with_grad)
// returns (loss, lse, gradient for grad_loss = 1 or undefined).
template <auto Forward>
struct CrossEntropyOps {
  static std::tuple<at::Tensor, at::Tensor> cross_entropy(
      const at::Tensor& input, const at::Tensor& target, const c10::optional<at::Tensor>& weight,
      c10::string_view reduction, int64_t ignore_index, double label_smoothing) {
    auto [loss, lse, grad] = Forward("cross_entropy", input, target, weight, reduction,
                                     ignore_index, label_smoothing, false);
    return {loss, lse};
  }
  static CrossEntropyOutputs cross_entropy_with_grad(
      const at::Tensor& input, const at::Tensor& target, const c10::optional<at::Tensor>& weight,
      c10::string_view reduction, int64_t ignore_index, double label_smoothing) {
    return Forward("cross_entropy_with_grad", input, target, weight, reduction, ignore_index,
                   label_smoothing, true);
  }
  static void register_into(torch::Library& m) {
    m.impl("cross_entropy", &cross_entropy);
    m.impl("cross_entropy_with_grad", &cross_entropy_with_grad);
  }
};

}  // namespace pymakemore
