// Cross entropy on rows of logits: one pass per row in the forward (online max and sum, the
// smoothing sum alongside), one log-sum-exp saved per row (float64), the mean/sum reduced by
// one block in a fixed order (deterministic); the backward recomputes softmax - onehot.
// Everything is computed in the accumulation type: float for float/half/bfloat16, double for
// double.
#include <cmath>

#include "common.cuh"

namespace pymakemore::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kReduceThreads = 1024;
// Rows of up to this many classes take a warp each (32 lanes); longer rows a block each.
constexpr int64_t kWarpRowClasses = 1024;
// Beyond this |lse|, max + log_sum held in one double may have lost log_sum's digits (at 1e17
// all of them: tied logits then give p = 1 for every class instead of 1/c): the gradient then
// takes the row's max and log-sum apart (the backward recomputes them as the forward did).
constexpr double kLargeLse = 65536.0;

template <typename Index>
__device__ __forceinline__ bool is_ignored(Index t, int64_t ignore_index) {
  return static_cast<int64_t>(t) == ignore_index;
}

__device__ __forceinline__ float exp_acc(float v) { return expf(v); }
__device__ __forceinline__ double exp_acc(double v) { return exp(v); }

// What one pass over (part of) a row gathers. gap and weight serve label smoothing only:
// gap = sum_j w_j (max - x_j), every term >= 0 (exact before weighting, no cancellation even
// for large logits; +inf for a logit of -inf, as -log p_j is), weight = sum_j w_j over the
// finite x_j, so that gap can follow the max when it rises.
template <typename A>
struct RowStats {
  A max;
  A sum;  // sum_j exp(x_j - max)
  A gap;
  A weight;

  // (no default member initialisers: __shared__ arrays of it need a trivial constructor)
  __device__ static RowStats empty() { return {A(-INFINITY), A(0), A(0), A(0)}; }

  __device__ void add(A v, A wv, bool smoothing) {
    if (v > max) {
      if (smoothing && max != -INFINITY) gap += weight * (v - max);
      sum = sum * exp_acc(max - v) + A(1);
      max = v;
      if (smoothing) weight += wv;
    } else if (v != -INFINITY) {  // a NaN makes the sum NaN
      sum += exp_acc(v - max);
      if (smoothing) {
        gap += wv * (max - v);
        weight += wv;
      }
    } else if (smoothing) {
      gap += wv * A(INFINITY);  // NaN when wv is 0, as torch's 0 * -log p_j
    }
  }

  __device__ void combine(const RowStats& o) {
    const A mx = max > o.max ? max : o.max;
    if (mx == -INFINITY) {  // nothing finite on either side: only the -inf terms of gap
      gap += o.gap;
      return;
    }
    // the sides whose max is -inf hold no finite terms (sum and weight are 0): skipping them
    // avoids 0 * inf
    const A rescaled_gap = (max != -INFINITY ? gap + weight * (mx - max) : gap) +
                           (o.max != -INFINITY ? o.gap + o.weight * (mx - o.max) : o.gap);
    sum = sum * exp_acc(max - mx) + o.sum * exp_acc(o.max - mx);
    gap = rescaled_gap;
    weight += o.weight;
    max = mx;
  }
};

// Combines the RowStats of the G threads of a group; every thread ends with the row's, after
// a barrier of the group (its memory accesses before are ordered before those after).
template <int G>
struct GroupReduce {
  template <typename A>
  __device__ static void run(RowStats<A>& st, RowStats<A>* shared) {
    if constexpr (G <= 32) {
      for (int offset = G / 2; offset > 0; offset >>= 1) {
        RowStats<A> other;
        other.max = __shfl_xor_sync(0xffffffffu, st.max, offset, G);
        other.sum = __shfl_xor_sync(0xffffffffu, st.sum, offset, G);
        other.gap = __shfl_xor_sync(0xffffffffu, st.gap, offset, G);
        other.weight = __shfl_xor_sync(0xffffffffu, st.weight, offset, G);
        st.combine(other);
      }
      __syncwarp();  // orders the lanes' reads before any lane's writes that follow
    } else {  // one group per block: through shared memory, in a fixed tree
      shared[threadIdx.x] = st;
      __syncthreads();
      for (int stride = G / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) shared[threadIdx.x].combine(shared[threadIdx.x + stride]);
        __syncthreads();
      }
      st = shared[0];
      __syncthreads();
    }
  }
};

