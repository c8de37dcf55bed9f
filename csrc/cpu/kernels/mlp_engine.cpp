// Whole training steps of the makemore MLP in C++ (minibatch draw, forward, backward, SGD
// update) with no autograd, dispatcher or Python between them and nothing allocated per step.
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
#include "simd.h"

namespace pymakemore::PYMAKEMORE_LEVEL {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

// Two threads wait here for each other. They spin first: a step's barriers are microseconds
// apart, too close for a sleep and a wake-up through the OS. A wait that outlasts `spin` means
// the other thread is not running (the machine is shared: another busy process); the waiter
// then sleeps in the kernel (futex, through std::atomic::wait) instead of burning the time
// slice the other thread needs, and the wait reports it.
class Barrier {
 public:
  Barrier(int threads, std::chrono::microseconds spin) : threads_(threads), spin_(spin) {}
  // `round` counts this thread's calls from 1; true when this wait had to sleep
  bool wait(int64_t round) {
    if (threads_ < 2) return false;
    const int64_t target = round * threads_;
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 >= target) {
      arrived_.notify_all();  // a system call only when the other thread sleeps
      return false;
    }
    const auto start = std::chrono::steady_clock::now();
    for (int64_t spins = 1;; ++spins) {
      if (arrived_.load(std::memory_order_acquire) >= target) return false;
      cpu_relax();
      if (spins % 64 == 0 && std::chrono::steady_clock::now() - start > spin_) break;
    }
    for (int64_t seen; (seen = arrived_.load(std::memory_order_acquire)) < target;)
      arrived_.wait(seen, std::memory_order_acquire);
    return true;
  }

 private:
  const int threads_;
  const std::chrono::microseconds spin_;
  alignas(64) std::atomic<int64_t> arrived_{0};
};

// How long a barrier spins before it sleeps: PYMAKEMORE_ENGINE_SPIN_US microseconds, default
// 200 (a step takes tens; a thread that waits longer shares its core with another process).
std::chrono::microseconds spin_limit() {
  const char* us = std::getenv("PYMAKEMORE_ENGINE_SPIN_US");
  return std::chrono::microseconds(us && *us ? std::max(0L, std::atol(us)) : 200);
}

// Two threads go on as one (the numbers do not change) once their barriers have slept this
// often within a window of steps: one core is not theirs, and two threads taking turns on it
// are slower than one thread doing both halves.
constexpr int kSleepsToGoSolo = 3;
constexpr int64_t kSleepWindow = 1000;

using Vec = simd::vec_t<float>;
constexpr int64_t L = simd::Vec<float>::lanes;
constexpr int64_t kRows = simd::kTileRows;  // a register tile: kRows x kMaxVecs vectors
constexpr int64_t kMaxVecs = simd::kTileVecs;
static_assert(L % kRows == 0, "the padded sizes (whole vectors) must be whole tiles");
static_assert(kMaxVecs == 2, "product() takes tiles of two vectors, then of one");

// Zero-initialised floats on 64-byte boundaries, so that the rows of the padded layouts
// (whole vectors long) load and store without crossing cache lines. (Not a std::vector of
// vectors: its allocator, compiled for the baseline, does not honour their 32- or 64-byte
// alignment.)
class AlignedFloats {
 public:
  explicit AlignedFloats(int64_t n)
      : bytes_(static_cast<size_t>(cpu::round_up(std::max<int64_t>(n, 1), 16)) * sizeof(float)),
        storage_(static_cast<float*>(std::aligned_alloc(64, bytes_))) {
    if (!storage_) throw std::bad_alloc();
    std::memset(storage_.get(), 0, bytes_);
  }
  float* get() { return storage_.get(); }
  const float* get() const { return storage_.get(); }
  float& operator[](int64_t i) { return get()[i]; }
  float operator[](int64_t i) const { return get()[i]; }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  size_t bytes_;
  std::unique_ptr<float, Free> storage_;
};

// acc[i][v] = sum over r < n of a[i * a_row + r * a_red] * b[r * b_row + v * L], for kRows
// rows i and NV vectors v: the scalars of a are broadcast, the vectors of b loaded. Not inlined:
// on its own the loop keeps every accumulator in a register; inlined next to an epilogue that
// needs many (tanh's constants), the compiler spills the accumulators instead.
template <int64_t NV>
__attribute__((noinline)) void tile(const float* a, int64_t a_row, int64_t a_red,
                                    const float* b, int64_t b_row, int64_t n,
                                    Vec (&acc)[kRows][NV]) {
  Vec sum[kRows][NV];
  for (int64_t i = 0; i < kRows; ++i)
    for (int64_t v = 0; v < NV; ++v) sum[i][v] = Vec{};
  for (int64_t r = 0; r < n; ++r) {
    Vec bv[NV];
    for (int64_t v = 0; v < NV; ++v) bv[v] = simd::load(b + r * b_row + v * L);
    for (int64_t i = 0; i < kRows; ++i) {
      const Vec s = simd::broadcast(a[i * a_row + r * a_red]);
      for (int64_t v = 0; v < NV; ++v) sum[i][v] += s * bv[v];
    }
  }
  for (int64_t i = 0; i < kRows; ++i)
    for (int64_t v = 0; v < NV; ++v) acc[i][v] = sum[i][v];
}

