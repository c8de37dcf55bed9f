// linear_forward / _backward: act(x @ w^T + b) (identity or tanh) in register tiles, and its
// three gradients. Compiled once per level (csrc/cpu/levels/<level>/linear.cpp).
#include "this_level.h"  // first: see there

#include "common.h"
#include "simd.h"

namespace pymakemore::PYMAKEMORE_LEVEL {
namespace {

// Register tiles: forward kFwdRows input rows x kFwdVecs vectors of outputs, backward
// kBwdRows rows x kBwdVecs vectors of input features; every accumulator stays in a register
// (4 x 4 and 8 x 2 with 32 registers, 4 x 2 with 16).
constexpr int64_t kFwdRows = 4;
constexpr int64_t kFwdVecs = PYMAKEMORE_VECTOR_REGISTERS >= 32 ? 4 : 2;
constexpr int64_t kBwdRows = simd::kTileRows;
constexpr int64_t kBwdVecs = simd::kTileVecs;

// The products' sums over the inner dimension run in blocks of kReduceBlock terms, each block
// summed in the registers from zero and then added to the tile's total: an error that grows
// with the block and the number of blocks, not with the whole inner dimension (K = 50,257 in
// one chain lost ten times torch's accuracy).
constexpr int64_t kReduceBlock = 256;

// Pieces of rows whose weight-gradient partials are summed in a fixed order.
constexpr int64_t kMaxPieces = 64;
constexpr int64_t kPartialBudget = int64_t(1) << 24;  // elements across all partials

// y[r0 .. r0+rows, c0 .. c0+cols) = act(x @ wt + b) for one tile of kFwdRows rows and NV
// vectors of columns; the activation is applied in registers as the tile is written.
template <typename T, int64_t NV>
void forward_tile(const T* const* xr, const T* wt, const T* b, int64_t k, int64_t hp,
                  int64_t h, int64_t c0, int64_t cols, int64_t rows, Activation act,
                  T* y_tile) {
  using V = simd::vec_t<T>;
  constexpr int64_t L = simd::Vec<T>::lanes;
  V acc[kFwdRows][NV];
  for (int64_t v = 0; v < NV; ++v) {
    const V bv = simd::load(b + c0 + v * L);
    for (int64_t r = 0; r < kFwdRows; ++r) acc[r][v] = bv;
  }
  const auto accumulate = [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      V wv[NV];
      for (int64_t v = 0; v < NV; ++v) wv[v] = simd::load(wt + q * hp + c0 + v * L);
      for (int64_t r = 0; r < kFwdRows; ++r) {
        const V xv = simd::broadcast(xr[r][q]);
        for (int64_t v = 0; v < NV; ++v) acc[r][v] += xv * wv[v];
      }
    }
  };
  if (k <= kReduceBlock) {
    accumulate(0, k);
  } else {
    // the first block sums onto the bias in the registers, each later one from zero, added to
    // the tile's total (kFwdRows x NV vectors, in the L1 cache)
    alignas(64) T total[kFwdRows][NV * L];
    for (int64_t q0 = 0; q0 < k; q0 += kReduceBlock) {
      if (q0 > 0)
        for (int64_t r = 0; r < kFwdRows; ++r)
          for (int64_t v = 0; v < NV; ++v) acc[r][v] = V{};
      accumulate(q0, std::min(k, q0 + kReduceBlock));
      for (int64_t r = 0; r < kFwdRows; ++r)
        for (int64_t v = 0; v < NV; ++v)
          simd::store(total[r] + v * L,
                      q0 > 0 ? simd::load(total[r] + v * L) + acc[r][v] : acc[r][v]);
    }
    for (int64_t r = 0; r < kFwdRows; ++r)
      for (int64_t v = 0; v < NV; ++v) acc[r][v] = simd::load(total[r] + v * L);
  }
  for (int64_t r = 0; r < rows; ++r) {
    T* yr = y_tile + r * h;
    for (int64_t v = 0; v < NV; ++v) {
      const V out = act == Activation::Tanh ? simd::tanh<T>(acc[r][v]) : acc[r][v];
      const int64_t left = cols - v * L;  // >= 1: NV is ceil(cols / L)
      if (left >= L) {
        simd::store(yr + v * L, out);
      } else if (left > 0) {
        alignas(64) T part[L];
        simd::store(part, out);
        std::copy(part, part + left, yr + v * L);
      }
    }
  }
}

}  // namespace

