// Whole training steps of the makemore MLP in C++: the per-op kernels called back to back on
// one thread, with no autograd, dispatcher or Python between them. All scratch is allocated
// once per call, not per step.
#include <vector>

#include "common.h"
#include "pymakemore/kernels.h"

namespace pymakemore {
namespace {

uint64_t mix64(uint64_t z) {  // splitmix64's finaliser: a bijection with good avalanche
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void sgd(float* p, const float* g, int64_t n, float lr) {
  for (int64_t i = 0; i < n; ++i) p[i] -= lr * g[i];
}

}  // namespace

int64_t mlp_batch_index(uint64_t seed, int64_t step, int64_t b, int64_t n_train) {
  const uint64_t h = mix64(mix64(seed ^ 0x9e3779b97f4a7c15ULL) + static_cast<uint64_t>(step) *
                                                                  0x9e3779b97f4a7c15ULL +
                           static_cast<uint64_t>(b));
  // the high 64 bits of h * n: uniform on [0, n) up to n / 2^64
  return static_cast<int64_t>((static_cast<unsigned __int128>(h) * static_cast<uint64_t>(n_train)) >> 64);
}

int64_t mlp_train_steps(const MlpShape& shape, MlpParams params, const int64_t* X,
                        const int64_t* Y, int64_t n_train, const float* lrs, int64_t steps,
                        int64_t first_step, uint64_t seed, const int64_t* batch_indices,
                        float* losses) {
  const int64_t B = shape.batch, V = shape.vocab, T = shape.block, D = shape.n_embd;
  const int64_t K = T * D, H = shape.n_hidden;
  // every character id used below is checked once, up front
  for (int64_t i = 0; i < n_train * T; ++i)
    if (X[i] < 0 || X[i] >= V) return i;
  for (int64_t i = 0; i < n_train; ++i)
    if (Y[i] < 0 || Y[i] >= V) return n_train * T + i;

  std::vector<int64_t> xb(B * T), yb(B);
  std::vector<float> emb(B * K), hidden(B * H), logits(B * V), d_logits(B * V), d_hidden(B * H),
      d_emb(B * K), dC(V * D), dW1(H * K), db1(H), dW2(V * H), db2(V);
  std::vector<double> lse(B);
  CrossEntropyOptions mean_loss;  // mean over the batch, no ignore, no smoothing
  const float one = 1.0f;
  for (int64_t s = 0; s < steps; ++s) {
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = batch_indices ? batch_indices[s * B + b]
                                        : mlp_batch_index(seed, first_step + s, b, n_train);
      for (int64_t t = 0; t < T; ++t) xb[b * T + t] = X[row * T + t];
      yb[b] = Y[row];
    }
    // forward
    embedding_forward<float, int64_t>(xb.data(), B * T, params.C, V, D, emb.data(), serial_for);
    linear_forward<float>(emb.data(), params.W1, params.b1, B, K, H, Activation::Tanh,
                          hidden.data(), serial_for);
    linear_forward<float>(hidden.data(), params.W2, params.b2, B, H, V, Activation::Identity,
                          logits.data(), serial_for);
    cross_entropy_forward<float, int64_t>(logits.data(), yb.data(), nullptr, B, V, mean_loss,
                                          losses + s, lse.data(), serial_for);
    // backward
    cross_entropy_backward<float, int64_t>(&one, logits.data(), yb.data(), nullptr, lse.data(),
                                           B, V, mean_loss, d_logits.data(), serial_for);
    linear_backward<float>(d_logits.data(), nullptr, hidden.data(), params.W2, B, H, V,
                           Activation::Identity, d_hidden.data(), dW2.data(), db2.data(),
                           serial_for);
    linear_backward<float>(d_hidden.data(), hidden.data(), emb.data(), params.W1, B, K, H,
                           Activation::Tanh, d_emb.data(), dW1.data(), db1.data(), serial_for);
    embedding_backward<float, int64_t>(d_emb.data(), xb.data(), B * T, V, D, -1, false,
                                       dC.data(), serial_for);
    // update
    const float lr = lrs[s];
    sgd(params.C, dC.data(), V * D, lr);
    sgd(params.W1, dW1.data(), H * K, lr);
    sgd(params.b1, db1.data(), H, lr);
    sgd(params.W2, dW2.data(), V * H, lr);
    sgd(params.b2, db2.data(), V, lr);
  }
  return kAllValid;
}

}  // namespace pymakemore
