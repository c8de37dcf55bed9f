// CPU registrations: the checks, operands and outputs of op_calls.h, then the torch-free kernels
// in csrc/cpu. float16/bfloat16 tensors are computed in float32 and cast back (CPU kernels are
// f32/f64).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "checks.h"
#include "cpu_glue.h"
#include "cross_entropy_ops.h"
#include "linear_ops.h"
#include "op_calls.h"
#include "pymakemore/kernels.h"

namespace pymakemore {
namespace {

// Outputs are written once, right after allocation. For large ones most of that time goes
// to page faults (4 KiB each, zeroed by the kernel); asking for transparent huge pages
// before the first touch makes it 512 times fewer faults. Only above 32 MiB, where glibc
// always maps fresh memory: smaller blocks come back from its heap already mapped, and
// there the hint only costs. A hint: with THP off nothing changes.
at::Tensor new_output(at::IntArrayRef shape, const at::TensorOptions& options) {
  at::Tensor out = at::empty(shape, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  constexpr size_t kMinBytes = size_t(32) << 20;
  const size_t bytes = out.nbytes();
  if (bytes > kMinBytes) {
    const uintptr_t start = reinterpret_cast<uintptr_t>(out.data_ptr());
    const uintptr_t begin = (start + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t end = (start + bytes) & ~(kHuge - 1);
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  }
#endif
  return out;
}

at::Tensor upcast(const at::Tensor& t) {
  return t.defined() && at::isReducedFloatingType(t.scalar_type()) ? t.to(at::kFloat) : t;
}

c10::optional<at::Tensor> upcast(const c10::optional<at::Tensor>& t) {
  if (!t || !t->defined()) return c10::nullopt;
  return upcast(*t);
}

// float16 or bfloat16 (computed in float32 here)
bool half_precision(const at::Tensor& t) { return at::isReducedFloatingType(t.scalar_type()); }

template <typename T>
const T* ptr_or_null(const c10::optional<at::Tensor>& t) {
  return t && t->defined() ? t->data_ptr<T>() : nullptr;
}

// ---- embedding ------------------------------------------------------------------------------
at::Tensor embedding_cpu(const at::Tensor& input, const at::Tensor& weight, int64_t padding_idx,
                         bool scale_grad_by_freq) {
  calls::check_embedding(at::kCPU, input, weight);
  if (half_precision(weight))
    return embedding_cpu(input, upcast(weight), padding_idx, scale_grad_by_freq)
        .to(weight.scalar_type());
  const calls::Embedding c = calls::embedding(input, weight, &new_output);
  int64_t bad = kAllValid;
  AT_DISPATCH_FLOATING_TYPES(c.weight.scalar_type(), "embedding_cpu", [&] {
    with_index_type(c.idx.scalar_type(), [&](auto index_tag) {
      using Index = decltype(index_tag);
      bad = embedding_forward<scalar_t, Index>(c.idx.data_ptr<Index>(), c.idx.numel(),
                                               c.weight.data_ptr<scalar_t>(), c.rows(), c.dim(),
                                               c.out.data_ptr<scalar_t>(), torch_parallel_for());
    });
  });
  if (bad != kAllValid) checks::bad_index("embedding", checks::index_at(c.idx, bad), bad, c.rows());
  return c.out;
}

at::Tensor embedding_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                  int64_t num_weights, int64_t padding_idx,
                                  bool scale_grad_by_freq) {
  calls::check_embedding_backward(at::kCPU, grad_output, input, num_weights);
  if (half_precision(grad_output))
    return embedding_backward_cpu(upcast(grad_output), input, num_weights, padding_idx,
                                  scale_grad_by_freq)
        .to(grad_output.scalar_type());
  const calls::EmbeddingBackward c =
      calls::embedding_backward(grad_output, input, num_weights, &new_output);
  int64_t bad = kAllValid;
  AT_DISPATCH_FLOATING_TYPES(c.grad.scalar_type(), "embedding_backward_cpu", [&] {
    with_index_type(c.idx.scalar_type(), [&](auto index_tag) {
      using Index = decltype(index_tag);
      bad = embedding_backward<scalar_t, Index>(
          c.grad.data_ptr<scalar_t>(), c.idx.data_ptr<Index>(), c.idx.numel(), num_weights,
          c.dim(), padding_idx, scale_grad_by_freq, c.grad_weight.data_ptr<scalar_t>(),
          torch_parallel_for());
    });
  });
  if (bad != kAllValid)
    checks::bad_index("embedding_backward", checks::index_at(c.idx, bad), bad, num_weights);
  return c.grad_weight;
}

// ---- linear, linear_tanh ---------------------------------------------------------------------
at::Tensor linear_forward_cpu(const char* op, Activation act, const at::Tensor& input,
                              const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  calls::check_linear(at::kCPU, op, input, weight, bias);
  if (half_precision(input))
    return linear_forward_cpu(op, act, upcast(input), upcast(weight), upcast(bias))
        .to(input.scalar_type());
  const calls::Linear c = calls::linear(input, weight, bias, &new_output);
  AT_DISPATCH_FLOATING_TYPES(c.x.scalar_type(), "linear_cpu", [&] {
    linear_forward<scalar_t>(c.x.data_ptr<scalar_t>(), c.w.data_ptr<scalar_t>(),
                             ptr_or_null<scalar_t>(c.b), c.rows, c.in_features, c.out_features,
                             act, c.y.data_ptr<scalar_t>(), torch_parallel_for());
  });
  return c.y;
}

LinearGrads linear_backward_cpu(
    const char* op, Activation act, const at::Tensor& grad_output, const at::Tensor& output,
    const at::Tensor& input, const at::Tensor& weight, std::array<bool, 3> output_mask) {
  calls::check_linear_backward(at::kCPU, op, grad_output, output, input, weight);
  if (half_precision(input)) {
    auto [gx, gw, gb] = linear_backward_cpu(op, act, upcast(grad_output), upcast(output),
                                            upcast(input), upcast(weight), output_mask);
    const auto st = input.scalar_type();
    return {gx.to(st), gw.to(st), gb.to(st)};
  }
  const calls::LinearBackward c =
      calls::linear_backward(grad_output, output, input, weight, output_mask, &new_output);
  AT_DISPATCH_FLOATING_TYPES(c.x.scalar_type(), "linear_backward_cpu", [&] {
    linear_backward<scalar_t>(c.gy.data_ptr<scalar_t>(), c.y_ptr<scalar_t>(),
                              c.x.data_ptr<scalar_t>(), c.w.data_ptr<scalar_t>(), c.rows,
                              c.in_features, c.out_features, act, c.grad_x_ptr<scalar_t>(),
                              c.grad_w_ptr<scalar_t>(), c.grad_b_ptr<scalar_t>(),
                              torch_parallel_for());
  });
  return {c.grad_x, c.grad_w, c.grad_b};
}

// ---- cross_entropy --------------------------------------------------------------------------
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

// ---- the MLP engine ---------------------------------------------------------------------------
at::Tensor mlp_train_steps_cpu(at::Tensor& C, at::Tensor& W1, at::Tensor& b1, at::Tensor& W2,
                               at::Tensor& b2, const at::Tensor& X, const at::Tensor& Y,
                               const at::Tensor& lrs, int64_t batch_size, int64_t first_step,
                               int64_t seed, const c10::optional<at::Tensor>& batch_indices) {
  const MlpShape shape =
      checks::mlp_engine_args(C, W1, b1, W2, b2, X, Y, lrs, batch_size, batch_indices);
  TORCH_CHECK(C.device().is_cpu(), "mlp_train_steps: expected CPU tensors");
  const int64_t n = X.size(0), T = shape.block, steps = lrs.size(0);
  const int64_t* indices = nullptr;
  if (batch_indices && batch_indices->defined()) {
    const int64_t* p = batch_indices->data_ptr<int64_t>();
    for (int64_t i = 0; i < batch_indices->numel(); ++i)
      TORCH_CHECK_INDEX(p[i] >= 0 && p[i] < n, "mlp_train_steps: batch index ", p[i],
                        " is out of range for ", n, " examples");
    indices = p;
  }
  at::Tensor losses = at::empty({steps}, lrs.options());
  const MlpParams params{C.data_ptr<float>(), W1.data_ptr<float>(), b1.data_ptr<float>(),
                         W2.data_ptr<float>(), b2.data_ptr<float>()};
  // the engine uses up to two threads, as torch.set_num_threads allows
  const int threads = std::min(2, at::get_num_threads());
  const int64_t bad = mlp_train_steps(shape, params, X.data_ptr<int64_t>(), Y.data_ptr<int64_t>(),
                                      n, lrs.data_ptr<float>(), steps, first_step,
                                      static_cast<uint64_t>(seed), indices,
                                      losses.data_ptr<float>(), threads);
  if (bad != kAllValid) {
    const bool in_x = bad < n * T;
    const int64_t value = in_x ? X.data_ptr<int64_t>()[bad] : Y.data_ptr<int64_t>()[bad - n * T];
    TORCH_CHECK_INDEX(false, "mlp_train_steps: character id ", value, " in ", in_x ? "X" : "Y",
                      " is out of range for a vocabulary of ", shape.vocab);
  }
  return losses;
}

at::Tensor mlp_batch_indices_cpu(int64_t seed, int64_t first_step, int64_t steps,
                                 int64_t batch_size, int64_t n_train) {
  TORCH_CHECK(steps >= 0 && batch_size >= 1 && n_train >= 1,
              "mlp_batch_indices: need steps >= 0, batch_size >= 1, n_train >= 1");
  at::Tensor out = at::empty({steps, batch_size}, at::kLong);
  int64_t* p = out.data_ptr<int64_t>();
  for (int64_t s = 0; s < steps; ++s)
    for (int64_t b = 0; b < batch_size; ++b)
      p[s * batch_size + b] =
          mlp_batch_index(static_cast<uint64_t>(seed), first_step + s, b, n_train);
  return out;
}

}  // namespace

// No tensor arguments: registered for every backend.
TORCH_LIBRARY_IMPL(pymakemore, CompositeExplicitAutograd, m) {
  m.impl("mlp_batch_indices", &mlp_batch_indices_cpu);
}

TORCH_LIBRARY_IMPL(pymakemore, CPU, m) {
  m.impl("mlp_train_steps", &mlp_train_steps_cpu);
  m.impl("embedding", &embedding_cpu);
  m.impl("embedding_backward", &embedding_backward_cpu);
  LinearOps<linear_forward_cpu, linear_backward_cpu>::register_into(m);
  CrossEntropyOps<cross_entropy_cpu>::register_into(m);
  m.impl("cross_entropy_backward", &cross_entropy_backward_cpu);
  m.impl("scale_grad_", &scale_grad_cpu);
}

}  // namespace pymakemore
