// Per-row primitives of the cross-entropy kernel, for float in vectors of the level's width
// with the row's last, partial vector through masked loads and stores (27 classes: two
// vectors at avx512, four at avx2); at avx512 the max and sum of up to 16 short rows at once.
#pragma once

#include "cpu_math.h"
#include "simd.h"
#include "this_level.h"

namespace pymakemore::PYMAKEMORE_LEVEL::rows {

// Sums of a row are taken in blocks of this many terms, each block in T (vectorised) and the
// blocks' sums in double: one float chain over 50,304 classes drifts by ~1e-4 relative, a
// block of 256 by ~1e-6 at most.
constexpr int64_t kSumBlock = 256;

using FloatVec = simd::vec_t<float>;
constexpr int64_t kLanes = simd::Vec<float>::lanes;

// The first n (< kLanes) floats at p, `fill` in the other lanes; and the first n lanes of v
// stored to p. Masked loads and stores where the level has them: nothing is read or written
// past p + n.
inline FloatVec load_first(const float* p, int64_t n, float fill) {
#if PYMAKEMORE_AVX512
  return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), static_cast<__mmask16>((1u << n) - 1u), p);
#elif PYMAKEMORE_VECTOR_BYTES == 32
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, mask),
                          _mm256_castsi256_ps(mask));
#else
  FloatVec v = math::splat<FloatVec>(fill);
  for (int64_t l = 0; l < n; ++l) v[l] = p[l];
  return v;
#endif
}

// The vector at p: whole when `left` (floats to the row's end) allows, else the first `left`
// and `fill` after them.
inline FloatVec load_upto(const float* p, int64_t left, float fill) {
  return left >= kLanes ? simd::load(p) : load_first(p, left, fill);
}

inline void store_first(float* p, FloatVec v, int64_t n) {
#if PYMAKEMORE_AVX512
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), v);
#elif PYMAKEMORE_VECTOR_BYTES == 32
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  _mm256_maskstore_ps(p, mask, v);
#else
  for (int64_t l = 0; l < n; ++l) p[l] = v[l];
#endif
}

// The largest element of a row; NaN if the row holds a NaN.
template <typename T>
T max(const T* x, int64_t c) {
  if constexpr (std::is_same_v<T, float>) {  // whole vectors, then one partial vector
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    FloatVec m = math::splat<FloatVec>(kNegInf);
    math::IntOf<FloatVec> unordered{};
    for (int64_t j = 0; j < c; j += kLanes) {
      const FloatVec v = load_upto(x + j, c - j, kNegInf);
      m = math::select(v > m, v, m);
      unordered |= v != v;
    }
    float r = kNegInf;
    bool nan_seen = false;
    for (int64_t l = 0; l < kLanes; ++l) {
      r = m[l] > r ? m[l] : r;
      nan_seen |= unordered[l] != 0;
    }
    return nan_seen ? std::numeric_limits<float>::quiet_NaN() : r;
  } else {
    T m = -std::numeric_limits<T>::infinity();
    bool nan_seen = false;
    for (int64_t j = 0; j < c; ++j) {
      m = x[j] > m ? x[j] : m;
      nan_seen |= x[j] != x[j];
    }
    return nan_seen ? std::numeric_limits<T>::quiet_NaN() : m;
  }
}

// sum_j exp(x_j - shift), in blocks (kSumBlock); a NaN in the row makes it NaN
template <typename T>
T sum_exp(const T* x, int64_t c, T shift) {
  double total = 0.0;
  for (int64_t j0 = 0; j0 < c; j0 += kSumBlock) {
    const int64_t j1 = std::min(c, j0 + kSumBlock);
    T s = T(0);
    if constexpr (std::is_same_v<T, float>) {
      const FloatVec shift_v = simd::broadcast(shift);
      FloatVec acc{};
      for (int64_t j = j0; j < j1; j += kLanes) {  // the partial vector's -inf lanes add 0
        const FloatVec v = load_upto(x + j, j1 - j, -INFINITY);
        acc += math::exp(v - shift_v);
      }
      for (int64_t l = 0; l < kLanes; ++l) s += acc[l];
    } else {
#pragma omp simd reduction(+ : s)
      for (int64_t j = j0; j < j1; ++j) s += math::exp(x[j] - shift);
    }
    total += static_cast<double>(s);
  }
  return static_cast<T>(total);
}