// The product above for rows [0, rows) (a multiple of kRows) and vectors [0, vecs), tile by
// tile; epilogue(row0, vec0, acc) consumes each tile's accumulators while they are in registers.
template <typename Epilogue>
inline void product(int64_t rows, int64_t vecs, const float* a, int64_t a_row, int64_t a_red,
                    const float* b, int64_t b_row, int64_t n, const Epilogue& epilogue) {
  for (int64_t i0 = 0; i0 < rows; i0 += kRows) {
    for (int64_t v0 = 0; v0 < vecs; v0 += kMaxVecs) {
      if (vecs - v0 >= 2) {
        Vec acc[kRows][2];
        tile(a + i0 * a_row, a_row, a_red, b + v0 * L, b_row, n, acc);
        epilogue(i0, v0, acc);
      } else {
        Vec acc[kRows][1];
        tile(a + i0 * a_row, a_row, a_red, b + v0 * L, b_row, n, acc);
        epilogue(i0, v0, acc);
      }
    }
  }
}

template <typename Acc>
constexpr int64_t vecs_of(const Acc&) {
  return std::extent_v<Acc, 1>;
}

// Epilogues: a tile written to rows of out, or (a weight update straight from the registers)
// subtracted, times step, from rows of w; rows `stride` floats apart.
inline auto store_rows(float* out, int64_t stride) {
  return [=](int64_t r0, int64_t v0, const auto& acc) {
    for (int64_t r = 0; r < kRows; ++r)
      for (int64_t v = 0; v < vecs_of(acc); ++v)
        simd::store(out + (r0 + r) * stride + (v0 + v) * L, acc[r][v]);
  };
}

inline auto subtract_from_rows(float* w, int64_t stride, Vec step) {
  return [=](int64_t r0, int64_t v0, const auto& acc) {
    for (int64_t r = 0; r < kRows; ++r)
      for (int64_t v = 0; v < vecs_of(acc); ++v) {
        float* p = w + (r0 + r) * stride + (v0 + v) * L;
        simd::store(p, simd::load(p) - step * acc[r][v]);
      }
  };
}

// The hidden units of one half: real units [first, first + count), kept in rows
// [row0, row0 + rows) of the padded layouts (rows past count are zero and stay zero: their
// activations, and so every gradient through them, are 0).
struct HiddenHalf {
  int64_t first, count, row0, rows;
};

