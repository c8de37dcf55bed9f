// Cross entropy on rows of logits: one pass per row in the forward (online max and sum, the
// smoothing sum alongside), one log-sum-exp saved per row (float64), the mean/sum reduced by
// one block in a fixed order (deterministic); the backward recomputes softmax - onehot.
#include <cmath>

#include "common.cuh"

namespace pymakemore::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kReduceThreads = 1024;

template <typename Index>
__device__ __forceinline__ bool is_ignored(Index t, int64_t ignore_index) {
  return static_cast<int64_t>(t) == ignore_index;
}

// Reduces (max, sum of exp(x - max), a second plain sum) over the G threads of a group.
template <int G>
struct GroupReduce {
  __device__ static void run(float& m, float& s, float& extra, float* shared) {
    if constexpr (G <= 32) {
      for (int offset = G / 2; offset > 0; offset >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, offset, G);
        const float s2 = __shfl_xor_sync(0xffffffffu, s, offset, G);
        extra += __shfl_xor_sync(0xffffffffu, extra, offset, G);
        combine(m, s, m2, s2);
      }
    } else {  // one group per block: through shared memory, in a fixed tree
      float* sm = shared;
      float* ss = shared + G;
      float* se = shared + 2 * G;
      sm[threadIdx.x] = m;
      ss[threadIdx.x] = s;
      se[threadIdx.x] = extra;
      __syncthreads();
      for (int stride = G / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
          float mm = sm[threadIdx.x], s1 = ss[threadIdx.x];
          combine(mm, s1, sm[threadIdx.x + stride], ss[threadIdx.x + stride]);
          sm[threadIdx.x] = mm;
          ss[threadIdx.x] = s1;
          se[threadIdx.x] += se[threadIdx.x + stride];
        }
        __syncthreads();
      }
      m = sm[0];
      s = ss[0];
      extra = se[0];
      __syncthreads();
    }
  }
  // (m, s) += (m2, s2) for sums of exp(x - m)
  __device__ static void combine(float& m, float& s, float m2, float s2) {
    const float mx = fmaxf(m, m2);
    if (mx == -INFINITY) return;  // both empty so far
    s = s * expf(m - mx) + s2 * expf(m2 - mx);
    m = mx;
  }
};

// Row i's gradient for a valid target ti, by the G lanes of its group:
// g_j = scale * ((1-eps) w_t (p_j - [j==t]) + eps/c (W p_j - w_j)), W = weight_total.
template <typename T, int G>
__device__ __forceinline__ void row_gradient(const T* __restrict__ x, int64_t ti,
                                             const T* __restrict__ w, double lse, int64_t c,
                                             float scale, float eps, float weight_total, int lane,
                                             T* __restrict__ g) {
  const float spread = eps / float(c > 0 ? c : 1);
  const float wt = w ? to_acc(w[ti]) : 1.0f;
  const float p_coef = scale * ((1.0f - eps) * wt + spread * weight_total);
  const float w_coef = scale * spread;
  // lse as hi + lo: x - hi is exact for the x that matter, so p keeps full precision
  const float hi = float(lse);
  const float lo = float(lse - double(hi));
  for (int64_t j = lane; j < c; j += G) {
    const float p = expf((to_acc(x[j]) - hi) - lo);
    float v = p_coef * p - w_coef * (w ? to_acc(w[j]) : 1.0f);
    if (j == ti) v -= scale * (1.0f - eps) * wt;
    store(g + j, v);
  }
}

