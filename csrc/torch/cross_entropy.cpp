// cross_entropy, cross_entropy_with_grad, cross_entropy_backward and scale_grad_ on the CPU:
// checks and operands (cross_entropy.h), then the torch-free kernels of
// csrc/cpu/kernels/cross_entropy.cpp; float16 and bfloat16 logits in float32 row chunks.
// cross_entropy's autograd, for every device.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "cpu_glue.h"
#include "cross_entropy.h"
#include "dispatcher_glue.h"

namespace pymakemore {
namespace {

// float16/bfloat16 logits: the rows in chunks of about kHalfChunkBytes of float32, each
// upcast, computed in float32 and its gradient written back in the logits' dtype, so the extra
// memory is one chunk rather than float32 copies of the logits and of their gradient (three
// times the logits' size; F.cross_entropy's own peak is about one). A mean is the chunks'
// sums over the counted rows' weight (the kernel's mean, as F.cross_entropy's), its gradient
// the sums' scaled by the same.
constexpr int64_t kHalfChunkBytes = int64_t(32) << 20;

CrossEntropyOutputs cross_entropy_half_cpu(const at::Tensor& input, const at::Tensor& target,
                                           const c10::optional<at::Tensor>& weight,
                                           const CrossEntropyOptions& opt, bool with_grad) {
  const at::Tensor x = input.contiguous(), t = target.contiguous();
  const c10::optional<at::Tensor> w = checks::contiguous(upcast(weight));
  const int64_t n = x.size(0), classes = x.size(1);
  const bool none = opt.reduction == Reduction::None;
  CrossEntropyOptions chunk_opt = opt;
  chunk_opt.reduction = none ? Reduction::None : Reduction::Sum;
  const at::TensorOptions f32 = x.options().dtype(at::kFloat);
  at::Tensor loss_rows = none ? at::empty({n}, f32) : at::Tensor();
  at::Tensor lse = at::empty({n}, x.options().dtype(checks::kLseDtype));
  at::Tensor grad = with_grad ? at::empty(x.sizes(), x.options()) : at::Tensor();
  double denominator = 1.0;
  if (opt.reduction == Reduction::Mean) {
    const at::Tensor counted = t.ne(opt.ignore_index);
    denominator =
        w ? at::where(counted, w->index_select(0, at::where(counted, t, at::zeros_like(t))
                                                    .to(at::kLong)),
                      at::zeros({}, f32))
                .sum(at::kDouble)
                .item<double>()
          : static_cast<double>(counted.sum().item<int64_t>());
  }
  double total = 0.0;
  const int64_t step = std::max<int64_t>(1, kHalfChunkBytes / 4 / std::max<int64_t>(classes, 1));
  for (int64_t r0 = 0; r0 < n; r0 += step) {
    const int64_t rows = std::min(step, n - r0);
    const at::Tensor xc = x.narrow(0, r0, rows).to(at::kFloat), tc = t.narrow(0, r0, rows);
    at::Tensor chunk_loss = none ? loss_rows.narrow(0, r0, rows) : at::empty({}, f32);
    at::Tensor gc = with_grad ? at::empty({rows, classes}, f32) : at::Tensor();
    int64_t bad = kAllValid;
    with_index_type(tc.scalar_type(), [&](auto index_tag) {
      using Index = decltype(index_tag);
      bad = cross_entropy_forward<float, Index>(
          xc.data_ptr<float>(), tc.data_ptr<Index>(), w ? w->data_ptr<float>() : nullptr,
          rows, classes, chunk_opt, chunk_loss.data_ptr<float>(),
          lse.data_ptr<double>() + r0, with_grad ? gc.data_ptr<float>() : nullptr,
          torch_parallel_for());
    });
    if (bad != kAllValid)
      checks::bad_target(checks::index_at(tc, bad), r0 + bad, classes, opt.ignore_index);
    if (!none) total += chunk_loss.item<double>();
    if (with_grad) {
      // a mean whose rows are all ignored: zero gradients (the loss is NaN), as the kernel's
      if (opt.reduction == Reduction::Mean) gc.mul_(denominator > 0 ? 1.0 / denominator : 0.0);
      grad.narrow(0, r0, rows).copy_(gc);
    }
  }
  at::Tensor loss = none ? loss_rows.to(x.scalar_type())
                         : at::scalar_tensor(opt.reduction == Reduction::Mean
                                                 ? total / denominator
                                                 : total,
                                             f32)
                               .to(x.scalar_type());
  return {loss, lse, grad};
}

// (loss, lse) and, with_grad, the gradient for grad_loss = 1 from the same pass.
CrossEntropyOutputs cross_entropy_cpu(
    const char* op, const at::Tensor& input, const at::Tensor& target,
    const c10::optional<at::Tensor>& weight, c10::string_view reduction, int64_t ignore_index,
    double label_smoothing, bool with_grad) {
  const CrossEntropyOptions opt =
      calls::check_cross_entropy(at::kCPU, op, input, target, weight, reduction, ignore_index,
                                 label_smoothing, with_grad);
  if (half_precision(input))
    return cross_entropy_half_cpu(input, target, weight, opt, with_grad);
  const calls::CrossEntropy c =
      calls::cross_entropy(input, target, weight, opt, with_grad, &new_output);
  int64_t bad = kAllValid;
  AT_DISPATCH_FLOATING_TYPES(c.x.scalar_type(), "cross_entropy_cpu", [&] {
    with_index_type(c.t.scalar_type(), [&](auto index_tag) {
      using Index = decltype(index_tag);
      bad = cross_entropy_forward<scalar_t, Index>(
          c.x.data_ptr<scalar_t>(), c.t.data_ptr<Index>(), ptr_or_null<scalar_t>(c.w), c.n(),
          c.classes(), opt, c.loss.data_ptr<scalar_t>(), c.lse.data_ptr<double>(),
          with_grad ? c.grad.data_ptr<scalar_t>() : nullptr, torch_parallel_for());
    });
  });
  if (bad != kAllValid)
    checks::bad_target(checks::index_at(c.t, bad), bad, c.classes(), ignore_index);
  return {c.loss, c.lse, c.grad};
}

// grad *= grad_loss, skipped when grad_loss is 1 (on the CPU its value is at hand).
void scale_grad_cpu(at::Tensor& grad, const at::Tensor& grad_loss) {
  calls::check_scale_grad(at::kCPU, grad, grad_loss);
  if (grad_loss.item<double>() != 1.0) grad.mul_(grad_loss);
}

at::Tensor cross_entropy_backward_cpu(const at::Tensor& grad_loss, const at::Tensor& input,
                                      const at::Tensor& target,
                                      const c10::optional<at::Tensor>& weight,
                                      const at::Tensor& lse, c10::string_view reduction,
                                      int64_t ignore_index, double label_smoothing) {
  const CrossEntropyOptions opt = calls::check_cross_entropy_backward(
      at::kCPU, grad_loss, input, target, weight, lse, reduction, ignore_index, label_smoothing);
  if (half_precision(input))
    return cross_entropy_backward_cpu(upcast(grad_loss), upcast(input), target, upcast(weight),
                                      lse, reduction, ignore_index, label_smoothing)
        .to(input.scalar_type());
  const calls::CrossEntropyBackward c =
      calls::cross_entropy_backward(grad_loss, input, target, weight, lse, &new_output);
  if (c.n() == 0) return c.grad_input;
  int64_t bad = kAllValid;
  AT_DISPATCH_FLOATING_TYPES(c.x.scalar_type(), "cross_entropy_backward_cpu", [&] {
    with_index_type(c.t.scalar_type(), [&](auto index_tag) {
      using Index = decltype(index_tag);
      bad = cross_entropy_backward<scalar_t, Index>(
          c.g.data_ptr<scalar_t>(), c.x.data_ptr<scalar_t>(), c.t.data_ptr<Index>(),
          ptr_or_null<scalar_t>(c.w), c.lse.data_ptr<double>(), c.n(), c.classes(), opt,
          c.grad_input.data_ptr<scalar_t>(), torch_parallel_for());
    });
  });
  if (bad != kAllValid)
    checks::bad_target(checks::index_at(c.t, bad), bad, c.classes(), ignore_index);
  return c.grad_input;
}

using autograd::AutogradContext;
using autograd::variable_list;

// When the logits need a gradient and the loss is one value, the forward computes that gradient
// in its own pass over the logits (for grad_loss = 1) and the backward only scales it, in place
// and on the device, when grad_loss is not 1: the logits are read once instead of twice. A
// second backward through a retained graph recomputes it from the saved logits and lse.
struct CrossEntropyFunction : torch::autograd::Function<CrossEntropyFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const at::Tensor& target, const c10::optional<at::Tensor>& weight,
                               c10::string_view reduction, int64_t ignore_index,
                               double label_smoothing, bool grad_now) {
    static const auto fwd = op_handle<signatures::CrossEntropy>("pymakemore::cross_entropy");
    static const auto fwd_with_grad =
        op_handle<signatures::CrossEntropyWithGrad>("pymakemore::cross_entropy_with_grad");
    TORCH_CHECK(!autograd::requires_grad(weight), "cross_entropy: no gradient is computed for "
                "the class weights; pass weight.detach() or use torch.nn.functional.cross_entropy");
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
    static const auto bwd =
        op_handle<signatures::CrossEntropyBackward>("pymakemore::cross_entropy_backward");
    static const auto scale = op_handle<signatures::ScaleGrad>("pymakemore::scale_grad_");
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
      if (autograd::batched(grads[0]))  // out of place, by torch's batching rule for mul
        return {grad_input.mul(grads[0]), at::Tensor(), at::Tensor(), at::Tensor(),
                at::Tensor(), at::Tensor(), at::Tensor()};
      scale.call(grad_input, grads[0]);
      return {grad_input, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
              at::Tensor()};
    }
    const variable_list saved = ctx->get_saved_variables();
    static constexpr const char* kNames[] = {"none", "mean", "sum"};  // by Reduction value
    const c10::string_view reduction = kNames[ctx->saved_data["reduction"].toInt()];
    at::Tensor grad_input =
        bwd.call(grads[0], saved[0], saved[1], optional_of(saved[2]), saved[3], reduction,
                 ctx->saved_data["ignore_index"].toInt(),
                 ctx->saved_data["label_smoothing"].toDouble());
    return {grad_input, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }

  // The gradient of ATen's own cross entropy, recomputed from the saved logits with a graph.
  static at::Tensor differentiable_backward(AutogradContext* ctx, const at::Tensor& grad_loss) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const at::Tensor loss = at::cross_entropy_loss(
        input, saved[1].to(at::kLong), optional_of(saved[2]),
        ctx->saved_data["reduction"].toInt(), ctx->saved_data["ignore_index"].toInt(),
        ctx->saved_data["label_smoothing"].toDouble());
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

TORCH_LIBRARY_IMPL(pymakemore, CPU, m) {
  CrossEntropyOps<cross_entropy_cpu>::register_into(m);
  m.impl("cross_entropy_backward", &cross_entropy_backward_cpu);
  m.impl("scale_grad_", &scale_grad_cpu);
}

TORCH_LIBRARY_IMPL(pymakemore, Autograd, m) { m.impl("cross_entropy", &cross_entropy_autograd); }

}  // namespace pymakemore
