// Autograd for the fused ops, in C++: one registration for every device (the Autograd key),
// calling the forward and backward custom ops through the dispatcher. Keeping autograd out of
// Python saves tens of microseconds a call at makemore's small shapes.
//
// Higher-order gradients: a backward that runs with grad mode on (create_graph=True: gradient
// penalties, Hessian-vector products) computes its gradient with differentiable ATen ops
// instead of the fused backward op, so that gradients of gradients are exact, not zeros.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "checks.h"
#include "op_handles.h"

namespace pymakemore {
namespace {

using handles::op;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool requires_grad(const c10::optional<at::Tensor>& t) {
  return t && t->defined() && t->requires_grad();
}

// ---- embedding ------------------------------------------------------------------------------
struct EmbeddingFunction : torch::autograd::Function<EmbeddingFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& weight, int64_t padding_idx,
                            bool scale_grad_by_freq) {
    static const auto fwd = op<handles::Embedding>("pymakemore::embedding");
    at::AutoDispatchBelowADInplaceOrView guard;
    // the op first: it checks the weight's rank before anything here reads its size
    at::Tensor out = fwd.call(input, weight, padding_idx, scale_grad_by_freq);
    ctx->save_for_backward({input});
    ctx->saved_data["num_weights"] = weight.sym_size(0);
    ctx->saved_data["padding_idx"] = padding_idx;
    ctx->saved_data["scale_grad_by_freq"] = scale_grad_by_freq;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = op<handles::EmbeddingBackward>("pymakemore::embedding_backward");
    const at::Tensor input = ctx->get_saved_variables()[0];
    at::Tensor grad_weight =
        at::GradMode::is_enabled()  // differentiable in grad_output (create_graph)
            ? at::embedding_backward_symint(grads[0], input,
                                            ctx->saved_data["num_weights"].toSymInt(),
                                            ctx->saved_data["padding_idx"].toInt(),
                                            ctx->saved_data["scale_grad_by_freq"].toBool(), false)
            : bwd.call(grads[0], input, ctx->saved_data["num_weights"].toSymInt(),
                       ctx->saved_data["padding_idx"].toInt(),
                       ctx->saved_data["scale_grad_by_freq"].toBool());
    return {at::Tensor(), grad_weight, at::Tensor(), at::Tensor()};
  }
};

at::Tensor embedding_autograd(const at::Tensor& input, const at::Tensor& weight,
                              int64_t padding_idx, bool scale_grad_by_freq) {
  return EmbeddingFunction::apply(input, weight, padding_idx, scale_grad_by_freq);
}

// ---- linear, linear_tanh ---------------------------------------------------------------------

// Tanh saves the output y (its derivative is 1 - y^2); the plain linear saves no output.
template <bool kTanh>
struct LinearFunction : torch::autograd::Function<LinearFunction<kTanh>> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
    static const auto fwd = op<handles::Linear>(kTanh ? "pymakemore::linear_tanh"
                                                       : "pymakemore::linear");
    // Which gradients are wanted is known here; recorded for backward.
    ctx->saved_data["mask"] = c10::List<bool>(
        {input.requires_grad(), weight.requires_grad(), requires_grad(bias)});
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor output = fwd.call(input, weight, bias);
    if (kTanh)
      ctx->save_for_backward({input, weight, output});
    else
      ctx->save_for_backward({input, weight});
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const c10::List<bool> wanted = ctx->saved_data["mask"].toBoolList();
    const std::array<bool, 3> mask = {wanted[0], wanted[1], wanted[2]};
    if (!mask[0] && !mask[1] && !mask[2]) return {at::Tensor(), at::Tensor(), at::Tensor()};
    LinearGrads g;
    if (at::GradMode::is_enabled()) {  // create_graph: differentiable formulas
      g = differentiable_backward(grads[0], saved, mask);
    } else if constexpr (kTanh) {
      static const auto bwd = op<handles::LinearTanhBackward>("pymakemore::linear_tanh_backward");
      g = bwd.call(grads[0], saved[2], saved[0], saved[1], mask);
    } else {
      static const auto bwd = op<handles::LinearBackward>("pymakemore::linear_backward");
      g = bwd.call(grads[0], saved[0], saved[1], mask);
    }
    return {mask[0] ? std::get<0>(g) : at::Tensor(), mask[1] ? std::get<1>(g) : at::Tensor(),
            mask[2] ? std::get<2>(g) : at::Tensor()};
  }

  // gz = gy (* (1 - y^2), through the saved output y, whose history leads back here);
  // grad_x = gz @ w, grad_w = gz^T x, grad_b = sum of gz over the rows
  static LinearGrads differentiable_backward(const at::Tensor& gy, const variable_list& saved,
                                        std::array<bool, 3> mask) {
    const at::Tensor& x = saved[0];
    const at::Tensor& w = saved[1];
    const at::Tensor gz = kTanh ? gy * (1 - saved[2] * saved[2]) : gy;
    const at::Tensor rows = gz.reshape({-1, w.size(0)});
    return {mask[0] ? at::matmul(gz, w) : at::Tensor(),
            mask[1] ? rows.t().mm(x.reshape({-1, w.size(1)})) : at::Tensor(),
            mask[2] ? rows.sum(0) : at::Tensor()};
  }
};

template <bool kTanh>
at::Tensor linear_autograd(const at::Tensor& input, const at::Tensor& weight,
                           const c10::optional<at::Tensor>& bias) {
  return LinearFunction<kTanh>::apply(input, weight, bias);
}

// ---- cross_entropy --------------------------------------------------------------------------

