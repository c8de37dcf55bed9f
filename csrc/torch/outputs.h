// What every op's preparation shares, on either device: operands made contiguous (and cast
// where a kernel needs one dtype), outputs allocated by the device's allocator.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace pymakemore {

using OptionalTensor = c10::optional<at::Tensor>;
// (grad_input, grad_weight, grad_bias) of the ops with a weight and a bias; an entry not asked
// for is an empty tensor
using LinearGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// A tensor that may be undefined as an optional argument (undefined: none).
inline OptionalTensor optional_of(const at::Tensor& t) {
  return t.defined() ? OptionalTensor(t) : c10::nullopt;
}

}  // namespace pymakemore

namespace pymakemore::calls {

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

}  // namespace pymakemore::calls