template <typename T>
void linear_forward(const T* x, const T* w, const T* bias, int64_t n, int64_t k, int64_t h,
                    Activation act, T* y, const ParallelFor& pfor) {
  constexpr int64_t L = simd::Vec<T>::lanes;
  constexpr int64_t B = kFwdVecs * L;  // output columns per full tile
  const int64_t hp = cpu::round_up(h, B);
  // w transposed to (k, hp) and zero-padded, so a tile's columns are contiguous.
  T* wt = cpu::scratch<T>(cpu::kPackedWeight, static_cast<size_t>(k * hp));
  for (int64_t q = 0; q < k; ++q) {
    T* row = wt + q * hp;
    for (int64_t j = 0; j < h; ++j) row[j] = w[j * k + q];
    std::fill(row + h, row + hp, T(0));
  }
  T* b = cpu::scratch<T>(cpu::kPackedBias, static_cast<size_t>(hp));
  if (bias)
    std::copy(bias, bias + h, b);
  else
    std::fill(b, b + h, T(0));
  std::fill(b + h, b + hp, T(0));

  const int64_t tiles = cpu::ceil_div(n, kFwdRows);
  pfor(tiles, cpu::grain_for(kFwdRows * (k + 1) * h), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r0 = t * kFwdRows;
      const int64_t rows = std::min(kFwdRows, n - r0);
      const T* xr[kFwdRows];
      for (int64_t r = 0; r < kFwdRows; ++r) xr[r] = x + (r0 + std::min(r, rows - 1)) * k;
      for (int64_t c0 = 0; c0 < h; c0 += B) {
        const int64_t cols = std::min(B, h - c0);
        T* y_tile = y + r0 * h + c0;
        // the last block of columns takes only the vectors it needs
        switch (cpu::ceil_div(cols, L)) {
          case 1: forward_tile<T, 1>(xr, wt, b, k, hp, h, c0, cols, rows, act, y_tile); break;
          case 2: forward_tile<T, 2>(xr, wt, b, k, hp, h, c0, cols, rows, act, y_tile); break;
          case 3: forward_tile<T, 3>(xr, wt, b, k, hp, h, c0, cols, rows, act, y_tile); break;
          default: forward_tile<T, kFwdVecs>(xr, wt, b, k, hp, h, c0, cols, rows, act, y_tile);
        }
      }
    }
  });
}

