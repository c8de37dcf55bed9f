// batch_norm_tanh_forward / _backward: tanh(BatchNorm) over the rows of (m, c), statistics per
// column. Compiled once per instruction-set level (csrc/cpu/levels/<level>/batch_norm.cpp).
#include "this_level.h"  // first: see there

#include "common.h"
#include "cpu_math.h"
#include "simd.h"

// BatchNorm then tanh over x (m, c): the statistics of each of the c columns over the m rows.
// The work is split over columns (a thread owns whole columns), and each column's sums run
// over the rows in one fixed order, in blocks of kBlock rows each summed on its own then added
// to the total (a float64 accumulator either way): the results do not depend on the threads,
// and a sum over millions of rows keeps its accuracy.
namespace pymakemore::PYMAKEMORE_LEVEL {
namespace {

constexpr int64_t kBlock = 1024;
constexpr int64_t kColumnsPerPiece = 64;

// total[k][j] += sum over rows of term(r, j)[k] for j in [j0, j1), k < N: N sums of one pass
// over the rows; term gives std::array<double, N>.
template <size_t N, typename Term>
void column_sums(int64_t m, int64_t j0, int64_t j1, const std::array<double*, N>& total,
                 const Term& term) {
  const int64_t width = j1 - j0;
  std::vector<double> block(N * static_cast<size_t>(width));
  for (int64_t r0 = 0; r0 < m; r0 += kBlock) {
    std::fill(block.begin(), block.end(), 0.0);
    const int64_t r1 = std::min(m, r0 + kBlock);
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t j = 0; j < width; ++j) {
        const std::array<double, N> t = term(r, j0 + j);
        for (size_t k = 0; k < N; ++k) block[k * width + j] += t[k];
      }
    for (size_t k = 0; k < N; ++k)
      for (int64_t j = 0; j < width; ++j) total[k][j] += block[k * width + j];
  }
}

// v = tanh(v) over a row: whole vectors of the level's width, then the tail lane by lane
// (the same formula as the lanes: cpu_math.h)
template <typename T>
void tanh_row(T* v, int64_t n) {
  constexpr int64_t lanes = simd::Vec<T>::lanes;
  int64_t j = 0;
  for (; j + lanes <= n; j += lanes) simd::store(v + j, simd::tanh<T>(simd::load(v + j)));
  for (; j < n; ++j) v[j] = math::tanh(v[j]);
}

}  // namespace

template <typename T>
void batch_norm_tanh_forward(const T* x, int64_t m, int64_t c, const T* weight, const T* bias,
                             T* running_mean, T* running_var, bool training, double momentum,
                             double eps, bool unbiased, T* y, T* save_mean, T* save_invstd,
                             const ParallelFor& pfor) {
  const int64_t pieces = cpu::ceil_div(c, kColumnsPerPiece);
  pfor(pieces, cpu::grain_for(3 * m * kColumnsPerPiece), [&](int64_t p0, int64_t p1) {
    const int64_t j0 = p0 * kColumnsPerPiece, j1 = std::min(c, p1 * kColumnsPerPiece);
    const int64_t width = j1 - j0;
    std::vector<double> mean(static_cast<size_t>(width)), invstd(static_cast<size_t>(width));
    if (training) {
      std::vector<double> sum(static_cast<size_t>(width), 0.0);
      column_sums<1>(m, j0, j1, {sum.data()}, [&](int64_t r, int64_t j) {
        return std::array<double, 1>{static_cast<double>(x[r * c + j])};
      });
      for (int64_t j = 0; j < width; ++j) mean[j] = sum[j] / static_cast<double>(m);
      std::vector<double> squares(static_cast<size_t>(width), 0.0);
      column_sums<1>(m, j0, j1, {squares.data()}, [&](int64_t r, int64_t j) {
        const double d = static_cast<double>(x[r * c + j]) - mean[j - j0];
        return std::array<double, 1>{d * d};
      });
      for (int64_t j = 0; j < width; ++j) {
        const double var = squares[j] / static_cast<double>(unbiased ? m - 1 : m);
        invstd[j] = 1.0 / std::sqrt(var + eps);
        if (running_mean)
          running_mean[j0 + j] = static_cast<T>((1.0 - momentum) * running_mean[j0 + j] +
                                                momentum * mean[j]);
        if (running_var)  // the unbiased variance, as F.batch_norm's update
          running_var[j0 + j] = static_cast<T>(
              (1.0 - momentum) * running_var[j0 + j] +
              momentum * squares[j] / static_cast<double>(m - 1));
      }
    } else {
      for (int64_t j = 0; j < width; ++j) {
        mean[j] = static_cast<double>(running_mean[j0 + j]);
        invstd[j] = 1.0 / std::sqrt(static_cast<double>(running_var[j0 + j]) + eps);
      }
    }
    // y = tanh((x - mean) scale + bias), scale = weight * invstd, the pre-activation in
    // float64: with a mean large against the spread, x - mean in float would lose digits
    // (scale * x + shift in float loses more)
    std::vector<double> scale(static_cast<size_t>(width)), shift(static_cast<size_t>(width));
    for (int64_t j = 0; j < width; ++j) {
      scale[j] = (weight ? static_cast<double>(weight[j0 + j]) : 1.0) * invstd[j];
      shift[j] = bias ? static_cast<double>(bias[j0 + j]) : 0.0;
      save_mean[j0 + j] = static_cast<T>(mean[j]);
      save_invstd[j0 + j] = static_cast<T>(invstd[j]);
    }
    for (int64_t r = 0; r < m; ++r) {
      const T* xr = x + r * c + j0;
      T* yr = y + r * c + j0;
      for (int64_t j = 0; j < width; ++j)
        yr[j] = static_cast<T>((static_cast<double>(xr[j]) - mean[j]) * scale[j] + shift[j]);
      tanh_row(yr, width);
    }
  });
}

