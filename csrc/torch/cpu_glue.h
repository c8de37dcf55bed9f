// What the CPU glue (cpu_ops.cpp, linear_cross_entropy.cpp) needs to call the torch-free
// kernels: torch's intra-op threads as a ParallelFor, and the index type of a tensor.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>

#include "pymakemore/kernels.h"

namespace pymakemore {

inline const ParallelFor& torch_parallel_for() {
  static const ParallelFor pfor = [](int64_t n, int64_t grain, const RangeFn& fn) {
    if (n <= 0) return;
    if (n == 1 || n <= grain) {  // one piece: no parallel region to open
      fn(0, n);
      return;
    }
    at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) { fn(begin, end); });
  };
  return pfor;
}

// Runs body with Index = int32_t or int64_t.
template <typename Body>
inline void with_index_type(at::ScalarType st, Body&& body) {
  if (st == at::kLong)
    body(int64_t{});
  else
    body(int32_t{});
}

}  // namespace pymakemore
