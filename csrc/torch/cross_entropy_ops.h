// The two cross-entropy forward entry points (cross_entropy, cross_entropy_with_grad) of one
// device, made from that device's generic forward, so that both are written once for the CPU
// and CUDA registrations.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

namespace pymakemore {

using CrossEntropyOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

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
