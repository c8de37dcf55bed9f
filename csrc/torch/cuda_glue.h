// What each op's CUDA file needs to call the torch-free launchers of csrc/cuda: the dtype
// codes, the current stream, a workspace from torch's caching allocator (CUDA-graph capture
// works), and the report of a launch that failed. Nothing here reads device data on the host.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cuda_runtime.h>

#include "pymakemore/cuda_kernels.h"

namespace pymakemore {

inline cuda::Dtype dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return cuda::Dtype::Float32;
    case at::kDouble: return cuda::Dtype::Float64;
    case at::kHalf: return cuda::Dtype::Float16;
    case at::kBFloat16: return cuda::Dtype::BFloat16;
    default: TORCH_CHECK(false, "pymakemore: unsupported dtype ", t.scalar_type());
  }
}

inline cuda::IndexDtype index_dtype_of(const at::Tensor& t) {
  return t.scalar_type() == at::kLong ? cuda::IndexDtype::Int64 : cuda::IndexDtype::Int32;
}

inline cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

inline const void* ptr_or_null(const c10::optional<at::Tensor>& t) {
  return t && t->defined() ? t->data_ptr() : nullptr;
}

// A launcher's result: a kernel that failed to launch (a bad configuration, too little shared
// memory) is reported here, before anything reads the output it never wrote.
inline void check_launch(const char* op, cuda::Status status) {
  TORCH_CHECK(status == 0, op, ": a CUDA kernel failed to launch: ",
              cudaGetErrorString(static_cast<cudaError_t>(status)));
}

inline at::Tensor workspace(size_t bytes, const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(bytes)}, like.options().dtype(at::kByte));
}

inline void* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

}  // namespace pymakemore
