// chain_train_steps on the CPU (the fused engine of the BatchNorm models): the checks of every
// argument, then the torch-free engine of csrc/cpu/kernels/chain_engine.cpp.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "pymakemore/kernels.h"

namespace pymakemore {
namespace {

constexpr const char* kOp = "chain_train_steps: ";

void check_tensor(const at::Tensor& t, const std::string& name, at::ScalarType dtype,
                  std::vector<int64_t> sizes) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == dtype && t.is_contiguous(), kOp, name,
              " must be a contiguous ", dtype, " CPU tensor, but got ", t.scalar_type(), " on ",
              t.device());
  TORCH_CHECK(t.sizes() == at::IntArrayRef(sizes), kOp, name, " must have shape ",
              at::IntArrayRef(sizes), ", but got ", t.sizes());
}

std::string nth(const char* name, size_t i) {
  return std::string(name) + "[" + std::to_string(i) + "]";
}

std::tuple<at::Tensor, at::Tensor> chain_train_steps_cpu(
    at::Tensor& C, at::TensorList weights, at::TensorList biases, at::TensorList gains,
    at::TensorList shifts, at::TensorList running_means, at::TensorList running_vars,
    at::Tensor& out_weight, at::Tensor& out_bias, const at::Tensor& X, const at::Tensor& Y,
    const at::Tensor& lrs, at::IntArrayRef groups, double momentum, double eps, bool unbiased,
    int64_t batch_size, int64_t first_step, int64_t seed,
    const c10::optional<at::Tensor>& batch_indices, const c10::optional<at::Tensor>& record) {
  const size_t layers = weights.size();
  TORCH_CHECK(layers >= 1, kOp, "needs at least one hidden layer");
  TORCH_CHECK(groups.size() == layers && gains.size() == layers && shifts.size() == layers &&
                  running_means.size() == layers && running_vars.size() == layers &&
                  (biases.empty() || biases.size() == layers),
              kOp, "groups, gains, shifts, running_means and running_vars need one entry per "
              "weight (", layers, "), and biases one or none");
  TORCH_CHECK(C.dim() == 2 && X.dim() == 2, kOp, "C must be 2-D (vocab, n_embd) and X 2-D "
              "(examples, block), but got ", C.sizes(), " and ", X.sizes());
  const int64_t V = C.size(0), D = C.size(1), n = X.size(0), T = X.size(1);
  check_tensor(C, "C", at::kFloat, {V, D});
  check_tensor(X, "X", at::kLong, {n, T});
  check_tensor(Y, "Y", at::kLong, {n});
  TORCH_CHECK(lrs.dim() == 1, kOp, "lrs must be 1-D, but got ", lrs.sizes());
  check_tensor(lrs, "lrs", at::kFloat, {lrs.size(0)});
  TORCH_CHECK(n >= 1 && V >= 1 && D >= 1 && T >= 1, kOp, "needs data and a vocabulary");
  TORCH_CHECK(std::isfinite(momentum) && std::isfinite(eps) && eps >= 0, kOp,
              "momentum must be finite and eps finite and >= 0, but got ", momentum, " and ",
              eps);
  std::vector<ChainLayer> chain(layers);
  int64_t positions = T, features = D;
  for (size_t i = 0; i < layers; ++i) {
    const int64_t k = groups[i];
    TORCH_CHECK(k >= 1 && positions % k == 0, kOp, "groups[", i, "] = ", k, " does not divide ",
                "the ", positions, " positions left");
    TORCH_CHECK(weights[i].dim() == 2, kOp, nth("weights", i), " must be 2-D, but got ",
                weights[i].sizes());
    const int64_t H = weights[i].size(0);
    check_tensor(weights[i], nth("weights", i), at::kFloat, {H, k * features});
    if (!biases.empty()) check_tensor(biases[i], nth("biases", i), at::kFloat, {H});
    check_tensor(gains[i], nth("gains", i), at::kFloat, {H});
    check_tensor(shifts[i], nth("shifts", i), at::kFloat, {H});
    check_tensor(running_means[i], nth("running_means", i), at::kFloat, {H});
    check_tensor(running_vars[i], nth("running_vars", i), at::kFloat, {H});
    chain[i] = {k, features, H, weights[i].data_ptr<float>(),
                biases.empty() ? nullptr : biases[i].data_ptr<float>(), gains[i].data_ptr<float>(),
                shifts[i].data_ptr<float>(), running_means[i].data_ptr<float>(),
                running_vars[i].data_ptr<float>()};
    positions /= k;
    features = H;
  }
  TORCH_CHECK(positions == 1, kOp, "the groups must leave one position of the ", T,
              ", but leave ", positions);
  check_tensor(out_weight, "out_weight", at::kFloat, {V, features});
  check_tensor(out_bias, "out_bias", at::kFloat, {V});
  TORCH_CHECK(batch_size >= 2, kOp, "BatchNorm's batch statistics need batch_size >= 2, got ",
              batch_size);
  const int64_t steps = lrs.size(0);
  const int64_t* indices = nullptr;
  if (batch_indices && batch_indices->defined()) {
    check_tensor(*batch_indices, "batch_indices", at::kLong, {steps, batch_size});
    const int64_t* p = batch_indices->data_ptr<int64_t>();
    for (int64_t i = 0; i < batch_indices->numel(); ++i)
      TORCH_CHECK_INDEX(p[i] >= 0 && p[i] < n, kOp, "batch index ", p[i],
                        " is out of range for ", n, " examples");
    indices = p;
  }
  const bool* recorded_steps = nullptr;
  int64_t recorded = 0;
  if (record && record->defined()) {
    check_tensor(*record, "record", at::kBool, {steps});
    recorded_steps = record->data_ptr<bool>();
    recorded = record->sum().item<int64_t>();
  }
  at::Tensor update_stats = at::zeros({recorded, static_cast<int64_t>(layers) + 2, 4},
                                      lrs.options().dtype(at::kDouble));
  at::Tensor losses = at::empty({steps}, lrs.options());
  const ChainShape shape{V, T, D, batch_size, static_cast<int64_t>(layers), momentum, eps,
                         unbiased};
  const ChainParams params{C.data_ptr<float>(), chain.data(), out_weight.data_ptr<float>(),
                           out_bias.data_ptr<float>()};
  // the engine uses up to two threads, as torch.set_num_threads allows
  const int threads = std::min(2, at::get_num_threads());
  const int64_t bad = chain_train_steps(shape, params, X.data_ptr<int64_t>(),
                                        Y.data_ptr<int64_t>(), n, lrs.data_ptr<float>(), steps,
                                        first_step, static_cast<uint64_t>(seed), indices,
                                        recorded_steps, update_stats.data_ptr<double>(),
                                        losses.data_ptr<float>(), threads);
  if (bad != kAllValid) {
    const bool in_x = bad < n * T;
    const int64_t value = in_x ? X.data_ptr<int64_t>()[bad] : Y.data_ptr<int64_t>()[bad - n * T];
    TORCH_CHECK_INDEX(false, kOp, "character id ", value, " in ", in_x ? "X" : "Y",
                      " is out of range for a vocabulary of ", V);
  }
  return {losses, update_stats};
}

}  // namespace

TORCH_LIBRARY_IMPL(pymakemore, CPU, m) {
  m.impl("chain_train_steps", &chain_train_steps_cpu);
}

}  // namespace pymakemore