template <typename T>
void linear_backward(const T* gy, const T* y, const T* x, const T* w, int64_t n, int64_t k,
                     int64_t h, Activation act, T* grad_x, T* grad_w, T* grad_b,
                     const ParallelFor& pfor) {
  using V = simd::vec_t<T>;
  constexpr int64_t L = simd::Vec<T>::lanes;
  constexpr int64_t B = kBwdVecs * L;  // input features per tile
  constexpr int64_t R = kBwdRows;
  const int64_t kp = cpu::round_up(std::max<int64_t>(k, 1), B);
  // w zero-padded to (h, kp): grad_x tiles read whole blocks.
  T* wp = cpu::scratch<T>(cpu::kPackedWeight, static_cast<size_t>(h * kp));
  for (int64_t j = 0; j < h; ++j) {
    std::copy(w + j * k, w + (j + 1) * k, wp + j * kp);
    std::fill(wp + j * kp + k, wp + (j + 1) * kp, T(0));
  }

  const int64_t per_piece = h * kp + h;
  const int64_t max_pieces =
      std::max<int64_t>(1, std::min(kMaxPieces, kPartialBudget / std::max<int64_t>(per_piece, 1)));
  const int64_t piece = cpu::round_up(cpu::piece_size(n, 256, max_pieces), R);
  const int64_t pieces = cpu::ceil_div(n, piece);
  T* partial_w =
      grad_w ? cpu::scratch<T>(cpu::kPartialWeightGrads, static_cast<size_t>(pieces * h * kp))
             : nullptr;
  T* partial_b =
      grad_b ? cpu::scratch<T>(cpu::kPartialBiasGrads, static_cast<size_t>(pieces * h))
             : nullptr;
  if (partial_w) std::fill(partial_w, partial_w + pieces * h * kp, T(0));
  if (partial_b) std::fill(partial_b, partial_b + pieces * h, T(0));

  pfor(pieces, 1, [&](int64_t p0, int64_t p1) {
    T* gz = cpu::scratch<T>(cpu::kTileOutputGrads, static_cast<size_t>(R * h));
    T* xt = cpu::scratch<T>(cpu::kTileInputsT, static_cast<size_t>(R * kp));
    alignas(64) T out[R][B];
    for (int64_t p = p0; p < p1; ++p) {
      T* pw = grad_w ? partial_w + p * h * kp : nullptr;
      T* pb = grad_b ? partial_b + p * h : nullptr;
      const int64_t end = std::min(n, (p + 1) * piece);
      for (int64_t r0 = p * piece; r0 < end; r0 += R) {
        const int64_t rows = std::min(R, end - r0);
        // gz = gy * act' for this tile (tanh: 1 - y^2); rows past the end are zero.
        for (int64_t r = 0; r < R; ++r) {
          T* g = gz + r * h;
          if (r < rows) {
            const T* gyr = gy + (r0 + r) * h;
            if (act == Activation::Tanh) {
              const T* yr = y + (r0 + r) * h;
              for (int64_t j = 0; j < h; ++j) g[j] = gyr[j] * (T(1) - yr[j] * yr[j]);
            } else {
              std::copy(gyr, gyr + h, g);
            }
          } else {
            std::fill(g, g + h, T(0));
          }
        }
        if (pb) {
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < h; ++j) pb[j] += gz[r * h + j];
        }
        if (grad_x) {  // grad_x (rows, k) = gz (rows, h) @ w (h, k)
          for (int64_t c0 = 0; c0 < kp; c0 += B) {
            // blocks of kReduceBlock outputs, each summed from zero and added to out
            for (int64_t j0 = 0; j0 < std::max<int64_t>(h, 1); j0 += kReduceBlock) {
              V acc[R][kBwdVecs];
              for (int64_t r = 0; r < R; ++r)
                for (int64_t v = 0; v < kBwdVecs; ++v) acc[r][v] = V{};
              for (int64_t j = j0; j < std::min(h, j0 + kReduceBlock); ++j) {
                V wv[kBwdVecs];
                for (int64_t v = 0; v < kBwdVecs; ++v)
                  wv[v] = simd::load(wp + j * kp + c0 + v * L);
                for (int64_t r = 0; r < R; ++r) {
                  const V g = simd::broadcast(gz[r * h + j]);
                  for (int64_t v = 0; v < kBwdVecs; ++v) acc[r][v] += g * wv[v];
                }
              }
              for (int64_t r = 0; r < R; ++r)
                for (int64_t v = 0; v < kBwdVecs; ++v)
                  simd::store(out[r] + v * L,
                              j0 > 0 ? simd::load(out[r] + v * L) + acc[r][v] : acc[r][v]);
            }
            const int64_t cols = std::min(B, k - c0);
            for (int64_t r = 0; r < rows; ++r)
              std::copy(out[r], out[r] + cols, grad_x + (r0 + r) * k + c0);
          }
        }
        if (pw) {  // grad_w (h, k) += gz^T (h, rows) @ x (rows, k)
          for (int64_t r = 0; r < R; ++r) {
            T* xr = xt + r * kp;
            if (r < rows) std::copy(x + (r0 + r) * k, x + (r0 + r + 1) * k, xr);
            std::fill(xr + (r < rows ? k : 0), xr + kp, T(0));
          }
          for (int64_t c0 = 0; c0 < kp; c0 += B) {
            // the tile's input block stays in registers while every output row passes by
            V xv[R][kBwdVecs];
            for (int64_t r = 0; r < R; ++r)
              for (int64_t v = 0; v < kBwdVecs; ++v)
                xv[r][v] = simd::load(xt + r * kp + c0 + v * L);
            for (int64_t j = 0; j < h; ++j) {
              T* dst = pw + j * kp + c0;
              V row[kBwdVecs];
              for (int64_t v = 0; v < kBwdVecs; ++v) row[v] = simd::load(dst + v * L);
              for (int64_t r = 0; r < R; ++r) {
                const V g = simd::broadcast(gz[r * h + j]);
                for (int64_t v = 0; v < kBwdVecs; ++v) row[v] += g * xv[r][v];
              }
              for (int64_t v = 0; v < kBwdVecs; ++v) simd::store(dst + v * L, row[v]);
            }
          }
        }
      }
    }
  });

  if (grad_w) {
    pfor(h, cpu::grain_for(pieces * kp), [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j) {
        T* dst = grad_w + j * k;
        std::fill(dst, dst + k, T(0));
        for (int64_t p = 0; p < pieces; ++p) {
          const T* src = partial_w + (p * h + j) * kp;
          for (int64_t q = 0; q < k; ++q) dst[q] += src[q];
        }
      }
    });
  }
  if (grad_b) {
    std::fill(grad_b, grad_b + h, T(0));
    for (int64_t p = 0; p < pieces; ++p)
      for (int64_t j = 0; j < h; ++j) grad_b[j] += partial_b[p * h + j];
  }
}

PYMAKEMORE_INSTANTIATE_T(linear_forward)
PYMAKEMORE_INSTANTIATE_T(linear_backward)

}  // namespace pymakemore::PYMAKEMORE_LEVEL
