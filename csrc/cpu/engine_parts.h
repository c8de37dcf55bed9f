// The building blocks of the whole-step engines (kernels/mlp_engine.cpp,
// kernels/chain_engine.cpp): a two-thread barrier, aligned zeroed buffers and the register-tiled
// products that keep their accumulators in registers for an epilogue. Included by kernel files
// only, so compiled once per level.
#pragma once

#include "this_level.h"

#include "common.h"
#include "cpu_math.h"
#include "simd.h"

namespace pymakemore::PYMAKEMORE_LEVEL::engine {

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
inline std::chrono::microseconds spin_limit() {
  const char* us = std::getenv("PYMAKEMORE_ENGINE_SPIN_US");
  return std::chrono::microseconds(us && *us ? std::max(0L, std::atol(us)) : 200);
}

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

// The lanes of v added pairwise (a chain of log2(L) adds, not L).
inline float lane_sum(Vec v) {
  float lanes[L];
  std::memcpy(lanes, &v, sizeof v);
  for (int64_t width = L / 2; width >= 1; width /= 2)
    for (int64_t l = 0; l < width; ++l) lanes[l] += lanes[l + width];
  return lanes[0];
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

// subtract_from_rows that also adds the update's elements (step * acc) and their squares to
// sums[0] and sums[1] (the update:data ratios of the diagnostics)
inline auto subtract_and_measure(float* w, int64_t stride, Vec step, double* sums) {
  return [=](int64_t r0, int64_t v0, const auto& acc) {
    Vec total{}, squares{};
    for (int64_t r = 0; r < kRows; ++r)
      for (int64_t v = 0; v < vecs_of(acc); ++v) {
        float* p = w + (r0 + r) * stride + (v0 + v) * L;
        const Vec update = step * acc[r][v];
        simd::store(p, simd::load(p) - update);
        total += update;
        squares += update * update;
      }
    sums[0] += lane_sum(total);
    sums[1] += lane_sum(squares);
  };
}

// sums[0] += the sum of p[0..n), sums[1] += the sum of their squares
inline void add_sums(const float* p, int64_t n, double* sums) {
  for (int64_t i = 0; i < n; ++i) {
    sums[0] += p[i];
    sums[1] += static_cast<double>(p[i]) * p[i];
  }
}


// Where a call's minibatches come from: the training rows of each step (`indices`, steps x
// batch, or the counter-based draws of (seed, first_step + s, b)) and the examples, X
// (n_train x block character ids) and Y (n_train targets).
struct Minibatches {
  const int64_t* X;
  const int64_t* Y;
  int64_t n_train, block, batch;
  uint64_t seed;
  int64_t first_step;
  const int64_t* indices;

  int64_t row(int64_t s, int64_t b) const {
    return indices ? indices[s * batch + b] : mlp_batch_index(seed, first_step + s, b, n_train);
  }

  // step s's rows into out, their examples prefetched: drawn a step ahead, as the training
  // set is larger than the caches and a batch of scattered reads would stall the step
  void draw(int64_t s, int64_t* out) const {
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t r = out[b] = row(s, b);
      __builtin_prefetch(X + r * block);
      __builtin_prefetch(Y + r);
    }
  }

  // Checks every character id that `steps` steps will read, before any of them runs (a
  // refused call leaves the parameters as they were); only the drawn rows, so that a call of
  // one step costs one step's checks. kAllValid, or the position in X, then Y, of the first
  // invalid id.
  int64_t first_invalid_id(int64_t steps, int64_t vocab) const {
    for (int64_t s = 0; s < steps; ++s)
      for (int64_t b = 0; b < batch; ++b) {
        const int64_t r = row(s, b);
        for (int64_t t = 0; t < block; ++t)
          if (X[r * block + t] < 0 || X[r * block + t] >= vocab) return r * block + t;
        if (Y[r] < 0 || Y[r] >= vocab) return n_train * block + r;
      }
    return kAllValid;
  }
};

// work(0) on the calling thread and, with two threads, work(1) on a second one started here.
template <typename Work>
void on_threads(int threads, const Work& work) {
  if (threads >= 2) {
    std::thread second(work, 1);
    work(0);
    second.join();
  } else {
    work(0);
  }
}

// The mean cross entropy of a minibatch whose logits are kept transposed, (classes, batch),
// each example a lane: max-subtracted log-sum-exp, and dlogits = (softmax - one_hot) / B (zero
// in the padding lanes) in both layouts, (V, Bp) and (B, Vp). The logits are the sum of two
// halves' partial logits and the bias, which run() updates by SGD.
class ColumnLoss {
 public:
  ColumnLoss(int64_t classes, int64_t batch)
      : V(classes), B(batch), Bp(cpu::round_up(batch, L)), Vp(cpu::round_up(classes, L)),
        logitsT_(Vp * Bp), dlogitsT_(Vp * Bp), dlogits_(B * Vp), max_logit_(Bp), sum_exp_(Bp),
        scale_(Bp) {}

