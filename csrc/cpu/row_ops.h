// Per-row primitives of the cross-entropy kernel. Portable loops that the compiler
// vectorises, plus, at the avx512 level, a version for float: with masked loads and stores a
// row of makemore's 27 classes is exactly two vectors, where auto-vectorised loops spend most
// of their time in scalar remainders.
#pragma once

#include "cpu_math.h"
#include "this_level.h"

namespace pymakemore::PYMAKEMORE_LEVEL::rows {

template <typename T>
T max(const T* x, int64_t c) {
  T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < c; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

// Sums of a row are taken in blocks of this many terms, each block in T (vectorised) and the
// blocks' sums in double: one float chain over 50,304 classes drifts by ~1e-4 relative, a
// block of 256 by ~1e-6 at most.
constexpr int64_t kSumBlock = 256;

template <typename T>
T sum_exp(const T* x, int64_t c, T shift) {
  double total = 0.0;
  for (int64_t j0 = 0; j0 < c; j0 += kSumBlock) {
    const int64_t j1 = std::min(c, j0 + kSumBlock);
    T s = T(0);
#pragma omp simd reduction(+ : s)
    for (int64_t j = j0; j < j1; ++j) s += math::exp(x[j] - shift);
    total += static_cast<double>(s);
  }
  return static_cast<T>(total);
}

// g_j = p_coef * exp((x_j - hi) - lo) - w_coef * (w ? w_j : 1)
template <typename T>
void softmax_grad(const T* x, int64_t c, T hi, T lo, T p_coef, T w_coef, const T* w, T* g) {
  if (w) {
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) g[j] = p_coef * math::exp((x[j] - hi) - lo) - w_coef * w[j];
  } else {
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) g[j] = p_coef * math::exp((x[j] - hi) - lo) - w_coef;
  }
}

// For rows (<= 16) consecutive rows of c logits: max[r] and sum_j exp(x_rj - max[r]).
// A NaN in a row makes its sum NaN (its max may or may not be NaN).
template <typename T>
void max_and_sum_exp(const T* x, int64_t rows, int64_t c, T* max_out, T* sum_out) {
  for (int64_t r = 0; r < rows; ++r) max_out[r] = max(x + r * c, c);
  for (int64_t r = 0; r < rows; ++r) sum_out[r] = sum_exp(x + r * c, c, max_out[r]);
}

#if PYMAKEMORE_AVX512

// lanes [0, left) of a vector, for the last (partial) vector of a row
inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u);
}