// Row i's gradient for a valid target ti, by the G lanes of its group:
// g_j = scale * ((1-eps) w_t (p_j - [j==t]) + eps/c (W p_j - w_j)), W = weight_total.
// g may be x (in place): each lane reads x_j before it writes g_j, and touches no other j.
// The row's log-sum-exp comes as max + log_sum (lse = their sum where that is exact enough).
template <typename T, int G, typename A>
__device__ __forceinline__ void row_gradient(const T* x, int64_t ti, const T* __restrict__ w,
                                             double max, double log_sum, int64_t c, A scale,
                                             A eps, A weight_total, int lane, T* g) {
  const A spread = eps / A(c > 0 ? c : 1);
  const A wt = w ? to_acc(w[ti]) : A(1);
  // without smoothing the W term is absent, not 0 * W (W may overflow to inf: 0 * inf = NaN)
  const A p_coef = scale * ((A(1) - eps) * wt + (spread != A(0) ? spread * weight_total : A(0)));
  const A w_coef = scale * spread;
  // lse as hi + lo: x - hi is exact for the x that matter, so p keeps full precision
  // (for double, lo is 0); lo from max and log_sum apart, which keeps log_sum's digits
  const double lse = max + log_sum;
  const A hi = A(lse);
  const A lo = A(isfinite(lse) ? (max - double(hi)) + log_sum : lse - double(hi));
  for (int64_t j = lane; j < c; j += G) {
    const A p = exp_acc((to_acc(x[j]) - hi) - lo);
    A v = p_coef * p - w_coef * (w ? to_acc(w[j]) : A(1));
    if (j == ti) v -= scale * (A(1) - eps) * wt;
    store(g + j, v);
  }
}

// One group of G threads per row. Row loss (double) to row_loss; lse to lse; if grad is not
// null, the row's gradient for grad_loss = 1 as well (totals[1]: the mean's divisor, when mean),
// while the row is fresh in the caches. grad may be logits itself (the gradient written over
// the logits): every read of a row's logits by one lane is done before another lane writes
// there (hence no __restrict__ on those two).
template <typename T, typename Index, int G>
__global__ void __launch_bounds__(kThreads)
forward_rows(const T* logits, const Index* __restrict__ target,
             const T* __restrict__ w, const double* __restrict__ w_total, int64_t n, int64_t c,
             int64_t ignore_index, double eps, double* __restrict__ row_loss,
             double* __restrict__ lse, T* grad, const double* __restrict__ totals, bool mean) {
  using A = typename Acc<T>::type;
  __shared__ RowStats<A> shared[G <= 32 ? 1 : kThreads];
  const int lane = threadIdx.x % G;
  const int64_t groups_per_block = kThreads / G;
  const bool smoothing = eps > 0.0;
  // the gradient's row-independent terms (read only when there is a gradient to write)
  const A grad_scale = grad && mean ? A(1.0 / totals[1]) : A(1);
  const A grad_weight_total = grad && w ? A(*w_total) : A(c);
  for (int64_t i = blockIdx.x * groups_per_block + threadIdx.x / G; i - threadIdx.x / G < n;
       i += int64_t(gridDim.x) * groups_per_block) {
    const bool active = i < n;
    const T* x = logits + (active ? i : 0) * c;
    RowStats<A> st = RowStats<A>::empty();
    const Index t = active ? target[i] : Index(0);
    const int64_t t_pos = static_cast<int64_t>(t);
    const bool t_valid = active && !is_ignored(t, ignore_index) && t_pos >= 0 && t_pos < c;
    // the target's logit, for the loss: read before the group's barrier below, after which
    // the row's gradient may be written over it
    const A x_target = t_valid && lane == 0 ? to_acc(x[t_pos]) : A(0);
    if (active)
      for (int64_t j = lane; j < c; j += G)
        st.add(to_acc(x[j]), smoothing && w ? to_acc(w[j]) : A(1), smoothing);
    GroupReduce<G>::run(st, shared);  // ends with a barrier of the group's threads
    if (!active) continue;
    const bool bad_row = isinf(st.max) || isnan(st.max) || isnan(st.sum);
    const double max = bad_row ? NAN : double(st.max);
    const double log_sum = bad_row ? NAN : log(double(st.sum));
    if (grad) {  // every lane; an out-of-range target stops the kernel from lane 0 below
      T* g = grad + i * c;
      if (!t_valid) {
        for (int64_t j = lane; j < c; j += G) store(g + j, A(0));
      } else {
        // max and log_sum apart only for a large lse, as the backward has them (it has lse)
        const double lse_row = max + log_sum;
        const bool large = fabs(lse_row) >= kLargeLse && !isinf(lse_row);
        row_gradient<T, G>(x, t_pos, w, large ? max : lse_row, large ? log_sum : 0.0, c,
                           grad_scale, A(eps), grad_weight_total, lane, g);
      }
    }
    if (lane != 0) continue;
    lse[i] = max + log_sum;
    double loss = 0.0;
    if (!is_ignored(t, ignore_index)) {
      if (!t_valid) fail_index("cross_entropy", "target", t_pos, i, c);
      const double wt = w ? double(to_acc(w[t_pos])) : 1.0;
      loss = (1.0 - eps) * wt * ((max - double(x_target)) + log_sum);
      if (smoothing) {  // sum_j w_j * -log p_j = gap + W log_sum, spread over the c classes
        const double weight_total = w ? *w_total : double(c);
        loss += eps / double(c) * (double(st.gap) + weight_total * log_sum);
      }
    }
    row_loss[i] = loss;
  }
}

