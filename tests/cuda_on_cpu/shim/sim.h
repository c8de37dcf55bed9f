// The CUDA runtime as the kernels of csrc/cuda see it, on HIP-CPU: launches checked against the
// limits of the GPU modelled (an H100/H200, sm_90), run synchronously, and made to fail on
// request; CUDA's last-error variable; shared memory filled with NaN bytes at each block's
// start; __trap as the end of the process. Included by the shim's cuda_runtime.h.
#pragma once

#include <hip/hip_runtime.h>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <unistd.h>

typedef struct CUstream_st* cudaStream_t;

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchFailure = 719,
};

enum cudaFuncAttribute : int { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

namespace cuda_on_cpu {

// Limits of the device modelled (sm_90).
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockDim[3] = {1024, 1024, 64};
constexpr unsigned kMaxGridDim[3] = {2147483647u, 65535, 65535};
constexpr size_t kStaticSharedLimit = 48 * 1024;     // static __shared__ per block
constexpr size_t kSharedLimit = 48 * 1024;           // static + dynamic, without opting in
constexpr size_t kOptInSharedLimit = 227 * 1024;     // the most a kernel may opt in to
constexpr int kTrapExitCode = 86;                    // the process's end at a __trap()

// What the harness reads and resets around each launcher call.
struct State {
  std::mutex mutex;
  long calls = 0;              // launches and API calls that can fail, in order
  long fail_at = 0;            // make the fail_at-th call fail (0: none)
  cudaError_t injected = cudaSuccess;  // the error the failing call reported
  long launches = 0;           // launches that ran
  long launches_after_failure = 0;  // launches attempted after a failed call
  cudaError_t last_error = cudaSuccess;
  std::map<std::string, size_t> opted_in;  // kernel name -> dynamic shared bytes allowed
  std::vector<std::string> violations;     // broken limits and rules, with the kernel's name
  // the launch being run (launches are synchronous)
  const char* kernel = "";
  size_t dynamic_bytes = 0;
};

inline State& state() {
  static State s;
  return s;
}

inline void violation(const std::string& what) {
  std::lock_guard<std::mutex> lock(state().mutex);
  state().violations.push_back(std::string(state().kernel) + ": " + what);
}

// A call that can fail: counts it, and reports the injected error where it is the chosen one.
inline bool fails_now(cudaError_t error) {
  State& s = state();
  if (s.injected != cudaSuccess) ++s.launches_after_failure;
  if (++s.calls != s.fail_at) return false;
  s.injected = error;
  s.last_error = error;
  return true;
}

inline unsigned flat_thread() {
  return unsigned(threadIdx.x) +
         unsigned(blockDim.x) * (unsigned(threadIdx.y) + unsigned(blockDim.y) * unsigned(threadIdx.z));
}

inline unsigned block_threads() {
  return unsigned(blockDim.x) * unsigned(blockDim.y) * unsigned(blockDim.z);
}

struct BlockShared {
  std::vector<std::max_align_t> dynamic;  // the block's dynamic shared memory
  size_t static_bytes = 0;
};

inline BlockShared& block_shared() {  // one per OS thread: a block runs on one
  thread_local BlockShared b;
  return b;
}

// At the top of every kernel (inserted by convert.py); thread 0 of a block runs it first.
inline void kernel_entry(unsigned launch_bound) {
  if (flat_thread() != 0) return;
  BlockShared& b = block_shared();
  b.static_bytes = 0;
  if (block_threads() > launch_bound)
    violation("launched with " + std::to_string(block_threads()) +
              " threads per block, above its __launch_bounds__ of " +
              std::to_string(launch_bound));
  const size_t bytes = state().dynamic_bytes;
  b.dynamic.resize((bytes + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t));
  std::memset(b.dynamic.data(), 0xff, bytes);  // NaN in every float and double
}

template <typename T>
T* dynamic_shared() {
  return reinterpret_cast<T*>(block_shared().dynamic.data());
}

// After each __shared__ array's declaration: filled with NaN bytes at the block's start (by
// thread 0, before any other thread runs), its size counted against the limits.
inline void shared_array(void* p, size_t bytes) {
  if (flat_thread() != 0) return;
  std::memset(p, 0xff, bytes);
  BlockShared& b = block_shared();
  b.static_bytes += bytes;
  if (b.static_bytes > kStaticSharedLimit)
    violation(std::to_string(b.static_bytes) + " bytes of static shared memory (limit " +
              std::to_string(kStaticSharedLimit) + ")");
}

inline std::string dims(const dim3& d) {
  return std::to_string(d.x) + " x " + std::to_string(d.y) + " x " + std::to_string(d.z);
}

// Why a launch with this configuration fails on the device, or "" when it does not.
inline std::string configuration_problem(const char* kernel, const dim3& grid, const dim3& block,
                                         size_t dynamic_bytes) {
  const unsigned g[3] = {grid.x, grid.y, grid.z}, t[3] = {block.x, block.y, block.z};
  for (int i = 0; i < 3; ++i) {
    if (g[i] == 0 || g[i] > kMaxGridDim[i]) return "grid " + dims(grid) + " out of limits";
    if (t[i] == 0 || t[i] > kMaxBlockDim[i]) return "block " + dims(block) + " out of limits";
  }
  if (uint64_t(t[0]) * t[1] * t[2] > kMaxThreadsPerBlock)
    return "block " + dims(block) + ": more than 1024 threads";
  size_t allowed = kSharedLimit;
  const auto opt = state().opted_in.find(kernel);
  if (opt != state().opted_in.end()) allowed = opt->second;
  if (dynamic_bytes > allowed)
    return std::to_string(dynamic_bytes) + " bytes of dynamic shared memory, " +
           std::to_string(allowed) + " allowed";
  return "";
}

// kernel<<<grid, block, shared, stream>>>(args...), as convert.py writes it.
template <typename Call, typename... Args>
void launch(const char* kernel, dim3 grid, dim3 block, size_t dynamic_bytes, cudaStream_t,
            Call call, Args&&... args) {
  State& s = state();
  if (fails_now(cudaErrorLaunchOutOfResources)) return;
  s.kernel = kernel;
  const std::string problem = configuration_problem(kernel, grid, block, dynamic_bytes);
  if (!problem.empty()) {  // a real failure of the code under test, not an injected one
    violation(problem);
    s.last_error = cudaErrorInvalidConfiguration;
    return;
  }
  s.dynamic_bytes = dynamic_bytes;
  ++s.launches;
  hip::detail::launch(grid, block, static_cast<std::uint32_t>(dynamic_bytes), nullptr, call,
                      std::make_tuple(std::forward<Args>(args)...));
  (void)hipDeviceSynchronize();
}

[[noreturn]] inline void trap() {
  std::fflush(stdout);
  std::fflush(stderr);
  _exit(kTrapExitCode);
}

}  // namespace cuda_on_cpu

inline cudaError_t cudaGetLastError() {
  auto& s = cuda_on_cpu::state();
  const cudaError_t e = s.last_error;
  s.last_error = cudaSuccess;
  return e;
}

inline cudaError_t cudaPeekAtLastError() { return cuda_on_cpu::state().last_error; }

inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}

