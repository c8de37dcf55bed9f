// mlp_train_steps and mlp_batch_indices on the CPU: checks (mlp_train_steps.h), then the
// engine of csrc/cpu/kernels/mlp_engine.cpp.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "cpu_glue.h"
#include "mlp_train_steps.h"

#include <algorithm>

namespace pymakemore {
namespace {

at::Tensor mlp_train_steps_cpu(at::Tensor& C, at::Tensor& W1, at::Tensor& b1, at::Tensor& W2,
                               at::Tensor& b2, const at::Tensor& X, const at::Tensor& Y,
                               const at::Tensor& lrs, int64_t batch_size, int64_t first_step,
                               int64_t seed, const c10::optional<at::Tensor>& batch_indices) {
  const MlpShape shape =
      mlp_train_steps_args(C, W1, b1, W2, b2, X, Y, lrs, batch_size, batch_indices);
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
}

}  // namespace pymakemore