// One group of G threads per row. Row loss (double) to row_loss; lse to lse; if grad is not
// null, the row's gradient for grad_loss = 1 as well (totals[1]: the mean's divisor, when mean),
// while the row is fresh in the caches.
template <typename T, typename Index, int G>
__global__ void __launch_bounds__(kThreads)
forward_rows(const T* __restrict__ logits, const Index* __restrict__ target,
             const T* __restrict__ w, const double* __restrict__ w_total, int64_t n, int64_t c,
             int64_t ignore_index, double eps, double* __restrict__ row_loss,
             double* __restrict__ lse, T* __restrict__ grad, const double* __restrict__ totals,
             bool mean) {
  __shared__ float shared[3 * kThreads];
  const int lane = threadIdx.x % G;
  const int64_t groups_per_block = kThreads / G;
  // the gradient's row-independent terms (read only when there is a gradient to write)
  const float grad_scale = grad && mean ? float(1.0 / totals[1]) : 1.0f;
  const float grad_weight_total = grad && w ? float(*w_total) : float(c);
  for (int64_t i = blockIdx.x * groups_per_block + threadIdx.x / G; i - threadIdx.x / G < n;
       i += int64_t(gridDim.x) * groups_per_block) {
    const bool active = i < n;
    const T* x = logits + (active ? i : 0) * c;
    const float ref = active && c > 0 ? to_acc(x[0]) : 0.0f;
    float m = -INFINITY, s = 0.0f, gap_part = 0.0f;  // gap_part: sum w_j (x_j - ref)
    if (active) {
      for (int64_t j = lane; j < c; j += G) {
        const float v = to_acc(x[j]);
        if (v > m) {
          s = s * expf(m - v) + 1.0f;
          m = v;
        } else if (v != -INFINITY) {  // -inf adds nothing; a NaN makes the sum NaN
          s += expf(v - m);
        }
        if (eps > 0.0) gap_part += (w ? to_acc(w[j]) : 1.0f) * (v - ref);
      }
    }
    GroupReduce<G>::run(m, s, gap_part, shared);
    if (!active) continue;
    const bool bad_row = isinf(m) || isnan(m) || isnan(s);
    const double max = bad_row ? NAN : double(m);
    const double log_sum = bad_row ? NAN : log(double(s));
    const Index t = target[i];
    if (grad) {  // every lane; an out-of-range target stops the kernel from lane 0 below
      const int64_t ti = static_cast<int64_t>(t);
      T* g = grad + i * c;
      if (is_ignored(t, ignore_index) || ti < 0 || ti >= c) {
        for (int64_t j = lane; j < c; j += G) store(g + j, 0.0f);
      } else {
        row_gradient<T, G>(x, ti, w, max + log_sum, c, grad_scale, float(eps), grad_weight_total,
                           lane, g);
      }
    }
    if (lane != 0) continue;
    lse[i] = max + log_sum;
    double loss = 0.0;
    if (!is_ignored(t, ignore_index)) {
      const int64_t ti = static_cast<int64_t>(t);
      if (ti < 0 || ti >= c) fail_index("cross_entropy", "target", ti, i, c);
      const double wt = w ? double(to_acc(w[ti])) : 1.0;
      loss = (1.0 - eps) * wt * ((max - double(to_acc(x[ti]))) + log_sum);
      if (eps > 0.0) {
        // sum_j w_j (max - x_j) = W (max - ref) - sum_j w_j (x_j - ref); x_j - ref is small
        // next to the logits themselves, which keeps the cancellation mild
        const double weight_total = w ? *w_total : double(c);
        const double gap = weight_total * (max - double(ref)) - double(gap_part);
        loss += eps / double(c) * (gap + weight_total * log_sum);
      }
    }
    row_loss[i] = loss;
  }
}

// totals[0] = sum of row losses, totals[1] = the mean's divisor (sum of the target weights of
// the rows not ignored). One block, a fixed assignment and tree: the same result every run.
template <typename T, typename Index>
__global__ void __launch_bounds__(kReduceThreads)
reduce_rows(const double* __restrict__ row_loss, const Index* __restrict__ target,
            const T* __restrict__ w, int64_t n, int64_t c, int64_t ignore_index,
            double* __restrict__ totals) {
  __shared__ double sums[kReduceThreads], weights[kReduceThreads];
  double sum = 0.0, weight = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kReduceThreads) {
    if (row_loss) sum += row_loss[i];
    const Index t = target[i];
    if (is_ignored(t, ignore_index)) continue;
    const int64_t ti = static_cast<int64_t>(t);
    if (ti < 0 || ti >= c) fail_index("cross_entropy", "target", ti, i, c);
    weight += w ? double(to_acc(w[ti])) : 1.0;
  }
  sums[threadIdx.x] = sum;
  weights[threadIdx.x] = weight;
  __syncthreads();
  for (int stride = kReduceThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      sums[threadIdx.x] += sums[threadIdx.x + stride];
      weights[threadIdx.x] += weights[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    totals[0] = sums[0];
    totals[1] = weights[0];
  }
}

