// linear and linear_tanh: one shared-memory tiled matrix product (float accumulation, exact
// float32 FMAs, no TF32) used three ways, each with its loads and epilogue fused:
//   forward  y      = act(x @ w^T + b)          bias and tanh in the epilogue
//   backward grad_x = gz @ w                     gz = gy * (1 - y^2) formed as gy is loaded
//            grad_w = gz^T @ x                   split over rows into fixed pieces, then the
//            grad_b = column sums of gz          pieces summed in order (deterministic)
#include "common.cuh"

namespace pymakemore::cuda {
namespace {

constexpr int kTile = 64;     // rows and columns of C per block
constexpr int kDepth = 16;    // reduction slice per shared-memory stage
constexpr int kThreads = 256; // 16 x 16 threads, 4 x 4 outputs each
// The weight and bias gradients sum over the rows in pieces of about kRowsPerPiece (each
// piece's sum in float, in order), then the pieces in order: a float sum of 4,096 terms keeps
// its accuracy, one of 65,536 does not (64 pieces of 4M rows lost 4e-5 of a bias gradient).
constexpr int64_t kRowsPerPiece = 4096;
constexpr int64_t kMaxPieces = 1024;
constexpr int64_t kPartialBudget = int64_t(1) << 25;  // partial-sum elements in all pieces

// C[m, j] for m < M, j < N: sum over r in [r_begin, r_end) of A(m, r) * B(r, j), then epi.
// The tiles of C are numbered along x (column tiles fastest), so any number of rows fits the
// grid (y and z are limited to 65535); z is the split of the reduction.
template <typename A, typename LoadA, typename LoadB, typename Epilogue>
__global__ void __launch_bounds__(kThreads)
tiled_product(int64_t M, int64_t N, int64_t R, int64_t rows_per_split, LoadA load_a,
              LoadB load_b, Epilogue epi) {
  // +1: a column of the tile is written by consecutive threads when the loader's memory
  // runs along the depth; the padding keeps those writes on different banks
  __shared__ A a_tile[kDepth][kTile + 1];
  __shared__ A b_tile[kDepth][kTile + 1];
  const int64_t col_tiles = (N + kTile - 1) / kTile;
  const int64_t m0 = int64_t(blockIdx.x) / col_tiles * kTile;
  const int64_t j0 = int64_t(blockIdx.x) % col_tiles * kTile;
  const int64_t r_begin = int64_t(blockIdx.z) * rows_per_split;
  const int64_t r_end = r_begin + rows_per_split < R ? r_begin + rows_per_split : R;
  const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;
  A acc[4][4] = {};
  for (int64_t r0 = r_begin; r0 < r_end; r0 += kDepth) {
    // consecutive threads take consecutive addresses: along the depth where the loader's
    // memory runs that way (its second argument for A, its first for B), else along the tile
    for (int e = threadIdx.x; e < kDepth * kTile; e += kThreads) {
      const int d = LoadA::kSecondContiguous ? e % kDepth : e / kTile;
      const int c = LoadA::kSecondContiguous ? e / kDepth : e % kTile;
      const int64_t r = r0 + d;
      a_tile[d][c] = (r < r_end && m0 + c < M) ? load_a(m0 + c, r) : A(0);
    }
    for (int e = threadIdx.x; e < kDepth * kTile; e += kThreads) {
      const int d = LoadB::kSecondContiguous ? e / kTile : e % kDepth;
      const int c = LoadB::kSecondContiguous ? e % kTile : e / kDepth;
      const int64_t r = r0 + d;
      b_tile[d][c] = (r < r_end && j0 + c < N) ? load_b(r, j0 + c) : A(0);
    }
    __syncthreads();
#pragma unroll
    for (int d = 0; d < kDepth; ++d) {
      A a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        a[i] = a_tile[d][tm + 16 * i];
        b[i] = b_tile[d][tn + 16 * i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t m = m0 + tm + 16 * i, col = j0 + tn + 16 * j;
      if (m < M && col < N) epi(m, col, blockIdx.z, acc[i][j]);
    }
}

__device__ __forceinline__ float act_tanh(float v) { return tanhf(v); }
__device__ __forceinline__ double act_tanh(double v) { return tanh(v); }

// element (r, c) of a row-major matrix with leading dimension ld
template <typename T>
struct RowMajor {
  static constexpr bool kSecondContiguous = true;  // (r, c) and (r, c + 1) are neighbours
  const T* p;
  int64_t ld;
  __device__ typename Acc<T>::type operator()(int64_t r, int64_t c) const {
    return to_acc(p[r * ld + c]);
  }
};

// element (r, c) of the transpose of a row-major matrix
template <typename T>
struct Transposed {
  static constexpr bool kSecondContiguous = false;
  const T* p;
  int64_t ld;
  __device__ typename Acc<T>::type operator()(int64_t r, int64_t c) const {
    return to_acc(p[c * ld + r]);
  }
};

// gz(m, j) = gy * act'(.) : tanh's derivative from the saved output, 1 - y^2
template <typename T>
struct Gz {
  static constexpr bool kSecondContiguous = true;
  const T* gy;
  const T* y;  // null for the identity
  int64_t h;
  __device__ typename Acc<T>::type operator()(int64_t m, int64_t j) const {
    const auto g = to_acc(gy[m * h + j]);
    if (!y) return g;
    const auto v = to_acc(y[m * h + j]);
    return g * (decltype(g)(1) - v * v);
  }
};

template <typename T>
struct GzTransposed {
  static constexpr bool kSecondContiguous = false;
  Gz<T> gz;
  __device__ typename Acc<T>::type operator()(int64_t j, int64_t m) const { return gz(m, j); }
};

// y = act(v + b)
template <typename T>
struct BiasActivation {
  T* y;
  const T* b;
  int64_t h;
  bool tanh_act;
  __device__ void operator()(int64_t m, int64_t j, unsigned, typename Acc<T>::type v) const {
    if (b) v += to_acc(b[j]);
    store(y + m * h + j, tanh_act ? act_tanh(v) : v);
  }
};

template <typename T>
struct Store {
  T* out;
  int64_t ld;
  __device__ void operator()(int64_t r, int64_t c, unsigned, typename Acc<T>::type v) const {
    store(out + r * ld + c, v);
  }
};

// one piece's partial sum, kept in the accumulation type
template <typename A>
struct StorePartial {
  A* partial;
  int64_t count, ld;
  __device__ void operator()(int64_t r, int64_t c, unsigned piece, A v) const {
    partial[int64_t(piece) * count + r * ld + c] = v;
  }
};

template <typename T, typename A>
__global__ void column_sums(Gz<T> gz, int64_t n, int64_t h, int64_t rows_per_piece,
                            A* __restrict__ partial) {
  const int64_t begin = int64_t(blockIdx.y) * rows_per_piece;
  const int64_t end = begin + rows_per_piece < n ? begin + rows_per_piece : n;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < h;
       j += int64_t(gridDim.x) * blockDim.x) {
    A sum = A(0);
    for (int64_t m = begin; m < end; ++m) sum += gz(m, j);
    partial[int64_t(blockIdx.y) * h + j] = sum;
  }
}

// out[e] = sum over pieces p (in order) of partial[p * count + e]
template <typename T, typename A>
__global__ void sum_pieces(const A* __restrict__ partial, int64_t pieces, int64_t count,
                           T* __restrict__ out) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < count;
       e += int64_t(gridDim.x) * blockDim.x) {
    A sum = A(0);
    for (int64_t p = 0; p < pieces; ++p) sum += partial[p * count + e];
    store(out + e, sum);
  }
}

// Pieces of rows for the weight and bias gradients: a function of the shape only.
int64_t pieces_for(int64_t n, int64_t k, int64_t h) {
  int64_t pieces = (n + kRowsPerPiece - 1) / kRowsPerPiece;
  const int64_t budget = kPartialBudget / (h * k + h > 0 ? h * k + h : 1);
  if (pieces > kMaxPieces) pieces = kMaxPieces;
  if (pieces > budget) pieces = budget;
  return pieces < 1 ? 1 : pieces;
}

// (rows beyond 2^31 - 1 tiles of 64 x 64 would be 2^43 outputs: more than any GPU holds)
dim3 grid_for(int64_t M, int64_t N, int64_t splits) {
  const int64_t tiles = ((M + kTile - 1) / kTile) * ((N + kTile - 1) / kTile);
  return dim3(static_cast<unsigned>(tiles), 1, static_cast<unsigned>(splits));
}

template <typename T>
cudaError_t forward_impl(const T* x, const T* w, const T* b, int64_t n, int64_t k, int64_t h,
                         Activation act, T* y, cudaStream_t stream) {
  using A = typename Acc<T>::type;
  tiled_product<A><<<grid_for(n, h, 1), kThreads, 0, stream>>>(
      n, h, k, k > 0 ? k : 1, RowMajor<T>{x, k}, Transposed<T>{w, k},
      BiasActivation<T>{y, b, h, act == Activation::Tanh});
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward_impl(const T* gy, const T* y, const T* x, const T* w, int64_t n, int64_t k,
                          int64_t h, Activation act, T* grad_x, T* grad_w, T* grad_b,
                          void* workspace, cudaStream_t stream) {
  using A = typename Acc<T>::type;
  const Gz<T> gz{gy, act == Activation::Tanh ? y : nullptr, h};
  const int64_t pieces = pieces_for(n, k, h);
  const int64_t rows_per_piece = n > 0 ? (n + pieces - 1) / pieces : 1;
  A* partial_w = static_cast<A*>(workspace);
  A* partial_b = partial_w + pieces * h * k;
  if (grad_x && n > 0 && k > 0) {
    tiled_product<A><<<grid_for(n, k, 1), kThreads, 0, stream>>>(
        n, k, h, h > 0 ? h : 1, gz, RowMajor<T>{w, k}, Store<T>{grad_x, k});
    if (cudaError_t e = cudaGetLastError()) return e;
  }
  if (grad_w && h > 0 && k > 0) {
    tiled_product<A><<<grid_for(h, k, pieces), kThreads, 0, stream>>>(
        h, k, n, rows_per_piece, GzTransposed<T>{gz}, RowMajor<T>{x, k},
        StorePartial<A>{partial_w, h * k, k});
    if (cudaError_t e = cudaGetLastError()) return e;
    sum_pieces<T, A><<<blocks_for(h * k, kThreads), kThreads, 0, stream>>>(partial_w, pieces,
                                                                          h * k, grad_w);
    if (cudaError_t e = cudaGetLastError()) return e;
  }
  if (grad_b && h > 0) {
    column_sums<T, A><<<dim3(blocks_for(h, kThreads), static_cast<unsigned>(pieces)), kThreads,
                        0, stream>>>(gz, n, h, rows_per_piece, partial_b);
    if (cudaError_t e = cudaGetLastError()) return e;
    sum_pieces<T, A><<<blocks_for(h, kThreads), kThreads, 0, stream>>>(partial_b, pieces, h,
                                                                      grad_b);
    if (cudaError_t e = cudaGetLastError()) return e;
  }
  return cudaSuccess;
}

}  // namespace

Status linear_forward(Dtype dtype, const void* x, const void* w, const void* b, int64_t n,
                      int64_t k, int64_t h, Activation act, void* y, cudaStream_t stream) {
  if (n == 0 || h == 0) return 0;
  return status(with_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    return forward_impl<T>(static_cast<const T*>(x), static_cast<const T*>(w),
                           static_cast<const T*>(b), n, k, h, act, static_cast<T*>(y), stream);
  }));
}

size_t linear_backward_workspace_bytes(int64_t n, int64_t k, int64_t h) {
  // float or double partial sums of grad_w and grad_b per piece of rows
  return sizeof(double) * static_cast<size_t>(pieces_for(n, k, h) * (h * k + h));
}

Status linear_backward(Dtype dtype, const void* gy, const void* y, const void* x, const void* w,
                       int64_t n, int64_t k, int64_t h, Activation act, void* grad_x,
                       void* grad_w, void* grad_b, void* workspace, cudaStream_t stream) {
  return status(with_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    return backward_impl<T>(static_cast<const T*>(gy), static_cast<const T*>(y),
                            static_cast<const T*>(x), static_cast<const T*>(w), n, k, h, act,
                            static_cast<T*>(grad_x), static_cast<T*>(grad_w),
                            static_cast<T*>(grad_b), workspace, stream);
  }));
}

}  // namespace pymakemore::cuda