// When the logits need a gradient and the loss is one value, the forward computes that gradient
// in its own pass over the logits (for grad_loss = 1) and the backward only scales it, in place
// and on the device, when grad_loss is not 1: the logits are read once instead of twice. A
// second backward through a retained graph recomputes it from the saved logits and lse.
struct CrossEntropyFunction : torch::autograd::Function<CrossEntropyFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const at::Tensor& target, const c10::optional<at::Tensor>& weight,
                               c10::string_view reduction, int64_t ignore_index,
                               double label_smoothing, bool grad_now) {
    static const auto fwd = op<handles::CrossEntropy>("pymakemore::cross_entropy");
    static const auto fwd_with_grad =
        op<handles::CrossEntropyWithGrad>("pymakemore::cross_entropy_with_grad");
    TORCH_CHECK(!requires_grad(weight), "cross_entropy: no gradient is computed for the class "
                "weights; pass weight.detach() or use torch.nn.functional.cross_entropy");
    const Reduction red = checks::parse_reduction(std::string(reduction));
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor loss, lse;
    if (grad_now) {
      at::Tensor grad;
      std::tie(loss, lse, grad) =
          fwd_with_grad.call(input, target, weight, reduction, ignore_index, label_smoothing);
      ctx->saved_data["grad"] = grad;
    } else {
      std::tie(loss, lse) =
          fwd.call(input, target, weight, reduction, ignore_index, label_smoothing);
    }
    ctx->save_for_backward({input, target, weight ? *weight : at::Tensor(), lse});
    ctx->saved_data["reduction"] = static_cast<int64_t>(red);
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["label_smoothing"] = label_smoothing;
    ctx->mark_non_differentiable({lse});
    return {loss, lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = op<handles::CrossEntropyBackward>("pymakemore::cross_entropy_backward");
    static const auto scale = op<handles::ScaleGrad>("pymakemore::scale_grad_");
    const auto precomputed = ctx->saved_data.find("grad");
    if (at::GradMode::is_enabled()) {  // create_graph: the loss again, differentiably
      if (precomputed != ctx->saved_data.end()) ctx->saved_data.erase(precomputed);
      return {differentiable_backward(ctx, grads[0]), at::Tensor(), at::Tensor(), at::Tensor(),
              at::Tensor(), at::Tensor(), at::Tensor()};
    }
    if (precomputed != ctx->saved_data.end()) {
      // the saved logits unpacked all the same: an in-place edit since the forward raises
      // autograd's "modified by an inplace operation", as F.cross_entropy's backward does
      ctx->get_saved_variables();
      // handed over, not kept: the caller may then own the only reference (no copy is made)
      at::Tensor grad_input = precomputed->second.toTensor();
      ctx->saved_data.erase(precomputed);
      const c10::DispatchKeySet keys = grads[0].key_set();
      if (keys.has(c10::DispatchKey::Batched) || keys.has(c10::DispatchKey::FuncTorchBatched))
        // a vmapped backward (is_grads_batched, jacobian(vectorize=True)): out of place, by
        // torch's batching rule for mul
        return {grad_input.mul(grads[0]), at::Tensor(), at::Tensor(), at::Tensor(),
                at::Tensor(), at::Tensor(), at::Tensor()};
      scale.call(grad_input, grads[0]);
      return {grad_input, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
              at::Tensor()};
    }
    const variable_list saved = ctx->get_saved_variables();
    const c10::optional<at::Tensor> weight =
        saved[2].defined() ? c10::optional<at::Tensor>(saved[2]) : c10::nullopt;
    static constexpr const char* kNames[] = {"none", "mean", "sum"};  // by Reduction value
    const c10::string_view reduction = kNames[ctx->saved_data["reduction"].toInt()];
    at::Tensor grad_input =
        bwd.call(grads[0], saved[0], saved[1], weight, saved[3], reduction,
                 ctx->saved_data["ignore_index"].toInt(),
                 ctx->saved_data["label_smoothing"].toDouble());
    return {grad_input, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }

  // The gradient of ATen's own cross entropy, recomputed from the saved logits with a graph.
  static at::Tensor differentiable_backward(AutogradContext* ctx, const at::Tensor& grad_loss) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const c10::optional<at::Tensor> weight =
        saved[2].defined() ? c10::optional<at::Tensor>(saved[2]) : c10::nullopt;
    const at::Tensor loss = at::cross_entropy_loss(
        input, saved[1].to(at::kLong), weight, ctx->saved_data["reduction"].toInt(),
        ctx->saved_data["ignore_index"].toInt(), ctx->saved_data["label_smoothing"].toDouble());
    return torch::autograd::grad({loss}, {input}, {grad_loss}, /*retain_graph=*/true,
                                 /*create_graph=*/true)[0];
  }
};

std::tuple<at::Tensor, at::Tensor> cross_entropy_autograd(
    const at::Tensor& input, const at::Tensor& target, const c10::optional<at::Tensor>& weight,
    c10::string_view reduction, int64_t ignore_index, double label_smoothing) {
  // decided here: Function::apply runs the forward with grad mode off
  const bool grad_now = at::GradMode::is_enabled() && input.requires_grad() &&
                        checks::parse_reduction(std::string(reduction)) != Reduction::None;
  variable_list out = CrossEntropyFunction::apply(input, target, weight, reduction, ignore_index,
                                                  label_smoothing, grad_now);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(pymakemore, Autograd, m) {
  m.impl("embedding", &embedding_autograd);
  m.impl("linear", &linear_autograd<false>);
  m.impl("linear_tanh", &linear_autograd<true>);
  m.impl("cross_entropy", &cross_entropy_autograd);
}

}  // namespace pymakemore