  // partial0, partial1: (>= V, Bp); targets: B class ids; returns the mean loss
  float run(const float* partial0, const float* partial1, float* bias, const int64_t* targets,
            float lr) {
    float* max_logit = max_logit_.data();
    float* sum_exp = sum_exp_.data();
    std::fill(max_logit, max_logit + Bp, -std::numeric_limits<float>::infinity());
    std::fill(sum_exp, sum_exp + Bp, 0.0f);
    for (int64_t v = 0; v < V; ++v) {
      float* l = &logitsT_[v * Bp];
      const float* p0 = partial0 + v * Bp;
      const float* p1 = partial1 + v * Bp;
      for (int64_t b = 0; b < Bp; ++b) {
        l[b] = p0[b] + p1[b] + bias[v];
        max_logit[b] = std::max(max_logit[b], l[b]);
      }
    }
    for (int64_t v = 0; v < V; ++v) {
      for (int64_t c = 0; c < Bp; c += L) {
        const Vec shifted = simd::load(&logitsT_[v * Bp + c]) - simd::load(max_logit + c);
        const Vec e = simd::exp<float>(shifted);
        simd::store(&dlogitsT_[v * Bp + c], e);
        simd::store(sum_exp + c, simd::load(sum_exp + c) + e);
      }
    }
    double loss = 0.0;
    const float inv_batch = 1.0f / static_cast<float>(B);
    for (int64_t b = 0; b < B; ++b) {
      loss += max_logit[b] + math::log(sum_exp[b]) - logitsT_[targets[b] * Bp + b];
      scale_[b] = inv_batch / sum_exp[b];
    }
    std::fill(scale_.begin() + B, scale_.end(), 0.0f);
    for (int64_t v = 0; v < V; ++v)
      for (int64_t b = 0; b < Bp; ++b) dlogitsT_[v * Bp + b] *= scale_[b];
    for (int64_t b = 0; b < B; ++b) dlogitsT_[targets[b] * Bp + b] -= inv_batch;
    for (int64_t v = 0; v < V; ++v) {
      float db = 0.0f;
      for (int64_t b = 0; b < B; ++b) {
        dlogits_[b * Vp + v] = dlogitsT_[v * Bp + b];
        db += dlogitsT_[v * Bp + b];
      }
      bias[v] -= lr * db;
    }
    return static_cast<float>(loss / static_cast<double>(B));
  }

  const float* dlogitsT() const { return dlogitsT_.get(); }  // (Vp, Bp)
  const float* dlogits() const { return dlogits_.get(); }    // (B, Vp)

 private:
  const int64_t V, B, Bp, Vp;
  AlignedFloats logitsT_, dlogitsT_, dlogits_;
  std::vector<float> max_logit_, sum_exp_, scale_;
};

// The units of one half of a hidden layer: real units [first, first + count), kept in rows
// [row0, row0 + rows) of the padded layouts (rows past count are zero and stay zero: their
// activations, and so every gradient through them, are 0).
struct HiddenHalf {
  int64_t first, count, row0, rows;
};

// A layer's n units in two halves of whole register tiles (the first the larger): the same
// split on one thread or two, so both give the same numbers.
inline std::array<HiddenHalf, 2> split_units(int64_t n) {
  const int64_t n0 = std::min(n, cpu::round_up(cpu::ceil_div(n, 2), kRows));
  const HiddenHalf first{0, n0, 0, cpu::round_up(n0, kRows)};
  return {first, HiddenHalf{n0, n - n0, first.rows, cpu::round_up(n - n0, kRows)}};
}

}  // namespace pymakemore::PYMAKEMORE_LEVEL::engine
