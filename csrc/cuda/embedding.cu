// Embedding forward (gather) and deterministic backward (stable sort by row, then each row
// sums its gradient rows in index order, in fixed pieces; no float atomics).
#include <cub/device/device_radix_sort.cuh>

#include "common.cuh"

namespace pymakemore::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T, typename Index>
__global__ void gather_rows(const Index* __restrict__ indices, int64_t n,
                            const T* __restrict__ weight, int64_t rows, int64_t dim,
                            T* __restrict__ out) {
  const int64_t total = n * dim;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / dim, d = e - i * dim;
    const int64_t row = static_cast<int64_t>(indices[i]);
    if (row < 0 || row >= rows) fail_index("embedding", "index", row, i, rows);
    out[e] = weight[row * dim + d];
  }
}

// Checks every index; with keys, also writes each index's row and position for the sort.
template <typename Index>
__global__ void check_and_number(const Index* __restrict__ indices, int64_t n, int64_t rows,
                                 bool backward, int32_t* __restrict__ keys,
                                 int32_t* __restrict__ positions) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = static_cast<int64_t>(indices[i]);
    if (row < 0 || row >= rows)
      fail_index(backward ? "embedding_backward" : "embedding", "index", row, i, rows);
    if (!keys) continue;
    keys[i] = static_cast<int32_t>(row);
    positions[i] = static_cast<int32_t>(i);
  }
}

// First position of `row` in the sorted keys.
__device__ int64_t lower_bound(const int32_t* keys, int64_t n, int32_t row) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (keys[mid] < row) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// One block per weight row: its occurrences are keys[start, end). Thread (lane, d) sums the
// occurrences lane, lane + lanes, ... for dimension d; then the lanes' partials are added in
// lane order. The split depends on the data only, so the result is the same every run.
template <typename T>
__global__ void sum_rows(const T* __restrict__ grad_out, const int32_t* __restrict__ keys,
                         const int32_t* __restrict__ positions, int64_t n, int64_t rows,
                         int64_t dim, int64_t padding_idx, bool scale_by_freq,
                         T* __restrict__ grad_weight) {
  using A = typename Acc<T>::type;
  __shared__ A partial[kThreads];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t start = lower_bound(keys, n, static_cast<int32_t>(row));
    const int64_t end = lower_bound(keys, n, static_cast<int32_t>(row + 1));
    const A scale = scale_by_freq && end - start > 1 ? A(1) / A(end - start) : A(1);
    for (int64_t d0 = 0; d0 < dim; d0 += kThreads) {
      const int64_t width = dim - d0 < kThreads ? dim - d0 : kThreads;  // dims in this pass
      const int64_t lanes = kThreads / width;
      const int64_t lane = threadIdx.x / width, d = d0 + threadIdx.x % width;
      A sum = A(0);
      if (lane < lanes && row != padding_idx)
        for (int64_t j = start + lane; j < end; j += lanes)
          sum += to_acc(grad_out[int64_t(positions[j]) * dim + d]);
      __syncthreads();
      partial[threadIdx.x] = sum;
      __syncthreads();
      if (threadIdx.x < width) {
        A total = A(0);
        for (int64_t l = 0; l < lanes; ++l) total += partial[l * width + threadIdx.x];
        store(grad_weight + row * dim + d0 + threadIdx.x, total * scale);
      }
    }
  }
}

int sort_bits(int64_t rows) {
  int bits = 1;
  while (bits < 31 && (int64_t(1) << bits) < rows) ++bits;
  return bits;
}

size_t sort_temp_bytes(int64_t n, int64_t rows) {
  size_t bytes = 0;
  cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const int32_t*>(nullptr),
                                  static_cast<int32_t*>(nullptr),
                                  static_cast<const int32_t*>(nullptr),
                                  static_cast<int32_t*>(nullptr), static_cast<int>(n), 0,
                                  sort_bits(rows));
  return bytes;
}

size_t align(size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

Status embedding_forward(Dtype dtype, IndexDtype index_dtype, const void* indices, int64_t n,
                         const void* weight, int64_t rows, int64_t dim, void* out,
                         cudaStream_t stream) {
  if (n == 0) return 0;
  return status(with_index(index_dtype, [&](auto index_tag) {
    using Index = decltype(index_tag);
    if (dim == 0) {  // nothing to copy, but the indices are checked all the same
      check_and_number<Index><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
          static_cast<const Index*>(indices), n, rows, false, nullptr, nullptr);
      return cudaGetLastError();
    }
    return with_dtype(dtype, [&](auto tag) {
      using T = decltype(tag);
      gather_rows<T, Index><<<blocks_for(n * dim, kThreads), kThreads, 0, stream>>>(
          static_cast<const Index*>(indices), n, static_cast<const T*>(weight), rows, dim,
          static_cast<T*>(out));
      return cudaGetLastError();
    });
  }));
}

size_t embedding_backward_workspace_bytes(IndexDtype, int64_t n, int64_t rows) {
  // keys and positions, unsorted and sorted, then cub's scratch
  return 4 * align(sizeof(int32_t) * static_cast<size_t>(n)) + align(sort_temp_bytes(n, rows));
}

Status embedding_backward(Dtype dtype, IndexDtype index_dtype, const void* grad_out,
                          const void* indices, int64_t n, int64_t rows, int64_t dim,
                          int64_t padding_idx, bool scale_by_freq, void* grad_weight,
                          void* workspace, cudaStream_t stream) {
  char* ws = static_cast<char*>(workspace);
  const size_t slab = align(sizeof(int32_t) * static_cast<size_t>(n));
  auto* keys_in = reinterpret_cast<int32_t*>(ws);
  auto* keys = reinterpret_cast<int32_t*>(ws + slab);
  auto* pos_in = reinterpret_cast<int32_t*>(ws + 2 * slab);
  auto* positions = reinterpret_cast<int32_t*>(ws + 3 * slab);
  void* temp = ws + 4 * slab;
  size_t temp_bytes = sort_temp_bytes(n, rows);
  if (n > 0) {  // checked even when there is no gradient to write (an empty table or rows)
    const cudaError_t e = with_index(index_dtype, [&](auto index_tag) {
      using Index = decltype(index_tag);
      check_and_number<Index><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
          static_cast<const Index*>(indices), n, rows, true, keys_in, pos_in);
      return cudaGetLastError();
    });
    if (e) return status(e);
  }
  if (rows == 0 || dim == 0) return 0;
  if (n > 0) {
    // LSD radix sort is stable: positions of one row stay in increasing order
    const cudaError_t e = cub::DeviceRadixSort::SortPairs(
        temp, temp_bytes, keys_in, keys, pos_in, positions, static_cast<int>(n), 0,
        sort_bits(rows), stream);
    if (e) {
      (void)cudaGetLastError();  // cub leaves its launch's error as the last error: clear it
      return status(e);
    }
  }
  return status(with_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const unsigned blocks = static_cast<unsigned>(rows < 65535 * 8 ? rows : 65535 * 8);
    sum_rows<T><<<blocks, kThreads, 0, stream>>>(static_cast<const T*>(grad_out), keys,
                                                 positions, n, rows, dim, padding_idx,
                                                 scale_by_freq, static_cast<T*>(grad_weight));
    return cudaGetLastError();
  }));
}

}  // namespace pymakemore::cuda
