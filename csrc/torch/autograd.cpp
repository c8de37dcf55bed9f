// Autograd for every fused op, in C++: one registration for every device (the Autograd key),
// calling the forward and backward custom ops through the dispatcher. Keeping autograd out of
// Python saves about 50-65 us a call at makemore's small shapes (bench/autograd_home_bench.py,
// bench/RESULTS.md).
//
// Higher-order gradients: a backward that runs with grad mode on (create_graph=True: gradient
// penalties, Hessian-vector products) computes its gradient with differentiable ATen ops
// instead of the fused backward op, so that gradients of gradients are exact, not zeros.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <numeric>
#include <string>
#include <vector>

#include "checks.h"
#include "cross_entropy.h"
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

// ---- linear_cross_entropy -------------------------------------------------------------------

// As cross_entropy: for a mean or sum loss the forward computes the gradients grad_mask asks
// for in its own pass (for grad_loss = 1) and the backward scales them in place; otherwise (a
// "none" loss, a gradient through the lse, a second backward) the backward recomputes them
// chunk by chunk. create_graph and vmapped backwards (is_grads_batched,
// jacobian(vectorize=True)) run the composite's formulas.
struct LinearCrossEntropyFunction : torch::autograd::Function<LinearCrossEntropyFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const at::Tensor& weight, const at::Tensor& target,
                               const c10::optional<at::Tensor>& bias,
                               const c10::optional<at::Tensor>& ce_weight, int64_t ignore_index,
                               c10::string_view reduction, double label_smoothing,
                               c10::optional<double> softcap, double z_loss,
                               std::array<bool, 3> grad_mask) {
    static const auto fwd =
        op<handles::LinearCrossEntropy>("pymakemore::linear_cross_entropy");
    TORCH_CHECK(!requires_grad(ce_weight), "linear_cross_entropy: no gradient is computed for "
                "the class weights (ce_weight); pass ce_weight.detach()");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [loss, lse, gx, gw, gb] = fwd.call(input, weight, target, bias, ce_weight, ignore_index,
                                            reduction, label_smoothing, softcap, z_loss,
                                            grad_mask);
    ctx->save_for_backward({input, weight, target, bias ? *bias : at::Tensor(),
                            ce_weight ? *ce_weight : at::Tensor()});
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["reduction"] = std::string(reduction);
    ctx->saved_data["label_smoothing"] = label_smoothing;
    ctx->saved_data["softcap"] = softcap;
    ctx->saved_data["z_loss"] = z_loss;
    if (grad_mask[0] || grad_mask[1] || grad_mask[2]) {
      ctx->saved_data["grads"] = c10::List<at::Tensor>({gx, gw, gb});
      ctx->saved_data["grad_mask"] = c10::List<bool>({grad_mask[0], grad_mask[1], grad_mask[2]});
    }
    ctx->mark_non_differentiable({gx, gw, gb});
    ctx->set_materialize_grads(false);  // an unused output's gradient stays undefined
    return {loss, lse, gx, gw, gb};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = op<handles::LinearCrossEntropyBackward>(
        "pymakemore::linear_cross_entropy_backward");
    static const auto scale = op<handles::ScaleGrad>("pymakemore::scale_grad_");
    const at::Tensor &grad_loss = grads[0], &grad_lse = grads[1];
    variable_list out(11);
    if (!grad_loss.defined() && !grad_lse.defined()) return out;
    const auto precomputed = ctx->saved_data.find("grads");
    const bool has_bias = ctx->get_saved_variables()[3].defined();  // (checks in-place edits)
    const std::array<bool, 3> wanted{ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                     has_bias && ctx->needs_input_grad(3)};
    auto answer = [&](at::Tensor gx, at::Tensor gw, at::Tensor gb) {
      if (wanted[0]) out[0] = std::move(gx);
      if (wanted[1]) out[1] = std::move(gw);
      if (wanted[2]) out[3] = std::move(gb);
      return out;
    };
    if (at::GradMode::is_enabled() || batched(grad_loss) || batched(grad_lse)) {
      if (precomputed != ctx->saved_data.end()) ctx->saved_data.erase(precomputed);
      auto [gx, gw, gb] = composite_backward(ctx, grad_loss, grad_lse, wanted);
      return answer(gx, gw, gb);
    }
    if (precomputed != ctx->saved_data.end() && !grad_lse.defined()) {
      const c10::List<bool> mask = ctx->saved_data["grad_mask"].toBoolList();
      bool covered = true;
      for (size_t i = 0; i < 3; ++i) covered = covered && (!wanted[i] || mask[i]);
      if (covered) {
        // handed over, not kept: the caller then owns the only reference (no copy of
        // grad_weight); a second backward through a retained graph recomputes
        const c10::List<at::Tensor> found = precomputed->second.toTensorList();
        ctx->saved_data.erase(precomputed);
        at::Tensor g[3] = {found[0], found[1], found[2]};
        for (at::Tensor& t : g)
          if (t.numel()) scale.call(t, grad_loss.to(t.scalar_type()));
        return answer(g[0], g[1], g[2]);
      }
    }
    const variable_list saved = ctx->get_saved_variables();
    const std::string reduction = ctx->saved_data["reduction"].toStringRef();
    // only the lse's gradient came back: the loss's is zero
    std::vector<int64_t> loss_shape;
    if (reduction == "none") loss_shape.push_back(saved[0].size(0));
    const at::Tensor loss_grad =
        grad_loss.defined() ? grad_loss : at::zeros(loss_shape, grad_lse.options());
    auto [gx, gw, gb] = bwd.call(loss_grad, optional(grad_lse), saved[0], saved[1], saved[2],
                                 optional(saved[3]), optional(saved[4]),
                                 ctx->saved_data["ignore_index"].toInt(), reduction,
                                 ctx->saved_data["label_smoothing"].toDouble(),
                                 softcap_of(ctx), ctx->saved_data["z_loss"].toDouble(), wanted);
    return answer(gx, gw, gb);
  }

  static bool batched(const at::Tensor& t) {
    if (!t.defined()) return false;
    const c10::DispatchKeySet keys = t.key_set();
    return keys.has(c10::DispatchKey::Batched) || keys.has(c10::DispatchKey::FuncTorchBatched);
  }
  static c10::optional<at::Tensor> optional(const at::Tensor& t) {
    return t.defined() ? c10::optional<at::Tensor>(t) : c10::nullopt;
  }
  static c10::optional<double> softcap_of(AutogradContext* ctx) {
    const c10::IValue& v = ctx->saved_data["softcap"];
    return v.isNone() ? c10::nullopt : c10::optional<double>(v.toDouble());
  }

  // The composite's gradients, through ATen's differentiable ops: F.linear, the rows in
  // float32 for float16/bfloat16, the softcap, cross entropy with class weights, the z-loss
  // (each counted row's z_loss * lse^2 times its class weight, a mean over the weights' sum)
  // and the lse. Graph-building when create_graph; under vmap, the batching rules of each op.
  static LinearGrads composite_backward(AutogradContext* ctx, const at::Tensor& grad_loss,
                                        const at::Tensor& grad_lse,
                                        const std::array<bool, 3>& wanted) {
    const variable_list saved = ctx->get_saved_variables();
    const bool create_graph = at::GradMode::is_enabled();
    at::AutoGradMode enable(true);
    variable_list leaves = {saved[0], saved[1], saved[3]};
    if (!create_graph)  // (vmap: a graph of its own from fresh leaves)
      for (size_t i = 0; i < 3; ++i)
        if (wanted[i]) leaves[i] = leaves[i].detach().requires_grad_(true);
    const at::Tensor& target = saved[2];
    at::Tensor logits = at::linear(leaves[0], leaves[1], optional(leaves[2]));
    if (at::isReducedFloatingType(logits.scalar_type())) logits = logits.to(at::kFloat);
    if (const auto cap = softcap_of(ctx)) logits = at::tanh(logits / *cap) * *cap;
    const c10::optional<at::Tensor> class_weight =
        saved[4].defined() ? c10::optional<at::Tensor>(saved[4].to(logits.scalar_type()))
                           : c10::nullopt;
    const std::string reduction = ctx->saved_data["reduction"].toStringRef();
    const Reduction red = checks::parse_reduction(reduction);
    const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
    at::Tensor loss = at::cross_entropy_loss(logits, target.to(at::kLong), class_weight,
                                             static_cast<int64_t>(red), ignore_index,
                                             ctx->saved_data["label_smoothing"].toDouble());
    const at::Tensor lse = at::logsumexp(logits, {1});
    const double z_loss = ctx->saved_data["z_loss"].toDouble();
    if (z_loss > 0.0) {
      const at::Tensor row_weight =
          calls::row_weights(target, class_weight ? *class_weight : at::Tensor(), ignore_index,
                             logits.size(1))
              .to(lse.scalar_type());
      const at::Tensor rows = lse * lse * row_weight * z_loss;
      loss = loss + (red == Reduction::None  ? rows
                     : red == Reduction::Sum ? rows.sum()
                                             : rows.sum() / row_weight.sum());
    }
    variable_list outputs, output_grads, inputs;
    if (grad_loss.defined()) outputs.push_back(loss), output_grads.push_back(grad_loss);
    if (grad_lse.defined()) outputs.push_back(lse), output_grads.push_back(grad_lse);
    for (size_t i = 0; i < 3; ++i)
      if (wanted[i]) inputs.push_back(leaves[i]);
    const variable_list found = torch::autograd::grad(outputs, inputs, output_grads,
                                                      /*retain_graph=*/true, create_graph);
    at::Tensor g[3];
    for (size_t i = 0, k = 0; i < 3; ++i)
      if (wanted[i]) g[i] = found[k++];
    return {g[0], g[1], g[2]};
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
linear_cross_entropy_autograd(const at::Tensor& input, const at::Tensor& weight,
                              const at::Tensor& target, const c10::optional<at::Tensor>& bias,
                              const c10::optional<at::Tensor>& ce_weight, int64_t ignore_index,
                              c10::string_view reduction, double label_smoothing,
                              c10::optional<double> softcap, double z_loss,
                              std::array<bool, 3> grad_mask) {
  variable_list out = LinearCrossEntropyFunction::apply(
      input, weight, target, bias, ce_weight, ignore_index, reduction, label_smoothing, softcap,
      z_loss, grad_mask);
  return {out[0], out[1], out[2], out[3], out[4]};
}

// ---- batch_norm_tanh ------------------------------------------------------------------------

// The backward reads the saved output (tanh's derivative 1 - y^2) and the batch's statistics.
// create_graph: the composite's formulas, the batch's statistics recomputed from the input (the
// running ones, in evaluation, as saved); nothing is updated.
struct BatchNormTanhFunction : torch::autograd::Function<BatchNormTanhFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const c10::optional<at::Tensor>& weight,
                               const c10::optional<at::Tensor>& bias,
                               const c10::optional<at::Tensor>& running_mean,
                               const c10::optional<at::Tensor>& running_var, bool training,
                               double momentum, double eps, bool unbiased) {
    static const auto fwd = op<handles::BatchNormTanh>("pymakemore::batch_norm_tanh");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, mean, invstd, new_mean, new_var] = fwd.call(
        input, weight, bias, running_mean, running_var, training, momentum, eps, unbiased);
    ctx->save_for_backward({y, input, weight ? *weight : at::Tensor(),
                            bias ? *bias : at::Tensor(), mean, invstd});
    ctx->saved_data["training"] = training;
    ctx->saved_data["unbiased"] = unbiased;
    ctx->saved_data["eps"] = eps;
    ctx->mark_non_differentiable({mean, invstd, new_mean, new_var});
    ctx->set_materialize_grads(false);
    return {y, mean, invstd, new_mean, new_var};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd =
        op<handles::BatchNormTanhBackward>("pymakemore::batch_norm_tanh_backward");
    variable_list out(9);
    const at::Tensor& grad_output = grads[0];
    if (!grad_output.defined()) return out;
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &y = saved[0], &input = saved[1], &weight = saved[2], &bias = saved[3];
    const bool training = ctx->saved_data["training"].toBool();
    const bool unbiased = ctx->saved_data["unbiased"].toBool();
    const std::array<bool, 3> wanted{ctx->needs_input_grad(0),
                                     weight.defined() && ctx->needs_input_grad(1),
                                     bias.defined() && ctx->needs_input_grad(2)};
    at::Tensor g[3];
    if (at::GradMode::is_enabled()) {
      std::vector<int64_t> dims(input.dim() - 1);
      std::iota(dims.begin(), dims.end(), int64_t(0));
      at::Tensor mean, invstd;
      if (training) {
        mean = input.mean(dims);
        invstd = at::rsqrt(at::var(input, dims, at::Scalar(unbiased ? 1 : 0), false) +
                           ctx->saved_data["eps"].toDouble());
      } else {
        mean = saved[4].to(input.scalar_type());
        invstd = saved[5].to(input.scalar_type());
      }
      at::Tensor z = (input - mean) * invstd;
      if (weight.defined()) z = z * weight;
      if (bias.defined()) z = z + bias;
      variable_list inputs;
      const at::Tensor* tensors[3] = {&input, &weight, &bias};
      for (size_t i = 0; i < 3; ++i)
        if (wanted[i]) inputs.push_back(*tensors[i]);
      const variable_list found = torch::autograd::grad({at::tanh(z)}, inputs, {grad_output},
                                                        /*retain_graph=*/true,
                                                        /*create_graph=*/true);
      for (size_t i = 0, k = 0; i < 3; ++i)
        if (wanted[i]) g[i] = found[k++];
    } else {
      std::tie(g[0], g[1], g[2]) =
          bwd.call(grad_output, y, input, weight.defined() ? c10::optional<at::Tensor>(weight)
                                                           : c10::nullopt,
                   saved[4], saved[5], training, unbiased, wanted);
    }
    for (size_t i = 0; i < 3; ++i)
      if (wanted[i]) out[i] = g[i];
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm_tanh_autograd(
    const at::Tensor& input, const c10::optional<at::Tensor>& weight,
    const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& running_mean,
    const c10::optional<at::Tensor>& running_var, bool training, double momentum, double eps,
    bool unbiased) {
  variable_list out = BatchNormTanhFunction::apply(input, weight, bias, running_mean,
                                                   running_var, training, momentum, eps,
                                                   unbiased);
  return {out[0], out[1], out[2], out[3], out[4]};
}

}  // namespace

TORCH_LIBRARY_IMPL(pymakemore, Autograd, m) {
  m.impl("embedding", &embedding_autograd);
  m.impl("linear", &linear_autograd<false>);
  m.impl("linear_tanh", &linear_autograd<true>);
  m.impl("cross_entropy", &cross_entropy_autograd);
  m.impl("linear_cross_entropy", &linear_cross_entropy_autograd);
  m.impl("batch_norm_tanh", &batch_norm_tanh_autograd);
}

}  // namespace pymakemore
