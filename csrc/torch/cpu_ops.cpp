// CPU registrations: argument checks, allocation, then the torch-free kernels in csrc/cpu.
// float16/bfloat16 tensors are computed in float32 and cast back (CPU kernels are f32/f64).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "checks.h"
#include "cross_entropy_ops.h"
#include "linear_ops.h"
#include "pymakemore/kernels.h"

namespace pymakemore {
namespace {

const ParallelFor& torch_parallel_for() {
  static const ParallelFor pfor = [](int64_t n, int64_t grain, const RangeFn& fn) {
    if (n <= 0) return;
    if (n == 1 || n <= grain) {  // one piece: no parallel region to open
      fn(0, n);
      return;
    }
    at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) { fn(begin, end); });
  };
  return pfor;
}

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

at::Tensor new_output_like(const at::Tensor& t) { return new_output(t.sizes(), t.options()); }

void all_on_cpu(const char* op, std::initializer_list<const at::Tensor*> tensors) {
  checks::all_on(c10::DeviceType::CPU, op, tensors);
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

// Runs body with Index = int32_t or int64_t.
template <typename Body>
void with_index_type(at::ScalarType st, Body&& body) {
  if (st == at::kLong)
    body(int64_t{});
  else
    body(int32_t{});
}

template <typename T>
const T* ptr_or_null(const c10::optional<at::Tensor>& t) {
  return t && t->defined() ? t->data_ptr<T>() : nullptr;
}

// ---- embedding ------------------------------------------------------------------------------
at::Tensor embedding_cpu(const at::Tensor& input, const at::Tensor& weight, int64_t padding_idx,
                         bool scale_grad_by_freq) {
  checks::embedding_args(input, weight);
  all_on_cpu("embedding", {&input, &weight});
  if (half_precision(weight))
    return embedding_cpu(input, upcast(weight), padding_idx, scale_grad_by_freq)
        .to(weight.scalar_type());
  const at::Tensor idx = input.contiguous();
  const at::Tensor w = weight.contiguous();
  const int64_t rows = w.size(0), dim = w.size(1);
  at::Tensor out = new_output(checks::embedding_output_shape(idx, dim), w.options());
  int64_t bad = kAllValid;
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "embedding_cpu", [&] {
    with_index_type(idx.scalar_type(), [&](auto index_tag) {
      using Index = decltype(index_tag);
      bad = embedding_forward<scalar_t, Index>(idx.data_ptr<Index>(), idx.numel(),
                                               w.data_ptr<scalar_t>(), rows, dim,
                                               out.data_ptr<scalar_t>(), torch_parallel_for());
    });
  });
  if (bad != kAllValid) checks::bad_index("embedding", checks::index_at(idx, bad), bad, rows);
  return out;
}

at::Tensor embedding_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                  int64_t num_weights, int64_t padding_idx,
                                  bool scale_grad_by_freq) {
  checks::embedding_backward_args(grad_output, input, num_weights);
  all_on_cpu("embedding_backward", {&grad_output, &input});
  if (half_precision(grad_output))
    return embedding_backward_cpu(upcast(grad_output), input, num_weights, padding_idx,
                                  scale_grad_by_freq)
        .to(grad_output.scalar_type());
  const at::Tensor idx = input.contiguous();
  const at::Tensor grad = grad_output.contiguous();
  const int64_t dim = grad.size(-1);
  at::Tensor grad_weight = new_output({num_weights, dim}, grad.options());
  int64_t bad = kAllValid;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "embedding_backward_cpu", [&] {
    with_index_type(idx.scalar_type(), [&](auto index_tag) {
      using Index = decltype(index_tag);
      bad = embedding_backward<scalar_t, Index>(
          grad.data_ptr<scalar_t>(), idx.data_ptr<Index>(), idx.numel(), num_weights, dim,
          padding_idx, scale_grad_by_freq, grad_weight.data_ptr<scalar_t>(),
          torch_parallel_for());
    });
  });
  if (bad != kAllValid)
    checks::bad_index("embedding_backward", checks::index_at(idx, bad), bad, num_weights);
  return grad_weight;
}

