// Whole training steps of the makemore MLP in C++ (minibatch draw, forward, backward, SGD
// update) with no autograd, dispatcher or Python between them and nothing allocated per step.
// Compiled once per instruction-set level (csrc/cpu/levels/).
//
// Layouts chosen for the small shapes (batch 32, 30 -> 200 -> 27): activations are kept
// transposed, (features, batch), so that every product but the two weight gradients runs with
// vectors along the batch and the weights as broadcast scalars; the two weight gradients run
// with vectors along a weight row and are subtracted from the weights as they leave the
// registers (no gradient buffers, no separate update pass). W1 is kept as (H, K) rows with b1
// as one more column (against an input column of ones) and W2 transposed as (H, V) rows, both
// padded to whole vectors, so each hidden unit owns one row of each.
//
// The hidden units are split in two halves, the same split on one thread or two (so both give
// the same numbers). On two threads each thread owns a half's rows and the threads meet at two
// barriers a step: once their partial logits are written, and once their partial gradients of
// the embeddings are. Everything else a step needs (the minibatch, the loss and its gradient,
// b2 and C with their updates) each thread computes for itself, identically, rather than wait
// for one thread to do it.
#include "this_level.h"  // first: see there

#include "common.h"
#include "cpu_math.h"
#include "engine_parts.h"
#include "simd.h"

namespace pymakemore::PYMAKEMORE_LEVEL {
using engine::Minibatches;

namespace {

using namespace engine;

// Two threads go on as one (the numbers do not change) once their barriers have slept this
// often within a window of steps: one core is not theirs, and two threads taking turns on it
// are slower than one thread doing both halves.
constexpr int kSleepsToGoSolo = 3;
constexpr int64_t kSleepWindow = 1000;

class MlpSteps {
 public:
  MlpSteps(const MlpShape& shape, const MlpParams& params, const int64_t* X, const int64_t* Y,
           int64_t n_train, int threads)
      : B(shape.batch), V(shape.vocab), T(shape.block), D(shape.n_embd), K(T * D),
        H(shape.n_hidden), Bp(cpu::round_up(B, L)), Kp(cpu::round_up(K + 1, L)),
        Vp(cpu::round_up(V, L)), X_(X), Y_(Y), n_train_(n_train), params_(params),
        threads_(threads), barrier_(threads, spin_limit()) {
    halves_ = split_units(H);
    const int64_t Hp = halves_[0].rows + halves_[1].rows;
    W1p_ = AlignedFloats(Hp * Kp);
    W2t_ = AlignedFloats(Hp * Vp);
    hiddenT_ = AlignedFloats(Hp * Bp);
    dzT_ = AlignedFloats(Hp * Bp);
    for (int i = 0; i < 2; ++i) {
      partial_logitsT_[i] = AlignedFloats(Vp * Bp);
      partial_d_embT_[i] = AlignedFloats(Kp * Bp);
    }
    for (const HiddenHalf& hf : halves_) {
      for (int64_t j = 0; j < hf.count; ++j) {
        const int64_t unit = hf.first + j, row = hf.row0 + j;
        std::copy(params.W1 + unit * K, params.W1 + (unit + 1) * K, &W1p_[row * Kp]);
        W1p_[row * Kp + K] = params.b1[unit];
        for (int64_t v = 0; v < V; ++v) W2t_[row * Vp + v] = params.W2[v * H + unit];
      }
    }
    for (int t = 0; t < threads; ++t) own_.emplace_back(*this);
  }

  // `steps` steps from first_step; thread 0 of the caller, thread 1 (if any) started here
  void run(const float* lrs, int64_t steps, int64_t first_step, uint64_t seed,
           const int64_t* batch_indices, float* losses) {
    const auto work = [&](int t) {
      steps_on(t, lrs, steps, first_step, seed, batch_indices, losses);
    };
    on_threads(threads_, work);
    // the parameters back in the caller's layouts (every thread's C and b2 are the same)
    std::copy(own_[0].C.begin(), own_[0].C.end(), params_.C);
    std::copy(own_[0].b2.begin(), own_[0].b2.end(), params_.b2);
    for (const HiddenHalf& hf : halves_) {
      for (int64_t j = 0; j < hf.count; ++j) {
        const int64_t unit = hf.first + j, row = hf.row0 + j;
        std::copy(&W1p_[row * Kp], &W1p_[row * Kp] + K, params_.W1 + unit * K);
        params_.b1[unit] = W1p_[row * Kp + K];
        for (int64_t v = 0; v < V; ++v) params_.W2[v * H + unit] = W2t_[row * Vp + v];
      }
    }
  }

