// The generic argument checks every op uses (devices, dtypes) and two small helpers; each op's
// own checks are in its slice (<op>.h). Errors mirror torch.nn.functional's exception types
// (IndexError, ValueError, ...).
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

// A training engine's tensor: on `device`, of `dtype`, `dim`-D, contiguous.
inline void engine_tensor(const char* op, const at::Tensor& t, const char* name,
                          at::ScalarType dtype, int64_t dim, const at::Device& device) {
  TORCH_CHECK(t.device() == device && t.scalar_type() == dtype && t.dim() == dim &&
                  t.is_contiguous(),
              op, ": ", name, " must be a contiguous ", dim, "-D ", dtype, " tensor on ", device,
              ", but got ", t.scalar_type(), " of shape ", t.sizes(), " on ", t.device());
}

}  // namespace pymakemore::checks
