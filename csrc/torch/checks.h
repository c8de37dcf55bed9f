// Argument checks shared by the CPU and CUDA registrations: shapes, dtypes, devices and
// options. Errors mirror torch.nn.functional's exception types (IndexError, ValueError, ...).
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "pymakemore/kernels.h"

namespace pymakemore::checks {

// Every defined tensor on the registration's device type (a kernel of one device never
// reads another's memory).
inline void all_on(c10::DeviceType type, const char* op,
                   std::initializer_list<const at::Tensor*> tensors) {
  for (const at::Tensor* t : tensors)
    TORCH_CHECK(!t->defined() || t->device().type() == type, op, ": expected ",
                c10::DeviceTypeName(type), " tensors, but got one on ", t->device());
}

inline void same_device(const char* op, std::initializer_list<const at::Tensor*> tensors) {
  const at::Tensor* first = nullptr;
  for (const at::Tensor* t : tensors) {
    if (!t->defined()) continue;
    if (!first) {
      first = t;
      continue;
    }
    TORCH_CHECK(t->device() == first->device(), op,
                ": expected all tensors to be on the same device, but found ", first->device(),
                " and ", t->device());
  }
}

inline bool is_index_dtype(at::ScalarType st) {
  return st == at::kLong || st == at::kInt;
}

inline void index_dtype(const char* op, const char* what, const at::Tensor& t) {
  TORCH_CHECK(is_index_dtype(t.scalar_type()), op, ": expected ", what,
              " of dtype int64 or int32 (Long or Int), but got ", t.scalar_type());
}

inline void float_dtype(const char* op, const char* what, const at::Tensor& t) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": expected ", what,
              " of a floating-point dtype (float32, float64, float16 or bfloat16), but got ",
              t.scalar_type());
}

inline void same_dtype(const char* op, const at::Tensor& a, const char* a_name,
                       const at::Tensor& b, const char* b_name) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": expected ", a_name, " and ", b_name,
              " to have the same dtype, but got ", a.scalar_type(), " and ", b.scalar_type());
}

// Reads one index value for an error message (the tensor is on the host for CPU ops).
inline int64_t index_at(const at::Tensor& contiguous_index, int64_t pos) {
  return contiguous_index.reshape({-1})[pos].item<int64_t>();
}

// An optional tensor made contiguous (none stays none).
inline c10::optional<at::Tensor> contiguous(const c10::optional<at::Tensor>& t) {
  return t && t->defined() ? c10::optional<at::Tensor>(t->contiguous()) : c10::nullopt;
}

// ---- embedding ------------------------------------------------------------------------------
inline void embedding_args(const at::Tensor& input, const at::Tensor& weight) {
  index_dtype("embedding", "indices", input);
  TORCH_CHECK(weight.dim() == 2, "embedding: 'weight' must be 2-D (num_embeddings, "
              "embedding_dim), but got ", weight.dim(), "-D of shape ", weight.sizes());
  float_dtype("embedding", "weight", weight);
  same_device("embedding", {&input, &weight});
}

inline void embedding_backward_args(const at::Tensor& grad, const at::Tensor& input,
                                    int64_t num_weights) {
  index_dtype("embedding_backward", "indices", input);
  float_dtype("embedding_backward", "grad_output", grad);
  TORCH_CHECK(num_weights >= 0, "embedding_backward: num_weights must be >= 0, got ",
              num_weights);
  TORCH_CHECK(grad.dim() == input.dim() + 1 &&
                  grad.sizes().slice(0, input.dim()) == input.sizes(),
              "embedding_backward: grad_output of shape ", grad.sizes(),
              " does not match indices of shape ", input.sizes(), " plus one embedding dim");
  same_device("embedding_backward", {&grad, &input});
}

[[noreturn]] inline void bad_index(const char* op, int64_t value, int64_t pos, int64_t rows) {
  TORCH_CHECK_INDEX(false, op, ": index ", value, " at position ", pos,
                    " is out of range for a weight with ", rows, " rows (valid: 0 to ",
                    rows - 1, ")");
}

inline std::vector<int64_t> embedding_output_shape(const at::Tensor& input, int64_t dim) {
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
  shape.push_back(dim);
  return shape;
}

// ---- linear, linear_tanh ---------------------------------------------------------------------
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

// ---- cross_entropy --------------------------------------------------------------------------
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

// ---- the MLP engine ---------------------------------------------------------------------------
inline void engine_tensor(const at::Tensor& t, const char* name, at::ScalarType dtype,
                          int64_t dim, const at::Device& device) {
  TORCH_CHECK(t.device() == device && t.scalar_type() == dtype && t.dim() == dim &&
                  t.is_contiguous(),
              "mlp_train_steps: ", name, " must be a contiguous ", dim, "-D ", dtype,
              " tensor on ", device, ", but got ", t.scalar_type(), " of shape ", t.sizes(),
              " on ", t.device());
}

// Checks every argument of mlp_train_steps (devices: all on C's); returns the shape.
inline MlpShape mlp_engine_args(const at::Tensor& C, const at::Tensor& W1, const at::Tensor& b1,
                                const at::Tensor& W2, const at::Tensor& b2, const at::Tensor& X,
                                const at::Tensor& Y, const at::Tensor& lrs, int64_t batch_size,
                                const c10::optional<at::Tensor>& batch_indices) {
  const at::Device device = C.device();
  engine_tensor(C, "C", at::kFloat, 2, device);
  engine_tensor(W1, "W1", at::kFloat, 2, device);
  engine_tensor(b1, "b1", at::kFloat, 1, device);
  engine_tensor(W2, "W2", at::kFloat, 2, device);
  engine_tensor(b2, "b2", at::kFloat, 1, device);
  engine_tensor(X, "X", at::kLong, 2, device);
  engine_tensor(Y, "Y", at::kLong, 1, device);
  engine_tensor(lrs, "lrs", at::kFloat, 1, device);
  const int64_t V = C.size(0), D = C.size(1), H = W1.size(0), T = X.size(1), n = X.size(0);
  TORCH_CHECK(W1.size(1) == T * D && b1.size(0) == H && W2.size(0) == V && W2.size(1) == H &&
                  b2.size(0) == V && Y.size(0) == n,
              "mlp_train_steps: parameter and data shapes do not fit one MLP (C ", C.sizes(),
              ", W1 ", W1.sizes(), ", b1 ", b1.sizes(), ", W2 ", W2.sizes(), ", b2 ", b2.sizes(),
              ", X ", X.sizes(), ", Y ", Y.sizes(), ")");
  TORCH_CHECK(batch_size >= 1 && n >= 1, "mlp_train_steps: need batch_size >= 1 and data");
  if (batch_indices && batch_indices->defined()) {
    engine_tensor(*batch_indices, "batch_indices", at::kLong, 2, device);
    TORCH_CHECK(batch_indices->size(0) == lrs.size(0) && batch_indices->size(1) == batch_size,
                "mlp_train_steps: batch_indices must have shape (", lrs.size(0), ", ",
                batch_size, "), but got ", batch_indices->sizes());
  }
  return MlpShape{V, T, D, H, batch_size};
}

}  // namespace pymakemore::checks
