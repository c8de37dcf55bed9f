// The ops of schema.cpp as typed dispatcher handles, for the code that calls them through the
// dispatcher (the autograd wrappers, the Python module's direct entries): each op's C++
// signature is written once, here, beside the result types the device registrations share.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <array>
#include <tuple>

namespace pymakemore {

// (grad_input, grad_weight, grad_bias) of linear and linear_tanh, undefined where not asked
using LinearGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using OptionalTensor = c10::optional<at::Tensor>;

namespace handles {

template <typename Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

using Embedding = at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, bool);
using EmbeddingBackward = at::Tensor(const at::Tensor&, const at::Tensor&, c10::SymInt, int64_t,
                                     bool);
using Linear = at::Tensor(const at::Tensor&, const at::Tensor&, const OptionalTensor&);
using LinearBackward = LinearGrads(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   std::array<bool, 3>);
using LinearTanhBackward = LinearGrads(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                       const at::Tensor&, std::array<bool, 3>);
using CrossEntropy = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                        const OptionalTensor&, c10::string_view,
                                                        int64_t, double);
using CrossEntropyWithGrad = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const OptionalTensor&, c10::string_view, int64_t,
    double);
using CrossEntropyBackward = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                        const OptionalTensor&, const at::Tensor&,
                                        c10::string_view, int64_t, double);
using ScaleGrad = void(at::Tensor&, const at::Tensor&);
// (loss, lse, grad_input, grad_weight, grad_bias)
using LinearCrossEntropy = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptionalTensor&,
    const OptionalTensor&, int64_t, c10::string_view, double, c10::optional<double>, double,
    std::array<bool, 3>);
// (output, save_mean, save_invstd, new_running_mean, new_running_var)
using BatchNormTanh = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const OptionalTensor&, const OptionalTensor&, const OptionalTensor&,
    const OptionalTensor&, bool, double, double, bool);
using BatchNormTanhBackward = LinearGrads(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                          const OptionalTensor&, const at::Tensor&,
                                          const at::Tensor&, bool, bool, std::array<bool, 3>);
using LinearCrossEntropyBackward = LinearGrads(
    const at::Tensor&, const OptionalTensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const OptionalTensor&, const OptionalTensor&, int64_t, c10::string_view,
    double, c10::optional<double>, double, std::array<bool, 3>);

}  // namespace handles
}  // namespace pymakemore