// Sixteen vectors in, one out: lane r holds the sum (or max) of the lanes of v[r]. A
// transpose-and-reduce tree, 15 shuffles and 15 ops for sixteen rows instead of sixteen
// separate horizontal reductions.
template <typename Op>
inline __m512 reduce16(__m512* v, Op op) {
  __m512 t[8], u[4], w[2];
  for (int i = 0; i < 8; ++i)
    t[i] = op(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
              _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i)
    u[i] = op(_mm512_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
              _mm512_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  for (int i = 0; i < 2; ++i)
    w[i] = op(_mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
              _mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  return op(_mm512_shuffle_f32x4(w[0], w[1], _MM_SHUFFLE(2, 0, 2, 0)),
            _mm512_shuffle_f32x4(w[0], w[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

template <>
inline float max<float>(const float* x, int64_t c) {
  __m512 m = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 nan_seen = _mm512_setzero_ps();
  for (int64_t j = 0; j < c; j += 16) {
    const __mmask16 k = tail_mask(c - j);
    const __m512 v = _mm512_maskz_loadu_ps(k, x + j);
    m = _mm512_mask_max_ps(m, k, m, v);
    // vmaxps drops a NaN in its first operand, so collect NaNs apart: v - v is NaN or 0
    // (or NaN for +-inf, which makes the max infinite anyway: the caller gives NaN for both).
    nan_seen = _mm512_add_ps(nan_seen, _mm512_sub_ps(v, v));
  }
  return _mm512_reduce_max_ps(m) + _mm512_reduce_add_ps(nan_seen);
}

template <>
inline float sum_exp<float>(const float* x, int64_t c, float shift) {
  const __m512 s = _mm512_set1_ps(shift);
  double total = 0.0;
  for (int64_t j0 = 0; j0 < c; j0 += kSumBlock) {
    const int64_t j1 = std::min(c, j0 + kSumBlock);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t j = j0; j < j1; j += 16) {
      const __mmask16 k = tail_mask(j1 - j);
      const __m512 v = _mm512_maskz_loadu_ps(k, x + j);
      acc = _mm512_mask_add_ps(acc, k, acc, math::exp(_mm512_sub_ps(v, s)));
    }
    total += static_cast<double>(_mm512_reduce_add_ps(acc));
  }
  return static_cast<float>(total);
}

template <>
inline void softmax_grad<float>(const float* x, int64_t c, float hi, float lo, float p_coef,
                                float w_coef, const float* w, float* g) {
  const __m512 h = _mm512_set1_ps(hi), l = _mm512_set1_ps(lo);
  const __m512 pc = _mm512_set1_ps(p_coef), wc = _mm512_set1_ps(w_coef);
  for (int64_t j = 0; j < c; j += 16) {
    const __mmask16 k = tail_mask(c - j);
    const __m512 v = _mm512_maskz_loadu_ps(k, x + j);
    const __m512 p = math::exp(_mm512_sub_ps(_mm512_sub_ps(v, h), l));
    const __m512 wj = w ? _mm512_maskz_loadu_ps(k, w + j) : _mm512_set1_ps(1.0f);
    _mm512_mask_storeu_ps(g + j, k, _mm512_fmsub_ps(pc, p, _mm512_mul_ps(wc, wj)));
  }
}

// Batched for short rows, where the horizontal reductions cost as much as the rows; long rows
// take the blocked sums of sum_exp.
template <>
inline void max_and_sum_exp<float>(const float* x, int64_t rows, int64_t c, float* max_out,
                                   float* sum_out) {
  if (c > kSumBlock) {
    for (int64_t r = 0; r < rows; ++r) max_out[r] = max(x + r * c, c);
    for (int64_t r = 0; r < rows; ++r) sum_out[r] = sum_exp(x + r * c, c, max_out[r]);
    return;
  }
  const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 acc[16];
  for (int64_t r = 0; r < 16; ++r) {
    acc[r] = neg_inf;
    if (r >= rows) continue;
    const float* xr = x + r * c;
    for (int64_t j = 0; j < c; j += 16) {
      const __mmask16 k = tail_mask(c - j);
      acc[r] = _mm512_mask_max_ps(acc[r], k, acc[r], _mm512_maskz_loadu_ps(k, xr + j));
    }
  }
  alignas(64) float m[16];
  _mm512_store_ps(m, reduce16(acc, [](__m512 a, __m512 b) { return _mm512_max_ps(a, b); }));
  for (int64_t r = 0; r < 16; ++r) {
    acc[r] = _mm512_setzero_ps();
    if (r >= rows) continue;
    const float* xr = x + r * c;
    const __m512 shift = _mm512_set1_ps(m[r]);
    for (int64_t j = 0; j < c; j += 16) {
      const __mmask16 k = tail_mask(c - j);
      const __m512 e = math::exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, xr + j), shift));
      acc[r] = _mm512_mask_add_ps(acc[r], k, acc[r], e);
    }
  }
  alignas(64) float s[16];
  _mm512_store_ps(s, reduce16(acc, [](__m512 a, __m512 b) { return _mm512_add_ps(a, b); }));
  for (int64_t r = 0; r < rows; ++r) {
    max_out[r] = m[r];
    sum_out[r] = s[r];
  }
}

#endif  // PYMAKEMORE_AVX512

}  // namespace pymakemore::PYMAKEMORE_LEVEL::rows
