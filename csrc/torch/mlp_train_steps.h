// mlp_train_steps (the fused engine of the makemore MLP), the part both devices share: the
// checks of its parameters and data, which return the model's shape.
#pragma once

#include <ATen/ATen.h>

#include "checks.h"
#include "pymakemore/kernels.h"

namespace pymakemore {

// Checks every argument of mlp_train_steps (devices: all on C's); returns the shape.
inline MlpShape mlp_train_steps_args(const at::Tensor& C, const at::Tensor& W1,
                                     const at::Tensor& b1, const at::Tensor& W2,
                                     const at::Tensor& b2, const at::Tensor& X,
                                     const at::Tensor& Y, const at::Tensor& lrs,
                                     int64_t batch_size,
                                     const c10::optional<at::Tensor>& batch_indices) {
  const at::Device device = C.device();
  auto tensor = [&](const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t dim) {
    checks::engine_tensor("mlp_train_steps", t, name, dtype, dim, device);
  };
  tensor(C, "C", at::kFloat, 2);
  tensor(W1, "W1", at::kFloat, 2);
  tensor(b1, "b1", at::kFloat, 1);
  tensor(W2, "W2", at::kFloat, 2);
  tensor(b2, "b2", at::kFloat, 1);
  tensor(X, "X", at::kLong, 2);
  tensor(Y, "Y", at::kLong, 1);
  tensor(lrs, "lrs", at::kFloat, 1);
  const int64_t V = C.size(0), D = C.size(1), H = W1.size(0), T = X.size(1), n = X.size(0);
  TORCH_CHECK(W1.size(1) == T * D && b1.size(0) == H && W2.size(0) == V && W2.size(1) == H &&
                  b2.size(0) == V && Y.size(0) == n,
              "mlp_train_steps: parameter and data shapes do not fit one MLP (C ", C.sizes(),
              ", W1 ", W1.sizes(), ", b1 ", b1.sizes(), ", W2 ", W2.sizes(), ", b2 ", b2.sizes(),
              ", X ", X.sizes(), ", Y ", Y.sizes(), ")");
  TORCH_CHECK(batch_size >= 1 && n >= 1, "mlp_train_steps: need batch_size >= 1 and data");
  if (batch_indices && batch_indices->defined()) {
    tensor(*batch_indices, "batch_indices", at::kLong, 2);
    TORCH_CHECK(batch_indices->size(0) == lrs.size(0) && batch_indices->size(1) == batch_size,
                "mlp_train_steps: batch_indices must have shape (", lrs.size(0), ", ",
                batch_size, "), but got ", batch_indices->sizes());
  }
  return MlpShape{V, T, D, H, batch_size};
}

}  // namespace pymakemore