// totals[0] = sum of row losses, totals[1] = the mean's divisor (sum of the target weights of
// the rows not ignored). One block, a fixed assignment and tree: the same result every run.
// `op` names the op in the message of a target out of range.
template <typename T, typename Index>
__global__ void __launch_bounds__(kReduceThreads)
reduce_rows(const double* __restrict__ row_loss, const Index* __restrict__ target,
            const T* __restrict__ w, int64_t n, int64_t c, int64_t ignore_index,
            double* __restrict__ totals, const char* op) {
  __shared__ double sums[kReduceThreads], weights[kReduceThreads];
  double sum = 0.0, weight = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kReduceThreads) {
    if (row_loss) sum += row_loss[i];
    const Index t = target[i];
    if (is_ignored(t, ignore_index)) continue;
    const int64_t ti = static_cast<int64_t>(t);
    if (ti < 0 || ti >= c) fail_index(op, "target", ti, i, c);
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
  // a mean over a divisor of 0 (every row ignored, or every target's class weight 0) is NaN,
  // as torch's, whose target term is 0 / 0 even when label smoothing's term is not
  store(loss, mean ? (totals[1] == 0.0 ? nan("") : totals[0] / totals[1]) : totals[0]);
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
              double eps, T* __restrict__ grad) {
  using A = typename Acc<T>::type;
  __shared__ RowStats<A> shared[G <= 32 ? 1 : kThreads];
  const int lane = threadIdx.x % G;
  const int64_t groups_per_block = kThreads / G;
  const A weight_total = w ? A(*w_total) : A(c);
  for (int64_t i = blockIdx.x * groups_per_block + threadIdx.x / G; i < n;
       i += int64_t(gridDim.x) * groups_per_block) {
    T* g = grad + i * c;
    const Index t = target[i];
    const int64_t ti = static_cast<int64_t>(t);
    if (is_ignored(t, ignore_index)) {
      for (int64_t j = lane; j < c; j += G) store(g + j, A(0));
      continue;
    }
    if (ti < 0 || ti >= c) fail_index("cross_entropy_backward", "target", ti, i, c);
    A scale = to_acc(grad_loss[per_row ? i : 0]);
    if (mean) scale = A(double(scale) / totals[1]);
    const T* x = logits + i * c;
    double max = lse[i], log_sum = 0.0;
    if (fabs(lse[i]) >= kLargeLse && !isinf(lse[i])) {
      // the row's max and log-sum again, as the forward found them (the same lanes and tree;
      // every lane of the group takes this branch: one row, one lse)
      RowStats<A> st = RowStats<A>::empty();
      for (int64_t j = lane; j < c; j += G) st.add(to_acc(x[j]), A(1), false);
      GroupReduce<G>::run(st, shared);
      max = double(st.max);
      log_sum = log(double(st.sum));
    }
    row_gradient<T, G>(x, ti, w, max, log_sum, c, scale, A(eps), weight_total, lane, g);
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
cudaError_t forward_impl(const T* logits, const Index* target, const T* w, int64_t n, int64_t c,
                         const CrossEntropyOptions& opt, T* loss, double* lse, T* grad,
                         void* workspace, cudaStream_t stream) {
  Workspace ws(workspace, n);
  const bool mean = opt.reduction == Reduction::Mean;
  const int64_t ignore = opt.ignore_index;
  if (w) {
    class_weight_total<T><<<1, kReduceThreads, 0, stream>>>(w, c, ws.totals + 2);
    if (cudaError_t e = cudaGetLastError()) return e;
  }
  if (grad && mean) {  // the divisor, which the gradient needs before the rows are read
    reduce_rows<T, Index><<<1, kReduceThreads, 0, stream>>>(nullptr, target, w, n, c, ignore,
                                                            ws.totals, "cross_entropy");
    if (cudaError_t e = cudaGetLastError()) return e;
  }
  if (n > 0) {
    const double eps = opt.label_smoothing;
    if (c <= kWarpRowClasses)
      forward_rows<T, Index, 32><<<blocks_for(n, kThreads / 32), kThreads, 0, stream>>>(
          logits, target, w, ws.totals + 2, n, c, ignore, eps, ws.row_loss, lse, grad,
          ws.totals, mean);
    else
      forward_rows<T, Index, kThreads><<<blocks_for(n, 1), kThreads, 0, stream>>>(
          logits, target, w, ws.totals + 2, n, c, ignore, eps, ws.row_loss, lse, grad,
          ws.totals, mean);
    if (cudaError_t e = cudaGetLastError()) return e;
  }
  if (opt.reduction == Reduction::None) {
    if (n == 0) return cudaSuccess;  // nothing launched: nothing to report
    copy_rows<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(ws.row_loss, n, loss);
    return cudaGetLastError();
  }
  reduce_rows<T, Index><<<1, kReduceThreads, 0, stream>>>(ws.row_loss, target, w, n, c, ignore,
                                                          ws.totals, "cross_entropy");
  if (cudaError_t e = cudaGetLastError()) return e;
  write_loss<T><<<1, 1, 0, stream>>>(ws.totals, mean, loss);
  return cudaGetLastError();
}

template <typename T, typename Index>
cudaError_t backward_impl(const T* grad_loss, const T* logits, const Index* target, const T* w,
                          const double* lse, int64_t n, int64_t c,
                          const CrossEntropyOptions& opt, T* grad, void* workspace,
                          cudaStream_t stream) {
  if (n == 0 || c == 0) return cudaSuccess;
  Workspace ws(workspace, n);
  if (w) {
    class_weight_total<T><<<1, kReduceThreads, 0, stream>>>(w, c, ws.totals + 2);
    if (cudaError_t e = cudaGetLastError()) return e;
  }
  const bool mean = opt.reduction == Reduction::Mean;
  if (mean) {  // the divisor only; no row losses to add
    reduce_rows<T, Index><<<1, kReduceThreads, 0, stream>>>(nullptr, target, w, n, c,
                                                            opt.ignore_index, ws.totals,
                                                            "cross_entropy_backward");
    if (cudaError_t e = cudaGetLastError()) return e;
  }
  const bool per_row = opt.reduction == Reduction::None;
  if (c <= kWarpRowClasses)
    backward_rows<T, Index, 32><<<blocks_for(n, kThreads / 32), kThreads, 0, stream>>>(
        grad_loss, per_row, ws.totals, mean, logits, target, w, ws.totals + 2, lse, n, c,
        opt.ignore_index, opt.label_smoothing, grad);
  else
    backward_rows<T, Index, kThreads><<<blocks_for(n, 1), kThreads, 0, stream>>>(
        grad_loss, per_row, ws.totals, mean, logits, target, w, ws.totals + 2, lse, n, c,
        opt.ignore_index, opt.label_smoothing, grad);
  return cudaGetLastError();
}

}  // namespace

size_t cross_entropy_workspace_bytes(int64_t n) {
  return align(sizeof(double) * static_cast<size_t>(n)) + align(3 * sizeof(double));
}

Status cross_entropy_forward(Dtype dtype, IndexDtype index_dtype, const void* logits,
                             const void* target, const void* class_weight, int64_t n, int64_t c,
                             const CrossEntropyOptions& opt, void* loss, double* lse,
                             void* grad_logits, void* workspace, cudaStream_t stream) {
  return status(with_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    return with_index(index_dtype, [&](auto index_tag) {
      using Index = decltype(index_tag);
      return forward_impl<T, Index>(
          static_cast<const T*>(logits), static_cast<const Index*>(target),
          static_cast<const T*>(class_weight), n, c, opt, static_cast<T*>(loss), lse,
          static_cast<T*>(grad_logits), workspace, stream);
    });
  }));
}

Status cross_entropy_backward(Dtype dtype, IndexDtype index_dtype, const void* grad_loss,
                              const void* logits, const void* target, const void* class_weight,
                              const double* lse, int64_t n, int64_t c,
                              const CrossEntropyOptions& opt, void* grad_logits, void* workspace,
                              cudaStream_t stream) {
  return status(with_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    return with_index(index_dtype, [&](auto index_tag) {
      using Index = decltype(index_tag);
      return backward_impl<T, Index>(
          static_cast<const T*>(grad_loss), static_cast<const T*>(logits),
          static_cast<const Index*>(target), static_cast<const T*>(class_weight), lse, n, c, opt,
          static_cast<T*>(grad_logits), workspace, stream);
    });
  }));
}

Status scale_grad(Dtype dtype, void* grad, int64_t n, const void* factor, cudaStream_t stream) {
  if (n == 0) return 0;
  return status(with_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    scale_unless_one<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
        static_cast<T*>(grad), n, static_cast<const T*>(factor));
    return cudaGetLastError();
  }));
}

}  // namespace pymakemore::cuda