 private:
  // What each thread keeps to itself: its copies of C and b2, the minibatch, its
  // embeddings, the loss and its buffers.
  struct ThreadState {
    explicit ThreadState(const MlpSteps& m)
        : C(m.params_.C, m.params_.C + m.V * m.D), b2(m.params_.b2, m.params_.b2 + m.V),
          dC(m.V * m.D), emb(m.B * m.Kp), embT(m.Kp * m.Bp), loss(m.V, m.B), rows(m.B),
          next_rows(m.B), xb(m.B * m.T), yb(m.B) {
      // the input column of ones, which the gathers leave alone
      for (int64_t b = 0; b < m.B; ++b) emb[b * m.Kp + m.K] = embT[m.K * m.Bp + b] = 1.0f;
    }
    std::vector<float> C, b2, dC;
    AlignedFloats emb, embT;  // emb (B, Kp), embT transposed
    ColumnLoss loss;
    std::vector<int64_t> rows, next_rows, xb, yb;
  };

  void steps_on(int t, const float* lrs, int64_t steps, int64_t first_step, uint64_t seed,
                const int64_t* batch_indices, float* losses) {
    ThreadState& own = own_[t];
    // this thread's halves: both on one thread, half t on two
    bool together = threads_ >= 2;
    int first_half = together ? t : 0, end_half = together ? t + 1 : 2;
    Sleeps sleeps;
    const Minibatches batches{X_, Y_, n_train_, T, B, seed, first_step, batch_indices};
    const auto draw = [&](int64_t s, std::vector<int64_t>& out) {
      if (s < steps) batches.draw(s, out.data());
    };
    draw(0, own.next_rows);
    for (int64_t s = 0; s < steps; ++s) {
      const float lr = lrs[s];
      own.rows.swap(own.next_rows);
      draw(s + 1, own.next_rows);
      gather(own);
      for (int i = first_half; i < end_half; ++i) forward(own, i);
      // a sleep at the first barrier can still take effect at this step's second one
      if (together && barrier_.wait(2 * s + 1)) note_sleep(s, sleeps, s);
      const float loss = loss_and_gradient(own, lr);
      if (t == 0) losses[s] = loss;
      for (int i = first_half; i < end_half; ++i) backward(own, i, lr);
      if (together) {
        if (barrier_.wait(2 * s + 2)) note_sleep(s, sleeps, s + 1);
        // both threads read this after the same barrier: they agree on the step
        if (solo_after_.load(std::memory_order_acquire) <= s) {
          if (t == 1) return;  // thread 0 goes on with both halves and identical C, b2
          together = false;
          first_half = 0;
          end_half = 2;
        }
      }
      update_embeddings(own, lr);
    }
  }

  // One thread's count of its barriers' sleeps in the current window of steps.
  struct Sleeps {
    int64_t window_start = 0;
    int count = 0;
  };

  // A barrier of step s slept: after kSleepsToGoSolo in one window of steps, ask for one
  // thread from the second barrier of step `from` on (the earliest asked for wins).
  void note_sleep(int64_t s, Sleeps& sleeps, int64_t from) {
    if (s - sleeps.window_start >= kSleepWindow) sleeps = {s, 0};
    if (++sleeps.count < kSleepsToGoSolo) return;
    int64_t current = solo_after_.load(std::memory_order_relaxed);
    while (from < current &&
           !solo_after_.compare_exchange_weak(current, from, std::memory_order_release)) {
    }
  }

  void gather(ThreadState& own) const {
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = own.rows[b];
      for (int64_t t = 0; t < T; ++t) {
        const int64_t id = own.xb[b * T + t] = X_[row * T + t];
        const float* src = own.C.data() + id * D;
        for (int64_t d = 0; d < D; ++d) {
          own.emb[b * Kp + t * D + d] = src[d];
          own.embT[(t * D + d) * Bp + b] = src[d];
        }
      }
      own.yb[b] = Y_[row];
    }
  }

  // hidden = tanh(W1 emb + b1) for the half's units, then their share of the logits
  void forward(ThreadState& own, int i) {
    const HiddenHalf& hf = halves_[i];
    float* h = &hiddenT_[hf.row0 * Bp];
    product(hf.rows, Bp / L, &W1p_[hf.row0 * Kp], Kp, 1, own.embT.get(), Bp, K + 1,
            [&](int64_t r0, int64_t v0, const auto& acc) {
              for (int64_t r = 0; r < kRows; ++r)
                for (int64_t v = 0; v < vecs_of(acc); ++v)
                  simd::store(h + (r0 + r) * Bp + (v0 + v) * L, simd::tanh<float>(acc[r][v]));
            });
    product(Vp, Bp / L, &W2t_[hf.row0 * Vp], 1, Vp, h, Bp, hf.rows,
            store_rows(partial_logitsT_[i].get(), Bp));
  }

