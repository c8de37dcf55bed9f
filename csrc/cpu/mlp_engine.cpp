// Whole training steps of the makemore MLP in C++: the per-op kernels called back to back,
// with no autograd, dispatcher or Python between them, the hidden layer's two halves on two
// threads. All scratch is allocated once per call, not per step.
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "common.h"
#include "pymakemore/kernels.h"

namespace pymakemore {
namespace {

uint64_t mix64(uint64_t z) {  // splitmix64's finaliser: a bijection with good avalanche
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

// A second thread kept spinning for the length of one engine call, so that a step can hand it
// half of its work for well under a microsecond (opening an OpenMP region costs several).
class Pair {
 public:
  Pair() : worker_([this] { serve(); }) {}
  ~Pair() {
    stop_.store(true, std::memory_order_release);
    worker_.join();
  }

  // fn(0, n/2) here while the worker runs fn(n/2, n); returns when both are done.
  void run(int64_t n, const RangeFn& fn) {
    job_ = &fn;
    begin_ = n / 2;
    end_ = n;
    const uint64_t ticket = posted_.load(std::memory_order_relaxed) + 1;
    posted_.store(ticket, std::memory_order_release);
    fn(0, n / 2);
    while (finished_.load(std::memory_order_acquire) != ticket) cpu_relax();
  }

 private:
  void serve() {
    uint64_t seen = 0;
    while (true) {
      uint64_t ticket;
      while ((ticket = posted_.load(std::memory_order_acquire)) == seen) {
        if (stop_.load(std::memory_order_acquire)) return;
        cpu_relax();
      }
      (*job_)(begin_, end_);
      seen = ticket;
      finished_.store(ticket, std::memory_order_release);
    }
  }

  const RangeFn* job_ = nullptr;
  int64_t begin_ = 0, end_ = 0;
  alignas(64) std::atomic<uint64_t> posted_{0};    // written here, polled by the worker
  alignas(64) std::atomic<uint64_t> finished_{0};  // written by the worker, polled here
  std::atomic<bool> stop_{false};
  std::thread worker_;  // last: starts once the fields above exist
};

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
                        float* losses, int threads) {
  const int64_t B = shape.batch, V = shape.vocab, T = shape.block, D = shape.n_embd;
  const int64_t K = T * D, H = shape.n_hidden;
  // every character id used below is checked once, up front
  for (int64_t i = 0; i < n_train * T; ++i)
    if (X[i] < 0 || X[i] >= V) return i;
  for (int64_t i = 0; i < n_train; ++i)
    if (Y[i] < 0 || Y[i] >= V) return n_train * T + i;

  // The hidden units are split in two halves, always (so one thread or two give the same
  // numbers). Each half owns its rows of W1 and b1 and its columns of W2 (kept here as a
  // contiguous copy): the heavy products of a step then need no data from the other half
  // but the (B, K) embeddings in and two small partial sums out.
  struct Half {
    int64_t h0, hn;
    std::vector<float> W2, hidden, logits, d_hidden, dW2, dW1, db1, d_emb;
  };
  Half halves[2];
  // the first half a multiple of 16 (one 64-byte vector of floats): no padded lanes in it
  const int64_t split = H / 2 >= 16 ? H / 2 / 16 * 16 : H / 2;
  for (int i = 0; i < 2; ++i) {
    Half& hf = halves[i];
    hf.h0 = i == 0 ? 0 : split;
    hf.hn = i == 0 ? split : H - split;
    hf.W2.resize(V * hf.hn);
    for (int64_t v = 0; v < V; ++v)
      std::copy(params.W2 + v * H + hf.h0, params.W2 + v * H + hf.h0 + hf.hn,
                hf.W2.begin() + v * hf.hn);
    hf.hidden.resize(B * hf.hn);
    hf.logits.resize(B * V);
    hf.d_hidden.resize(B * hf.hn);
    hf.dW2.resize(V * hf.hn);
    hf.dW1.resize(hf.hn * K);
    hf.db1.resize(hf.hn);
    hf.d_emb.resize(B * K);
  }

  std::vector<int64_t> xb(B * T), yb(B);
  std::vector<float> emb(B * K), logits(B * V), d_logits(B * V), d_emb(B * K), dC(V * D),
      db2(V);
  std::vector<double> lse(B);
  std::unique_ptr<Pair> pair = threads >= 2 ? std::make_unique<Pair>() : nullptr;
  auto both_halves = [&](const auto& work) {
    const auto range = [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) work(halves[i], i == 0);
    };
    if (pair)
      pair->run(2, range);
    else
      range(0, 2);
  };
  CrossEntropyOptions mean_loss;  // mean over the batch, no ignore, no smoothing
  const float one = 1.0f;
  for (int64_t s = 0; s < steps; ++s) {
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = batch_indices ? batch_indices[s * B + b]
                                        : mlp_batch_index(seed, first_step + s, b, n_train);
      for (int64_t t = 0; t < T; ++t) xb[b * T + t] = X[row * T + t];
      yb[b] = Y[row];
    }
    embedding_forward<float, int64_t>(xb.data(), B * T, params.C, V, D, emb.data(), serial_for);
    // hidden = tanh(emb W1^T + b1) and the half's share of the logits
    both_halves([&](Half& hf, bool) {
      linear_forward<float>(emb.data(), params.W1 + hf.h0 * K, params.b1 + hf.h0, B, K, hf.hn,
                            Activation::Tanh, hf.hidden.data(), serial_for);
      linear_forward<float>(hf.hidden.data(), hf.W2.data(), nullptr, B, hf.hn, V,
                            Activation::Identity, hf.logits.data(), serial_for);
    });
    for (int64_t b = 0; b < B; ++b)
      for (int64_t v = 0; v < V; ++v)
        logits[b * V + v] = halves[0].logits[b * V + v] + halves[1].logits[b * V + v] + params.b2[v];
    cross_entropy_forward<float, int64_t>(logits.data(), yb.data(), nullptr, B, V, mean_loss,
                                          losses + s, lse.data(), serial_for);
    cross_entropy_backward<float, int64_t>(&one, logits.data(), yb.data(), nullptr, lse.data(),
                                           B, V, mean_loss, d_logits.data(), serial_for);
    // each half: its gradients, then its own update (after every use of its old weights)
    const float lr = lrs[s];
    both_halves([&](Half& hf, bool first) {
      linear_backward<float>(d_logits.data(), nullptr, hf.hidden.data(), hf.W2.data(), B, hf.hn,
                             V, Activation::Identity, hf.d_hidden.data(), hf.dW2.data(),
                             first ? db2.data() : nullptr, serial_for);
      linear_backward<float>(hf.d_hidden.data(), hf.hidden.data(), emb.data(),
                             params.W1 + hf.h0 * K, B, K, hf.hn, Activation::Tanh,
                             hf.d_emb.data(), hf.dW1.data(), hf.db1.data(), serial_for);
      sgd(params.W1 + hf.h0 * K, hf.dW1.data(), hf.hn * K, lr);
      sgd(params.b1 + hf.h0, hf.db1.data(), hf.hn, lr);
      sgd(hf.W2.data(), hf.dW2.data(), V * hf.hn, lr);
    });
    for (int64_t e = 0; e < B * K; ++e) d_emb[e] = halves[0].d_emb[e] + halves[1].d_emb[e];
    embedding_backward<float, int64_t>(d_emb.data(), xb.data(), B * T, V, D, -1, false,
                                       dC.data(), serial_for);
    sgd(params.C, dC.data(), V * D, lr);
    sgd(params.b2, db2.data(), V, lr);
  }
  for (const Half& hf : halves)
    for (int64_t v = 0; v < V; ++v)
      std::copy(hf.W2.begin() + v * hf.hn, hf.W2.begin() + (v + 1) * hf.hn,
                params.W2 + v * H + hf.h0);
  return kAllValid;
}

}  // namespace pymakemore