// By the kernel's name (template instances share it): what the shim's launch looks up.
#define cudaFuncSetAttribute(kernel, attribute, value) \
  ::cuda_on_cpu::func_set_attribute(#kernel, attribute, value)

namespace cuda_on_cpu {
inline cudaError_t func_set_attribute(const char* kernel, cudaFuncAttribute attribute, int value) {
  State& s = state();
  if (fails_now(cudaErrorInvalidValue)) return cudaErrorInvalidValue;
  if (attribute != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      size_t(value) > kOptInSharedLimit) {
    s.last_error = cudaErrorInvalidValue;  // as the runtime: returned and left as last error
    return cudaErrorInvalidValue;
  }
  s.opted_in[kernel] = size_t(value);
  return cudaSuccess;
}
}  // namespace cuda_on_cpu

// Device intrinsics the kernels use that HIP-CPU spells differently or lacks.
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
  if (mask != 0xffffffffu) cuda_on_cpu::violation("a shuffle with a partial mask");
  return __shfl_xor(value, lane_mask, width);
}

inline uint64_t __umul64hi(uint64_t a, uint64_t b) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
}

#define __trap() ::cuda_on_cpu::trap()

using std::isinf;
using std::isnan;
using std::isfinite;

// A barrier of the lanes of one warp (the patched HIP-CPU's, which also checks that every lane
// reaches it).
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  if (mask != 0xffffffffu) cuda_on_cpu::violation("__syncwarp with a partial mask");
  hip::detail::warp_barrier();
}