  // the loss, dlogits in both layouts and b2's update (ColumnLoss)
  float loss_and_gradient(ThreadState& own, float lr) {
    return own.loss.run(partial_logitsT_[0].get(), partial_logitsT_[1].get(), own.b2.data(),
                        own.yb.data(), lr);
  }

  // the half's gradients and updates; every use of a row's old weights comes before its update
  void backward(ThreadState& own, int i, float lr) {
    const HiddenHalf& hf = halves_[i];
    const float* h = &hiddenT_[hf.row0 * Bp];
    float* dz = &dzT_[hf.row0 * Bp];
    float* w1 = &W1p_[hf.row0 * Kp];
    float* w2 = &W2t_[hf.row0 * Vp];
    const Vec one = simd::broadcast(1.0f), step = simd::broadcast(lr);
    // dz = (W2^T dlogits) * (1 - h^2)
    product(hf.rows, Bp / L, w2, Vp, 1, own.loss.dlogitsT(), Bp, V,
            [&](int64_t r0, int64_t v0, const auto& acc) {
              for (int64_t r = 0; r < kRows; ++r)
                for (int64_t v = 0; v < vecs_of(acc); ++v) {
                  const int64_t at = (r0 + r) * Bp + (v0 + v) * L;
                  const Vec y = simd::load(h + at);
                  simd::store(dz + at, acc[r][v] * (one - y * y));
                }
            });
    // W2 -= lr * dlogits^T h, row by row of W2^T
    product(hf.rows, Vp / L, h, Bp, 1, own.loss.dlogits(), Vp, B, subtract_from_rows(w2, Vp, step));
    // the half's share of d_emb = W1^T dz
    product(cpu::round_up(K, kRows), Bp / L, w1, 1, Kp, dz, Bp, hf.rows,
            store_rows(partial_d_embT_[i].get(), Bp));
    // [W1 | b1] -= lr * dz [emb | 1]
    product(hf.rows, Kp / L, dz, Bp, 1, own.emb.get(), Kp, B, subtract_from_rows(w1, Kp, step));
  }

  // C -= lr * dC, dC the two halves' embedding gradients added up per character
  void update_embeddings(ThreadState& own, float lr) const {
    std::fill(own.dC.begin(), own.dC.end(), 0.0f);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        float* g = &own.dC[own.xb[b * T + t] * D];
        for (int64_t d = 0; d < D; ++d) {
          const int64_t at = (t * D + d) * Bp + b;
          g[d] += partial_d_embT_[0][at] + partial_d_embT_[1][at];
        }
      }
    for (int64_t e = 0; e < V * D; ++e) own.C[e] -= lr * own.dC[e];
  }

  const int64_t B, V, T, D, K, H, Bp, Kp, Vp;  // Bp, Kp, Vp: padded to whole vectors
  const int64_t* X_;
  const int64_t* Y_;
  const int64_t n_train_;
  MlpParams params_;
  const int threads_;
  std::array<HiddenHalf, 2> halves_;
  // shared: the weights and activations by rows of hidden units, the halves' partial sums
  AlignedFloats W1p_{0}, W2t_{0}, hiddenT_{0}, dzT_{0};
  AlignedFloats partial_logitsT_[2] = {AlignedFloats(0), AlignedFloats(0)};
  AlignedFloats partial_d_embT_[2] = {AlignedFloats(0), AlignedFloats(0)};
  std::vector<ThreadState> own_;
  Barrier barrier_;
  // the step after whose second barrier both threads go on as one (thread 0); never: max
  std::atomic<int64_t> solo_after_{std::numeric_limits<int64_t>::max()};
};

}  // namespace

int64_t mlp_train_steps(const MlpShape& shape, MlpParams params, const int64_t* X,
                        const int64_t* Y, int64_t n_train, const float* lrs, int64_t steps,
                        int64_t first_step, uint64_t seed, const int64_t* batch_indices,
                        float* losses, int threads) {
  const int64_t bad =
      Minibatches{X, Y, n_train, shape.block, shape.batch, seed, first_step, batch_indices}
          .first_invalid_id(steps, shape.vocab);
  if (bad != kAllValid) return bad;
  MlpSteps engine(shape, params, X, Y, n_train, std::min(threads, 2));
  engine.run(lrs, steps, first_step, seed, batch_indices, losses);
  return kAllValid;
}

}  // namespace pymakemore::PYMAKEMORE_LEVEL
