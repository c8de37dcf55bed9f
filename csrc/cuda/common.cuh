// Helpers shared by the CUDA kernels: element types, launch sizes, checks.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>

#include "pymakemore/cuda_kernels.h"

namespace pymakemore::cuda {

// Loads and stores through float (double stays double): half and bfloat16 accumulate in float.
template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16(v); }

// An index or target out of range: say which, then stop the kernel (see cuda_kernels.h).
// `what` is "index" or "target"; the wording matches the CPU ops' errors.
__device__ __forceinline__ void fail_index(const char* op, const char* what, long long value,
                                           long long pos, long long limit) {
  printf("pymakemore::%s: %s %lld at position %lld is out of range [0, %lld)\n", op, what,
         value, pos, limit);
  __trap();
}

inline unsigned blocks_for(int64_t items, int threads, int64_t cap = 65535LL * 16) {
  int64_t blocks = (items + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned>(blocks < cap ? blocks : cap);
}

// Launchers check each launch and stop at the first failure (a bad configuration, too much
// shared memory), returning its error:
//   kernel<<<...>>>(...);
//   if (cudaError_t e = cudaGetLastError()) return e;

// Returns body(T{}) for the element type T of dtype.
template <typename Body>
cudaError_t with_dtype(Dtype dtype, Body&& body) {
  switch (dtype) {
    case Dtype::Float32: return body(float{});
    case Dtype::Float64: return body(double{});
    case Dtype::Float16: return body(__half{});
    case Dtype::BFloat16: return body(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

template <typename Body>
cudaError_t with_index(IndexDtype index_dtype, Body&& body) {
  return index_dtype == IndexDtype::Int64 ? body(int64_t{}) : body(int32_t{});
}

// The launchers' result, as cuda_kernels.h declares it.
inline Status status(cudaError_t e) { return static_cast<Status>(e); }

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

}  // namespace pymakemore::cuda