// ---- linear, linear_tanh ---------------------------------------------------------------------
at::Tensor linear_forward_cpu(const char* op, Activation act, const at::Tensor& input,
                              const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  checks::linear_args(op, input, weight, bias);
  all_on_cpu(op, {&input, &weight});
  if (bias) all_on_cpu(op, {&*bias});
  if (half_precision(input))
    return linear_forward_cpu(op, act, upcast(input), upcast(weight), upcast(bias))
        .to(input.scalar_type());
  const at::Tensor x = input.contiguous();
  const at::Tensor w = weight.contiguous();
  const c10::optional<at::Tensor> b = checks::contiguous(bias);
  const int64_t k = w.size(1), h = w.size(0);
  const int64_t rows = c10::multiply_integers(x.sizes().begin(), x.sizes().end() - 1);
  at::Tensor y = new_output(checks::linear_output_shape(x, w), x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "linear_cpu", [&] {
    linear_forward<scalar_t>(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                             ptr_or_null<scalar_t>(b), rows, k, h, act, y.data_ptr<scalar_t>(),
                             torch_parallel_for());
  });
  return y;
}

// output: the forward's y for tanh, undefined for identity.
LinearGrads linear_backward_cpu(
    const char* op, Activation act, const at::Tensor& grad_output, const at::Tensor& output,
    const at::Tensor& input, const at::Tensor& weight, std::array<bool, 3> output_mask) {
  checks::linear_backward_args(op, grad_output, output, input, weight);
  all_on_cpu(op, {&grad_output, &output, &input, &weight});
  if (half_precision(input)) {
    auto [gx, gw, gb] = linear_backward_cpu(op, act, upcast(grad_output), upcast(output),
                                            upcast(input), upcast(weight), output_mask);
    const auto st = input.scalar_type();
    return {gx.to(st), gw.to(st), gb.to(st)};
  }
  const at::Tensor gy = grad_output.contiguous();
  const at::Tensor y = output.defined() ? output.contiguous() : at::Tensor();
  const at::Tensor x = input.contiguous();
  const at::Tensor w = weight.contiguous();
  const int64_t k = w.size(1), h = w.size(0);
  const int64_t rows = c10::multiply_integers(x.sizes().begin(), x.sizes().end() - 1);
  at::Tensor grad_x = output_mask[0] ? new_output_like(x) : at::empty({0}, x.options());
  at::Tensor grad_w = output_mask[1] ? at::empty_like(w) : at::empty({0}, x.options());
  at::Tensor grad_b = output_mask[2] ? at::empty({h}, x.options()) : at::empty({0}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "linear_backward_cpu", [&] {
    linear_backward<scalar_t>(
        gy.data_ptr<scalar_t>(), y.defined() ? y.data_ptr<scalar_t>() : nullptr,
        x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), rows, k, h, act,
        output_mask[0] ? grad_x.data_ptr<scalar_t>() : nullptr,
        output_mask[1] ? grad_w.data_ptr<scalar_t>() : nullptr,
        output_mask[2] ? grad_b.data_ptr<scalar_t>() : nullptr, torch_parallel_for());
  });
  return {grad_x, grad_w, grad_b};
}

