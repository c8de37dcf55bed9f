// batch_norm_tanh: one block per tile of 32 columns (features), 8 rows of threads striding
// over the m rows; each column's sums in float64, per thread in row order, then the 8 partials
// in order: deterministic, and accurate over long batches. The pre-activation is formed in
// float64 (x - mean loses digits in float when the mean is large against the spread).
#include <type_traits>

#include "common.cuh"

namespace pymakemore::cuda {
namespace {

constexpr int kCols = 32;
constexpr int kRows = 8;
constexpr int kThreads = kCols * kRows;

__device__ __forceinline__ float tanh_of(float v) { return tanhf(v); }
__device__ __forceinline__ double tanh_of(double v) { return tanh(v); }

// The sum over the block's rows of threads of each column's `value` (every thread gets its
// column's total). partial: the block's kRows x kCols scratch.
__device__ __forceinline__ double column_total(double value, double (*partial)[kCols],
                                               double* total) {
  const int tx = threadIdx.x % kCols, ty = threadIdx.x / kCols;
  partial[ty][tx] = value;
  __syncthreads();
  if (ty == 0) {
    double t = 0.0;
    for (int k = 0; k < kRows; ++k) t += partial[k][tx];
    total[tx] = t;
  }
  __syncthreads();
  const double result = total[tx];
  __syncthreads();  // (partial and total are reused by the next call)
  return result;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
forward_columns(const T* __restrict__ x, int64_t m, int64_t c, const T* __restrict__ weight,
                const T* __restrict__ bias, T* __restrict__ running_mean,
                T* __restrict__ running_var, bool training, double momentum, double eps,
                bool unbiased, T* __restrict__ y, T* __restrict__ save_mean,
                T* __restrict__ save_invstd) {
  __shared__ double partial[kRows][kCols];
  __shared__ double total[kCols];
  const int tx = threadIdx.x % kCols, ty = threadIdx.x / kCols;
  for (int64_t j0 = int64_t(blockIdx.x) * kCols; j0 < c; j0 += int64_t(gridDim.x) * kCols) {
    const int64_t j = j0 + tx;
    const bool in = j < c;
    double mean, invstd;
    if (training) {
      double s = 0.0;
      if (in)
        for (int64_t r = ty; r < m; r += kRows) s += double(x[r * c + j]);
      mean = column_total(s, partial, total) / double(m);
      double q = 0.0;
      if (in)
        for (int64_t r = ty; r < m; r += kRows) {
          const double d = double(x[r * c + j]) - mean;
          q += d * d;
        }
      const double squares = column_total(q, partial, total);
      invstd = 1.0 / sqrt(squares / double(unbiased ? m - 1 : m) + eps);
      if (in && ty == 0) {
        if (running_mean)
          running_mean[j] = T((1.0 - momentum) * double(running_mean[j]) + momentum * mean);
        if (running_var)  // the unbiased variance, as F.batch_norm's update
          running_var[j] = T((1.0 - momentum) * double(running_var[j]) +
                             momentum * squares / double(m - 1));
      }
    } else {
      mean = in ? double(running_mean[j]) : 0.0;
      invstd = in ? 1.0 / sqrt(double(running_var[j]) + eps) : 0.0;
    }
    if (!in) continue;
    if (ty == 0) {
      save_mean[j] = T(mean);
      save_invstd[j] = T(invstd);
    }
    const double scale = (weight ? double(weight[j]) : 1.0) * invstd;
    const double shift = bias ? double(bias[j]) : 0.0;
    for (int64_t r = ty; r < m; r += kRows)
      y[r * c + j] = tanh_of(T((double(x[r * c + j]) - mean) * scale + shift));
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
backward_columns(const T* __restrict__ gy, const T* __restrict__ y, const T* __restrict__ x,
                 int64_t m, int64_t c, const T* __restrict__ weight,
                 const T* __restrict__ save_mean, const T* __restrict__ save_invstd,
                 bool training, bool unbiased, T* __restrict__ grad_x,
                 T* __restrict__ grad_weight, T* __restrict__ grad_bias) {
  __shared__ double partial[kRows][kCols];
  __shared__ double total[kCols];
  const int tx = threadIdx.x % kCols, ty = threadIdx.x / kCols;
  for (int64_t j0 = int64_t(blockIdx.x) * kCols; j0 < c; j0 += int64_t(gridDim.x) * kCols) {
    const int64_t j = j0 + tx;
    const bool in = j < c;
    const double mean = in ? double(save_mean[j]) : 0.0;
    const double invstd = in ? double(save_invstd[j]) : 0.0;
    // dz = gy (1 - y^2), xhat = (x - mean) invstd
    double s = 0.0, sx = 0.0;
    if (in)
      for (int64_t r = ty; r < m; r += kRows) {
        const double v = double(y[r * c + j]);
        const double dz = double(gy[r * c + j]) * (1.0 - v * v);
        s += dz;
        sx += dz * (double(x[r * c + j]) - mean) * invstd;
      }
    const double sum_dz = column_total(s, partial, total);
    const double sum_dz_xhat = column_total(sx, partial, total);
    if (!in) continue;
    if (ty == 0) {
      if (grad_bias) grad_bias[j] = T(sum_dz);
      if (grad_weight) grad_weight[j] = T(sum_dz_xhat);
    }
    if (!grad_x) continue;
    // training: dx = w invstd (dz - sum(dz) / m - xhat sum(dz xhat) / D), D the variance's
    // divisor; evaluation: w invstd dz
    const double k = (weight ? double(weight[j]) : 1.0) * invstd;
    const double divisor = double(unbiased ? m - 1 : m);
    for (int64_t r = ty; r < m; r += kRows) {
      const double v = double(y[r * c + j]);
      double g = double(gy[r * c + j]) * (1.0 - v * v);
      if (training)
        g -= sum_dz / double(m) + (double(x[r * c + j]) - mean) * invstd * sum_dz_xhat / divisor;
      grad_x[r * c + j] = T(k * g);
    }
  }
}

unsigned tiles(int64_t c) { return blocks_for(c, kCols); }

// body(T{}) for float32 and float64; float16 and bfloat16 are refused (the torch layer computes
// them in float32)
template <typename Body>
cudaError_t with_float_or_double(Dtype dtype, Body&& body) {
  return with_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) return body(tag);
    else return cudaErrorInvalidValue;
  });
}

}  // namespace

Status batch_norm_tanh_forward(Dtype dtype, const void* x, int64_t m, int64_t c,
                               const void* weight, const void* bias, void* running_mean,
                               void* running_var, bool training, double momentum, double eps,
                               bool unbiased, void* y, void* save_mean, void* save_invstd,
                               cudaStream_t stream) {
  if (c == 0) return 0;
  return status(with_float_or_double(dtype, [&](auto tag) {
    using T = decltype(tag);
    forward_columns<T><<<tiles(c), kThreads, 0, stream>>>(
        static_cast<const T*>(x), m, c, static_cast<const T*>(weight),
        static_cast<const T*>(bias), static_cast<T*>(running_mean), static_cast<T*>(running_var),
        training, momentum, eps, unbiased, static_cast<T*>(y), static_cast<T*>(save_mean),
        static_cast<T*>(save_invstd));
    return cudaGetLastError();
  }));
}

Status batch_norm_tanh_backward(Dtype dtype, const void* gy, const void* y, const void* x,
                                int64_t m, int64_t c, const void* weight, const void* save_mean,
                                const void* save_invstd, bool training, bool unbiased,
                                void* grad_x, void* grad_weight, void* grad_bias,
                                cudaStream_t stream) {
  if (c == 0) return 0;
  return status(with_float_or_double(dtype, [&](auto tag) {
    using T = decltype(tag);
    backward_columns<T><<<tiles(c), kThreads, 0, stream>>>(
        static_cast<const T*>(gy), static_cast<const T*>(y), static_cast<const T*>(x), m, c,
        static_cast<const T*>(weight), static_cast<const T*>(save_mean),
        static_cast<const T*>(save_invstd), training, unbiased, static_cast<T*>(grad_x),
        static_cast<T*>(grad_weight), static_cast<T*>(grad_bias));
    return cudaGetLastError();
  }));
}

}  // namespace pymakemore::cuda