template <typename T>
__global__ void write_loss(const double* __restrict__ totals, bool mean, T* __restrict__ loss) {
  store(loss, mean ? totals[0] / totals[1] : totals[0]);  // 0 / 0: NaN, as torch
}

template <typename T>
__global__ void copy_rows(const double* __restrict__ row_loss, int64_t n, T* __restrict__ loss) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    store(loss + i, row_loss[i]);
}

// One group of G threads per row: the row's gradient scaled by grad_loss (and the mean).
template <typename T, typename Index, int G>
__global__ void __launch_bounds__(kThreads)
backward_rows(const T* __restrict__ grad_loss, bool per_row, const double* __restrict__ totals,
              bool mean, const T* __restrict__ logits, const Index* __restrict__ target,
              const T* __restrict__ w, const double* __restrict__ w_total,
              const double* __restrict__ lse, int64_t n, int64_t c, int64_t ignore_index,
              float eps, T* __restrict__ grad) {
  const int lane = threadIdx.x % G;
  const int64_t groups_per_block = kThreads / G;
  const float weight_total = w ? float(*w_total) : float(c);
  for (int64_t i = blockIdx.x * groups_per_block + threadIdx.x / G; i < n;
       i += int64_t(gridDim.x) * groups_per_block) {
    T* g = grad + i * c;
    const Index t = target[i];
    const int64_t ti = static_cast<int64_t>(t);
    if (is_ignored(t, ignore_index)) {
      for (int64_t j = lane; j < c; j += G) store(g + j, 0.0f);
      continue;
    }
    if (ti < 0 || ti >= c) fail_index("cross_entropy_backward", "target", ti, i, c);
    float scale = to_acc(grad_loss[per_row ? i : 0]);
    if (mean) scale = float(double(scale) / totals[1]);
    row_gradient<T, G>(logits + i * c, ti, w, lse[i], c, scale, eps, weight_total, lane, g);
  }
}

// x *= factor (one value on the device), skipped by every block when factor is 1.
template <typename T>
__global__ void scale_unless_one(T* __restrict__ x, int64_t n, const T* __restrict__ factor) {
  const auto f = to_acc(*factor);
  if (f == decltype(f)(1)) return;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    store(x + i, to_acc(x[i]) * f);
}

// W = sum of the class weights, left on the device (no host read).
template <typename T>
__global__ void class_weight_total(const T* __restrict__ w, int64_t c, double* __restrict__ out) {
  __shared__ double partial[kReduceThreads];
  double sum = 0.0;
  for (int64_t j = threadIdx.x; j < c; j += kReduceThreads) sum += double(to_acc(w[j]));
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = kReduceThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = partial[0];
}