// ---- cross_entropy --------------------------------------------------------------------------
// (loss, lse) and, with_grad, the gradient for grad_loss = 1 from the same pass.
CrossEntropyOutputs cross_entropy_cpu(
    const char* op, const at::Tensor& input, const at::Tensor& target,
    const c10::optional<at::Tensor>& weight, c10::string_view reduction, int64_t ignore_index,
    double label_smoothing, bool with_grad) {
  const CrossEntropyOptions opt = checks::cross_entropy_forward_args(
      input, target, weight, reduction, ignore_index, label_smoothing);
  if (with_grad) checks::reduced_for_gradient(op, opt);
  all_on_cpu(op, {&input, &target});
  if (weight) all_on_cpu(op, {&*weight});
  if (half_precision(input)) {
    auto [loss, lse, grad] = cross_entropy_cpu(op, upcast(input), target, upcast(weight),
                                                reduction, ignore_index, label_smoothing,
                                                with_grad);
    return {loss.to(input.scalar_type()), lse,
            with_grad ? grad.to(input.scalar_type()) : grad};
  }
  const at::Tensor x = input.contiguous();
  const at::Tensor t = target.contiguous();
  const c10::optional<at::Tensor> w = checks::contiguous(weight);
  const int64_t n = x.size(0), c = x.size(1);
  at::Tensor loss = opt.reduction == Reduction::None ? at::empty({n}, x.options())
                                                     : at::empty({}, x.options());
  at::Tensor lse = at::empty({n}, x.options().dtype(checks::kLseDtype));
  at::Tensor grad = with_grad ? new_output_like(x) : at::Tensor();
  int64_t bad = kAllValid;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cross_entropy_cpu", [&] {
    with_index_type(t.scalar_type(), [&](auto index_tag) {
      using Index = decltype(index_tag);
      bad = cross_entropy_forward<scalar_t, Index>(
          x.data_ptr<scalar_t>(), t.data_ptr<Index>(), ptr_or_null<scalar_t>(w), n, c, opt,
          loss.data_ptr<scalar_t>(), lse.data_ptr<double>(),
          with_grad ? grad.data_ptr<scalar_t>() : nullptr, torch_parallel_for());
    });
  });
  if (bad != kAllValid) checks::bad_target(checks::index_at(t, bad), bad, c, ignore_index);
  return {loss, lse, grad};
}

// grad *= grad_loss, skipped when grad_loss is 1 (on the CPU its value is at hand).
void scale_grad_cpu(at::Tensor& grad, const at::Tensor& grad_loss) {
  checks::scale_grad_args(grad, grad_loss);
  all_on_cpu("scale_grad_", {&grad, &grad_loss});
  if (grad_loss.item<double>() != 1.0) grad.mul_(grad_loss);
}

at::Tensor cross_entropy_backward_cpu(const at::Tensor& grad_loss, const at::Tensor& input,
                                      const at::Tensor& target,
                                      const c10::optional<at::Tensor>& weight,
                                      const at::Tensor& lse, c10::string_view reduction,
                                      int64_t ignore_index, double label_smoothing) {
  const CrossEntropyOptions opt = checks::cross_entropy_backward_args(
      grad_loss, input, target, weight, lse, reduction, ignore_index, label_smoothing);
  all_on_cpu("cross_entropy_backward", {&grad_loss, &input, &target, &lse});
  const int64_t n = input.size(0), c = input.size(1);
  if (half_precision(input))
    return cross_entropy_backward_cpu(upcast(grad_loss), upcast(input), target, upcast(weight),
                                      lse, reduction, ignore_index,
                                      label_smoothing)
        .to(input.scalar_type());
  const at::Tensor x = input.contiguous();
  const at::Tensor t = target.contiguous();
  // (.to() is a dispatcher round trip even when nothing changes: skip it then)
  const at::Tensor g = (grad_loss.scalar_type() == x.scalar_type() ? grad_loss
                                                                   : grad_loss.to(x.scalar_type()))
                           .contiguous();
  const at::Tensor l =
      (lse.scalar_type() == checks::kLseDtype ? lse : lse.to(checks::kLseDtype)).contiguous();
  const c10::optional<at::Tensor> w = checks::contiguous(weight);
  at::Tensor grad_input = new_output_like(x);
  if (n == 0) return grad_input;
  int64_t bad = kAllValid;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cross_entropy_backward_cpu", [&] {
    with_index_type(t.scalar_type(), [&](auto index_tag) {
      using Index = decltype(index_tag);
      bad = cross_entropy_backward<scalar_t, Index>(
          g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), t.data_ptr<Index>(),
          ptr_or_null<scalar_t>(w), l.data_ptr<double>(), n, c, opt,
          grad_input.data_ptr<scalar_t>(), torch_parallel_for());
    });
  });
  if (bad != kAllValid) checks::bad_target(checks::index_at(t, bad), bad, c, ignore_index);
  return grad_input;
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