// g_j = p_coef * exp((x_j - hi) - lo) - w_coef * (w ? w_j : 1)
template <typename T>
void softmax_grad(const T* x, int64_t c, T hi, T lo, T p_coef, T w_coef, const T* w, T* g) {
  if constexpr (std::is_same_v<T, float>) {
    const FloatVec h = simd::broadcast(hi), l = simd::broadcast(lo);
    const FloatVec pc = simd::broadcast(p_coef), wc = simd::broadcast(w_coef);
    const FloatVec one = math::splat<FloatVec>(1.0f);
    for (int64_t j = 0; j < c; j += kLanes) {
      const int64_t n = std::min(kLanes, c - j);
      const FloatVec xv = load_upto(x + j, n, 0.0f);
      const FloatVec wv = w ? load_upto(w + j, n, 0.0f) : one;
      const FloatVec gv = pc * math::exp((xv - h) - l) - wc * wv;
      if (n == kLanes)
        simd::store(g + j, gv);
      else
        store_first(g + j, gv, n);
    }
  } else {
#pragma omp simd
    for (int64_t j = 0; j < c; ++j)
      g[j] = p_coef * math::exp((x[j] - hi) - lo) - w_coef * (w ? w[j] : T(1));
  }
}

// kLanes vectors in, one out: lane r holds op over the lanes of v[r]. A transpose-and-reduce
// tree (15 shuffles and 15 ops for sixteen rows at avx512) instead of one horizontal reduction
// per row; lane by lane where the level has no shuffles for it.
template <typename Op>
inline FloatVec reduce_rows(FloatVec* v, Op op) {
#if PYMAKEMORE_AVX512
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
#elif PYMAKEMORE_VECTOR_BYTES == 32
  __m256 t[4], u[2];
  for (int i = 0; i < 4; ++i)
    t[i] = op(_mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]),
              _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 2; ++i)
    u[i] = op(_mm256_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
              _mm256_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  return op(_mm256_permute2f128_ps(u[0], u[1], 0x20), _mm256_permute2f128_ps(u[0], u[1], 0x31));
#else
  FloatVec out;
  for (int64_t r = 0; r < kLanes; ++r) {
    float acc = v[r][0];
    for (int64_t l = 1; l < kLanes; ++l) acc = op(FloatVec{} + acc, FloatVec{} + v[r][l])[0];
    out[r] = acc;
  }
  return out;
#endif
}

// For rows (<= 16) consecutive rows of c logits: max[r] and sum_j exp(x_rj - max[r]).
// A NaN in a row makes its sum NaN (its max may or may not be NaN). Rows of up to kSumBlock
// classes are taken kLanes at a time, each row's vectors reduced together (reduce_rows);
// longer rows one by one.
template <typename T>
void max_and_sum_exp(const T* x, int64_t rows, int64_t c, T* max_out, T* sum_out) {
  if constexpr (std::is_same_v<T, float>) {
    if (c <= kSumBlock) {
      constexpr float kNegInf = -std::numeric_limits<float>::infinity();
      const auto vmax = [](FloatVec a, FloatVec b) { return math::select(a > b, a, b); };
      const auto vadd = [](FloatVec a, FloatVec b) { return a + b; };
      for (int64_t r0 = 0; r0 < rows; r0 += kLanes) {
        const int64_t group = std::min(kLanes, rows - r0);
        FloatVec acc[kLanes];
        for (int64_t r = 0; r < kLanes; ++r) {
          acc[r] = math::splat<FloatVec>(kNegInf);
          if (r >= group) continue;
          const float* xr = x + (r0 + r) * c;
          for (int64_t j = 0; j < c; j += kLanes) {
            const FloatVec v = load_upto(xr + j, c - j, kNegInf);
            acc[r] = vmax(acc[r], v);
          }
        }
        const FloatVec m = reduce_rows(acc, vmax);
        for (int64_t r = 0; r < kLanes; ++r) {
          acc[r] = FloatVec{};
          if (r >= group) continue;
          const float* xr = x + (r0 + r) * c;
          const FloatVec shift = simd::broadcast(m[r]);
          for (int64_t j = 0; j < c; j += kLanes) {  // the -inf lanes add 0
            const FloatVec v = load_upto(xr + j, c - j, kNegInf);
            acc[r] += math::exp(v - shift);
          }
        }
        const FloatVec s = reduce_rows(acc, vadd);
        for (int64_t r = 0; r < group; ++r) {
          max_out[r0 + r] = m[r];
          sum_out[r0 + r] = s[r];
        }
      }
      return;
    }
  }
  for (int64_t r = 0; r < rows; ++r) max_out[r] = max(x + r * c, c);
  for (int64_t r = 0; r < rows; ++r) sum_out[r] = sum_exp(x + r * c, c, max_out[r]);
}

}  // namespace pymakemore::PYMAKEMORE_LEVEL::rows