size_t align(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Workspace: [row losses: n doubles][totals: loss sum, mean divisor, class-weight total]
struct Workspace {
  double* row_loss;
  double* totals;
  explicit Workspace(void* ws, int64_t n)
      : row_loss(static_cast<double*>(ws)),
        totals(reinterpret_cast<double*>(static_cast<char*>(ws) +
                                         align(sizeof(double) * static_cast<size_t>(n)))) {}
};

template <typename T, typename Index>
void forward_impl(const T* logits, const Index* target, const T* w, int64_t n, int64_t c,
                  const CrossEntropyOptions& opt, T* loss, double* lse, T* grad, void* workspace,
                  cudaStream_t stream) {
  Workspace ws(workspace, n);
  const bool mean = opt.reduction == Reduction::Mean;
  if (w) class_weight_total<T><<<1, kReduceThreads, 0, stream>>>(w, c, ws.totals + 2);
  if (grad && mean)  // the divisor, which the gradient needs before the rows are read
    reduce_rows<T, Index><<<1, kReduceThreads, 0, stream>>>(nullptr, target, w, n, c,
                                                            opt.ignore_index, ws.totals);
  if (n > 0) {
    const int64_t ignore = opt.ignore_index;
    const double eps = opt.label_smoothing;
    if (c <= 1024)
      forward_rows<T, Index, 32><<<blocks_for(n, kThreads / 32), kThreads, 0, stream>>>(
          logits, target, w, ws.totals + 2, n, c, ignore, eps, ws.row_loss, lse, grad,
          ws.totals, mean);
    else
      forward_rows<T, Index, kThreads><<<blocks_for(n, 1), kThreads, 0, stream>>>(
          logits, target, w, ws.totals + 2, n, c, ignore, eps, ws.row_loss, lse, grad,
          ws.totals, mean);
  }
  if (opt.reduction == Reduction::None) {
    if (n > 0) copy_rows<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(ws.row_loss, n, loss);
    return;
  }
  reduce_rows<T, Index><<<1, kReduceThreads, 0, stream>>>(ws.row_loss, target, w, n, c,
                                                          opt.ignore_index, ws.totals);
  write_loss<T><<<1, 1, 0, stream>>>(ws.totals, opt.reduction == Reduction::Mean, loss);
}

template <typename T, typename Index>
void backward_impl(const T* grad_loss, const T* logits, const Index* target, const T* w,
                   const double* lse, int64_t n, int64_t c, const CrossEntropyOptions& opt,
                   T* grad, void* workspace, cudaStream_t stream) {
  if (n == 0 || c == 0) return;
  Workspace ws(workspace, n);
  if (w) class_weight_total<T><<<1, kReduceThreads, 0, stream>>>(w, c, ws.totals + 2);
  const bool mean = opt.reduction == Reduction::Mean;
  if (mean)  // the divisor only; no row losses to add
    reduce_rows<T, Index><<<1, kReduceThreads, 0, stream>>>(nullptr, target, w, n, c,
                                                            opt.ignore_index, ws.totals);
  const bool per_row = opt.reduction == Reduction::None;
  const float eps = static_cast<float>(opt.label_smoothing);
  if (c <= 1024)
    backward_rows<T, Index, 32><<<blocks_for(n, kThreads / 32), kThreads, 0, stream>>>(
        grad_loss, per_row, ws.totals, mean, logits, target, w, ws.totals + 2, lse, n, c,
        opt.ignore_index, eps, grad);
  else
    backward_rows<T, Index, kThreads><<<blocks_for(n, 1), kThreads, 0, stream>>>(
        grad_loss, per_row, ws.totals, mean, logits, target, w, ws.totals + 2, lse, n, c,
        opt.ignore_index, eps, grad);
}

}  // namespace

size_t cross_entropy_workspace_bytes(int64_t n) {
  return align(sizeof(double) * static_cast<size_t>(n)) + align(3 * sizeof(double));
}

void cross_entropy_forward(Dtype dtype, IndexDtype index_dtype, const void* logits,
                           const void* target, const void* class_weight, int64_t n, int64_t c,
                           const CrossEntropyOptions& opt, void* loss, double* lse,
                           void* grad_logits, void* workspace, cudaStream_t stream) {
  with_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    with_index(index_dtype, [&](auto index_tag) {
      using Index = decltype(index_tag);
      forward_impl<T, Index>(static_cast<const T*>(logits), static_cast<const Index*>(target),
                             static_cast<const T*>(class_weight), n, c, opt,
                             static_cast<T*>(loss), lse, static_cast<T*>(grad_logits),
                             workspace, stream);
    });
  });
}

void cross_entropy_backward(Dtype dtype, IndexDtype index_dtype, const void* grad_loss,
                            const void* logits, const void* target, const void* class_weight,
                            const double* lse, int64_t n, int64_t c,
                            const CrossEntropyOptions& opt, void* grad_logits, void* workspace,
                            cudaStream_t stream) {
  with_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    with_index(index_dtype, [&](auto index_tag) {
      using Index = decltype(index_tag);
      backward_impl<T, Index>(static_cast<const T*>(grad_loss), static_cast<const T*>(logits),
                              static_cast<const Index*>(target),
                              static_cast<const T*>(class_weight), lse, n, c, opt,
                              static_cast<T*>(grad_logits), workspace, stream);
    });
  });
}

void scale_grad(Dtype dtype, void* grad, int64_t n, const void* factor, cudaStream_t stream) {
  if (n == 0) return;
  with_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    scale_unless_one<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
        static_cast<T*>(grad), n, static_cast<const T*>(factor));
  });
}

}  // namespace pymakemore::cuda
