// embedding_forward / _backward: row gathers from a table and the scatter-add of their
// gradients. Compiled once per level (csrc/cpu/levels/<level>/embedding.cpp).
#include "this_level.h"  // first: see there

#include "common.h"

namespace pymakemore::PYMAKEMORE_LEVEL {
namespace {

using cpu::FirstInvalid;

// Tables up to this many elements take per-piece partial tables (streaming reads); larger
// ones take a counting sort by row so each row sums its own gradients (no partial tables).
constexpr int64_t kSmallTable = 1 << 16;
constexpr int64_t kMaxPieces = 64;

// Row copy and row accumulate. Rows of 16 floats or fewer (makemore's 10-wide embeddings)
// are one masked vector on AVX-512; elsewhere plain loops.
template <typename T>
inline void copy_row(T* dst, const T* src, int64_t dim) {
  for (int64_t d = 0; d < dim; ++d) dst[d] = src[d];
}

template <typename T>
inline void add_row(T* dst, const T* src, int64_t dim) {
  for (int64_t d = 0; d < dim; ++d) dst[d] += src[d];
}

#if PYMAKEMORE_AVX512
template <>
inline void copy_row<float>(float* dst, const float* src, int64_t dim) {
  if (dim > 16) return std::copy(src, src + dim, dst), void();
  const __mmask16 k = static_cast<__mmask16>((1u << dim) - 1u);
  _mm512_mask_storeu_ps(dst, k, _mm512_maskz_loadu_ps(k, src));
}

template <>
inline void add_row<float>(float* dst, const float* src, int64_t dim) {
  if (dim > 16) {
    for (int64_t d = 0; d < dim; ++d) dst[d] += src[d];
    return;
  }
  const __mmask16 k = static_cast<__mmask16>((1u << dim) - 1u);
  _mm512_mask_storeu_ps(dst, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, dst),
                                               _mm512_maskz_loadu_ps(k, src)));
}
#endif

template <typename Index>
bool in_range(Index idx, int64_t num_rows) {
  return idx >= 0 && static_cast<int64_t>(idx) < num_rows;
}

template <typename T, typename Index>
void backward_small_table(const T* grad_out, const Index* indices, int64_t n, int64_t num_rows,
                          int64_t dim, int64_t padding_idx, T* grad_weight,
                          const ParallelFor& pfor) {
  const int64_t table = num_rows * dim;
  const int64_t piece = cpu::piece_size(n, 8192, kMaxPieces);
  const int64_t pieces = cpu::ceil_div(n, piece);
  std::vector<T> partial(static_cast<size_t>(pieces * table), T(0));
  pfor(pieces, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      T* acc = partial.data() + p * table;
      const int64_t end = std::min(n, (p + 1) * piece);
      for (int64_t i = p * piece; i < end; ++i) {
        const int64_t row = static_cast<int64_t>(indices[i]);
        if (row == padding_idx) continue;
        add_row(acc + row * dim, grad_out + i * dim, dim);
      }
    }
  });
  pfor(table, cpu::grain_for(pieces), [&](int64_t e0, int64_t e1) {
    for (int64_t e = e0; e < e1; ++e) {
      T sum = T(0);
      for (int64_t p = 0; p < pieces; ++p) sum += partial[p * table + e];
      grad_weight[e] = sum;
    }
  });
}

template <typename T, typename Index>
void backward_large_table(const T* grad_out, const Index* indices, int64_t n, int64_t num_rows,
                          int64_t dim, int64_t padding_idx, T* grad_weight,
                          const ParallelFor& pfor) {
  // Counting sort of positions by row, stable, so every row sums in input order.
  std::vector<int64_t> start(static_cast<size_t>(num_rows + 1), 0);
  for (int64_t i = 0; i < n; ++i) ++start[static_cast<int64_t>(indices[i]) + 1];
  for (int64_t r = 0; r < num_rows; ++r) start[r + 1] += start[r];
  std::vector<int64_t> order(static_cast<size_t>(n));
  {
    std::vector<int64_t> next(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < n; ++i) order[next[static_cast<int64_t>(indices[i])]++] = i;
  }
  pfor(num_rows, cpu::grain_for(dim + n / std::max<int64_t>(num_rows, 1) * dim),
       [&](int64_t r0, int64_t r1) {
         for (int64_t r = r0; r < r1; ++r) {
           T* dst = grad_weight + r * dim;
           std::fill(dst, dst + dim, T(0));
           if (r == padding_idx) continue;
           for (int64_t j = start[r]; j < start[r + 1]; ++j)
             add_row(dst, grad_out + order[j] * dim, dim);
         }
       });
}

}  // namespace

template <typename T, typename Index>
int64_t embedding_forward(const Index* indices, int64_t n, const T* weight, int64_t num_rows,
                          int64_t dim, T* out, const ParallelFor& pfor) {
  FirstInvalid invalid;
  pfor(n, cpu::grain_for(dim), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const Index row = indices[i];
      T* dst = out + i * dim;
      if (in_range(row, num_rows)) {
        copy_row(dst, weight + static_cast<int64_t>(row) * dim, dim);
      } else {
        std::fill(dst, dst + dim, T(0));
        invalid.report(i);
      }
    }
  });
  return invalid.result();
}

template <typename T, typename Index>
int64_t embedding_backward(const T* grad_out, const Index* indices, int64_t n, int64_t num_rows,
                           int64_t dim, int64_t padding_idx, bool scale_by_freq, T* grad_weight,
                           const ParallelFor& pfor) {
  FirstInvalid invalid;
  pfor(n, 4096, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      if (!in_range(indices[i], num_rows)) invalid.report(i);
  });
  if (invalid.result() != kAllValid) return invalid.result();

  if (num_rows * dim <= kSmallTable)
    backward_small_table(grad_out, indices, n, num_rows, dim, padding_idx, grad_weight, pfor);
  else
    backward_large_table(grad_out, indices, n, num_rows, dim, padding_idx, grad_weight, pfor);

  if (scale_by_freq) {
    std::vector<int64_t> count(static_cast<size_t>(num_rows), 0);
    for (int64_t i = 0; i < n; ++i) ++count[static_cast<int64_t>(indices[i])];
    pfor(num_rows, cpu::grain_for(dim), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        if (count[r] <= 1) continue;
        const T inv = T(1) / static_cast<T>(count[r]);
        for (int64_t d = 0; d < dim; ++d) grad_weight[r * dim + d] *= inv;
      }
    });
  }
  return kAllValid;
}

PYMAKEMORE_INSTANTIATE_TI(embedding_forward)
PYMAKEMORE_INSTANTIATE_TI(embedding_backward)

}  // namespace pymakemore::PYMAKEMORE_LEVEL
