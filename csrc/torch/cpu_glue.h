// What each op's CPU file needs to call the torch-free kernels: torch's intra-op threads as a
// ParallelFor, the index type of a tensor, outputs allocated with a huge-page hint, and
// float16/bfloat16 operands computed in float32 (the CPU kernels are float32/float64).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

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


// Outputs are written once, right after allocation. For large ones most of that time goes
// to page faults (4 KiB each, zeroed by the kernel); asking for transparent huge pages
// before the first touch makes it 512 times fewer faults. Only above 32 MiB, where glibc
// always maps fresh memory: smaller blocks come back from its heap already mapped, and
// there the hint only costs. A hint: with THP off nothing changes.
inline at::Tensor new_output(at::IntArrayRef shape, const at::TensorOptions& options) {
  at::Tensor out = at::empty(shape, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  constexpr size_t kMinBytes = size_t(32) << 20;
  const size_t bytes = out.nbytes();
  if (bytes > kMinBytes) {
    const uintptr_t start = reinterpret_cast<uintptr_t>(out.data_ptr());
    const uintptr_t begin = (start + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t end = (start + bytes) & ~(kHuge - 1);
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  }
#endif
  return out;
}

inline at::Tensor upcast(const at::Tensor& t) {
  return t.defined() && at::isReducedFloatingType(t.scalar_type()) ? t.to(at::kFloat) : t;
}

inline c10::optional<at::Tensor> upcast(const c10::optional<at::Tensor>& t) {
  if (!t || !t->defined()) return c10::nullopt;
  return upcast(*t);
}

// float16 or bfloat16 (computed in float32 here)
inline bool half_precision(const at::Tensor& t) {
  return at::isReducedFloatingType(t.scalar_type());
}

template <typename T>
inline const T* ptr_or_null(const c10::optional<at::Tensor>& t) {
  return t && t->defined() ? t->data_ptr<T>() : nullptr;
}

template <typename T>
inline T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

}  // namespace pymakemore
