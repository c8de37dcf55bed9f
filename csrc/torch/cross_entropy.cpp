// cross_entropy, cross_entropy_with_grad, cross_entropy_backward and scale_grad_ on the CPU:
// checks and operands (cross_entropy.h), then the torch-free kernels of
// csrc/cpu/kernels/cross_entropy.cpp; float16 and bfloat16 logits in float32 row chunks.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "cpu_glue.h"
#include "cross_entropy.h"

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
  const c10::optional<at::Tensor> w =
      weight && weight->defined() ? c10::optional<at::Tensor>(upcast(*weight).contiguous())
                                  : c10::nullopt;
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

}  // namespace

TORCH_LIBRARY_IMPL(pymakemore, CPU, m) {
  CrossEntropyOps<cross_entropy_cpu>::register_into(m);
  m.impl("cross_entropy_backward", &cross_entropy_backward_cpu);
  m.impl("scale_grad_", &scale_grad_cpu);
}

}  // namespace pymakemore