class MlpSteps {
 public:
  MlpSteps(const MlpShape& shape, const MlpParams& params, const int64_t* X, const int64_t* Y,
           int64_t n_train, int threads)
      : B(shape.batch), V(shape.vocab), T(shape.block), D(shape.n_embd), K(T * D),
        H(shape.n_hidden), Bp(cpu::round_up(B, L)), Kp(cpu::round_up(K + 1, L)),
        Vp(cpu::round_up(V, L)), X_(X), Y_(Y), n_train_(n_train), params_(params),
        threads_(threads), barrier_(threads, spin_limit()) {
    const int64_t n0 = std::min(H, cpu::round_up(cpu::ceil_div(H, 2), kRows));
    halves_[0] = {0, n0, 0, cpu::round_up(n0, kRows)};
    halves_[1] = {n0, H - n0, halves_[0].rows, cpu::round_up(H - n0, kRows)};
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
    if (threads_ >= 2) {
      std::thread second(work, 1);
      work(0);
      second.join();
    } else {
      work(0);
    }
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
  // embeddings, the loss's buffers.
  struct ThreadState {
    explicit ThreadState(const MlpSteps& m)
        : C(m.params_.C, m.params_.C + m.V * m.D), b2(m.params_.b2, m.params_.b2 + m.V),
          dC(m.V * m.D), emb(m.B * m.Kp), embT(m.Kp * m.Bp), logitsT(m.Vp * m.Bp),
          dlogitsT(m.Vp * m.Bp), dlogits(m.B * m.Vp), max_logit(m.Bp), sum_exp(m.Bp),
          scale(m.Bp), rows(m.B), next_rows(m.B), xb(m.B * m.T), yb(m.B) {
      // the input column of ones, which the gathers leave alone
      for (int64_t b = 0; b < m.B; ++b) emb[b * m.Kp + m.K] = embT[m.K * m.Bp + b] = 1.0f;
    }
    std::vector<float> C, b2, dC;
    AlignedFloats emb, embT, logitsT, dlogitsT, dlogits;  // emb (B, Kp), the others transposed
    std::vector<float> max_logit, sum_exp, scale;
    std::vector<int64_t> rows, next_rows, xb, yb;
  };

  void steps_on(int t, const float* lrs, int64_t steps, int64_t first_step, uint64_t seed,
                const int64_t* batch_indices, float* losses) {
    ThreadState& own = own_[t];
    // this thread's halves: both on one thread, half t on two
    bool together = threads_ >= 2;
    int first_half = together ? t : 0, end_half = together ? t + 1 : 2;
    Sleeps sleeps;
    // the minibatch rows of a step are drawn one step ahead and their examples prefetched:
    // the training set is larger than the caches, and 32 scattered reads would stall the step
    const auto draw = [&](int64_t s, std::vector<int64_t>& out) {
      if (s >= steps) return;
      for (int64_t b = 0; b < B; ++b) {
        const int64_t row = out[b] = batch_indices
                                         ? batch_indices[s * B + b]
                                         : mlp_batch_index(seed, first_step + s, b, n_train_);
        __builtin_prefetch(X_ + row * T);
        __builtin_prefetch(Y_ + row);
      }
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

  // Cross entropy with each example a lane: max-subtracted log-sum-exp, the mean loss, and
  // dlogits = (softmax - one_hot) / B (zero in the padding lanes) in both layouts; b2's update.
  float loss_and_gradient(ThreadState& own, float lr) {
    float* max_logit = own.max_logit.data();
    float* sum_exp = own.sum_exp.data();
    std::fill(max_logit, max_logit + Bp, -std::numeric_limits<float>::infinity());
    std::fill(sum_exp, sum_exp + Bp, 0.0f);
    for (int64_t v = 0; v < V; ++v) {
      float* l = &own.logitsT[v * Bp];
      const float* p0 = &partial_logitsT_[0][v * Bp];
      const float* p1 = &partial_logitsT_[1][v * Bp];
      for (int64_t b = 0; b < Bp; ++b) {
        l[b] = p0[b] + p1[b] + own.b2[v];
        max_logit[b] = std::max(max_logit[b], l[b]);
      }
    }
    for (int64_t v = 0; v < V; ++v) {
      for (int64_t c = 0; c < Bp; c += L) {
        const Vec shifted = simd::load(&own.logitsT[v * Bp + c]) - simd::load(max_logit + c);
        const Vec e = simd::exp<float>(shifted);
        simd::store(&own.dlogitsT[v * Bp + c], e);
        simd::store(sum_exp + c, simd::load(sum_exp + c) + e);
      }
    }
    double loss = 0.0;
    const float inv_batch = 1.0f / static_cast<float>(B);
    for (int64_t b = 0; b < B; ++b) {
      loss += max_logit[b] + math::log(sum_exp[b]) - own.logitsT[own.yb[b] * Bp + b];
      own.scale[b] = inv_batch / sum_exp[b];
    }
    std::fill(own.scale.begin() + B, own.scale.end(), 0.0f);
    for (int64_t v = 0; v < V; ++v)
      for (int64_t b = 0; b < Bp; ++b) own.dlogitsT[v * Bp + b] *= own.scale[b];
    for (int64_t b = 0; b < B; ++b) own.dlogitsT[own.yb[b] * Bp + b] -= inv_batch;
    for (int64_t v = 0; v < V; ++v) {
      float db2 = 0.0f;
      for (int64_t b = 0; b < B; ++b) {
        own.dlogits[b * Vp + v] = own.dlogitsT[v * Bp + b];
        db2 += own.dlogitsT[v * Bp + b];
      }
      own.b2[v] -= lr * db2;
    }
    return static_cast<float>(loss / static_cast<double>(B));
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
    product(hf.rows, Bp / L, w2, Vp, 1, own.dlogitsT.get(), Bp, V,
            [&](int64_t r0, int64_t v0, const auto& acc) {
              for (int64_t r = 0; r < kRows; ++r)
                for (int64_t v = 0; v < vecs_of(acc); ++v) {
                  const int64_t at = (r0 + r) * Bp + (v0 + v) * L;
                  const Vec y = simd::load(h + at);
                  simd::store(dz + at, acc[r][v] * (one - y * y));
                }
            });
    // W2 -= lr * dlogits^T h, row by row of W2^T
    product(hf.rows, Vp / L, h, Bp, 1, own.dlogits.get(), Vp, B, subtract_from_rows(w2, Vp, step));
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
  HiddenHalf halves_[2];
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
  // every character id used below is checked once, up front
  for (int64_t i = 0; i < n_train * shape.block; ++i)
    if (X[i] < 0 || X[i] >= shape.vocab) return i;
  for (int64_t i = 0; i < n_train; ++i)
    if (Y[i] < 0 || Y[i] >= shape.vocab) return n_train * shape.block + i;
  MlpSteps engine(shape, params, X, Y, n_train, std::min(threads, 2));
  engine.run(lrs, steps, first_step, seed, batch_indices, losses);
  return kAllValid;
}

}  // namespace pymakemore::PYMAKEMORE_LEVEL