template <typename T>
void batch_norm_tanh_backward(const T* gy, const T* y, const T* x, int64_t m, int64_t c,
                              const T* weight, const T* save_mean, const T* save_invstd,
                              bool training, bool unbiased, T* grad_x, T* grad_weight,
                              T* grad_bias, const ParallelFor& pfor) {
  const int64_t pieces = cpu::ceil_div(c, kColumnsPerPiece);
  pfor(pieces, cpu::grain_for(3 * m * kColumnsPerPiece), [&](int64_t p0, int64_t p1) {
    const int64_t j0 = p0 * kColumnsPerPiece, j1 = std::min(c, p1 * kColumnsPerPiece);
    const int64_t width = j1 - j0;
    // dz = gy (1 - y^2), xhat = (x - mean) invstd
    auto dz = [&](int64_t r, int64_t j) {
      const double v = static_cast<double>(y[r * c + j]);
      return static_cast<double>(gy[r * c + j]) * (1.0 - v * v);
    };
    auto xhat = [&](int64_t r, int64_t j) {
      return (static_cast<double>(x[r * c + j]) - static_cast<double>(save_mean[j])) *
             static_cast<double>(save_invstd[j]);
    };
    std::vector<double> sum_dz(static_cast<size_t>(width), 0.0),
        sum_dz_xhat(static_cast<size_t>(width), 0.0);
    column_sums<2>(m, j0, j1, {sum_dz.data(), sum_dz_xhat.data()},
                   [&](int64_t r, int64_t j) {
                     const double d = dz(r, j);
                     return std::array<double, 2>{d, d * xhat(r, j)};
                   });
    for (int64_t j = 0; j < width; ++j) {
      if (grad_bias) grad_bias[j0 + j] = static_cast<T>(sum_dz[j]);
      if (grad_weight) grad_weight[j0 + j] = static_cast<T>(sum_dz_xhat[j]);
    }
    if (!grad_x) return;
    // training: dx = w invstd (dz - sum(dz) / m - xhat sum(dz xhat) / D), D the variance's
    // divisor (m, or m - 1 when normalised by the unbiased variance); evaluation: w invstd dz
    const double divisor = static_cast<double>(unbiased ? m - 1 : m);
    for (int64_t r = 0; r < m; ++r)
      for (int64_t j = j0; j < j1; ++j) {
        const double k = (weight ? static_cast<double>(weight[j]) : 1.0) *
                         static_cast<double>(save_invstd[j]);
        double g = dz(r, j);
        if (training)
          g -= sum_dz[j - j0] / static_cast<double>(m) +
               xhat(r, j) * sum_dz_xhat[j - j0] / divisor;
        grad_x[r * c + j] = static_cast<T>(k * g);
      }
  });
}

PYMAKEMORE_INSTANTIATE_T(batch_norm_tanh_forward)
PYMAKEMORE_INSTANTIATE_T(batch_norm_tanh_backward)

}  // namespace pymakemore::PYMAKEMORE_LEVEL
