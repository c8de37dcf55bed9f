// The kernels' entry points (kernels.h): each calls the same kernel compiled for the chosen
// instruction-set level, pymakemore::<level>::name (csrc/cpu/levels/).
#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "cpu_levels.h"
#include "pymakemore/kernels.h"

namespace pymakemore {

namespace portable {
#include "pymakemore/kernel_functions.inc"
}  // namespace portable
#if PYMAKEMORE_X86_LEVELS
namespace avx2 {
#include "pymakemore/kernel_functions.inc"
}  // namespace avx2
namespace avx512 {
#include "pymakemore/kernel_functions.inc"
}  // namespace avx512
#endif

namespace {

constexpr const char* kNames[] = {"portable", "avx2", "avx512"};

// -1 until the first kernel call (or set_cpu_level) chooses
std::atomic<int> active_level{-1};

CpuLevel parse_level(const std::string& name, const char* where) {
  for (int level = 0; level <= static_cast<int>(best_cpu_level()); ++level)
    if (name == kNames[level]) return static_cast<CpuLevel>(level);
  const bool known = name == kNames[1] || name == kNames[2];
  throw std::invalid_argument(
      std::string(where) + "=" + name +
      (known ? std::string(": this CPU (or this build) runs at most ") +
                   cpu_level_name(best_cpu_level())
             : std::string(": not a level (portable, avx2, avx512)")));
}

}  // namespace

const char* cpu_level_name(CpuLevel level) { return kNames[static_cast<int>(level)]; }

CpuLevel best_cpu_level() {
#if PYMAKEMORE_X86_LEVELS
  // what the target pragmas of this_level.h compile for (the CPU's and the OS's support)
  if (__builtin_cpu_supports("x86-64-v4")) return CpuLevel::Avx512;
  if (__builtin_cpu_supports("x86-64-v3")) return CpuLevel::Avx2;
#endif
  return CpuLevel::Portable;
}

CpuLevel cpu_level() {
  const int level = active_level.load(std::memory_order_relaxed);
  if (level >= 0) return static_cast<CpuLevel>(level);
  const char* forced = std::getenv("PYMAKEMORE_CPU_LEVEL");
  const CpuLevel chosen = forced && *forced ? parse_level(forced, "PYMAKEMORE_CPU_LEVEL")
                                            : best_cpu_level();
  active_level.store(static_cast<int>(chosen), std::memory_order_relaxed);
  return chosen;
}

void set_cpu_level(const char* name) {
  active_level.store(static_cast<int>(parse_level(name, "cpu level")),
                     std::memory_order_relaxed);
}

// The call at the active level.
#if PYMAKEMORE_X86_LEVELS
#define PYMAKEMORE_DISPATCH(...)                                 \
  switch (cpu_level()) {                                         \
    case CpuLevel::Avx512: return avx512::__VA_ARGS__;           \
    case CpuLevel::Avx2: return avx2::__VA_ARGS__;               \
    default: return portable::__VA_ARGS__;                       \
  }
#else
#define PYMAKEMORE_DISPATCH(...) \
  cpu_level();                   \
  return portable::__VA_ARGS__;
#endif

template <typename T, typename Index>
int64_t embedding_forward(const Index* indices, int64_t n, const T* weight, int64_t num_rows,
                          int64_t dim, T* out, const ParallelFor& pfor) {
  PYMAKEMORE_DISPATCH(embedding_forward<T, Index>(indices, n, weight, num_rows, dim, out, pfor))
}

template <typename T, typename Index>
int64_t embedding_backward(const T* grad_out, const Index* indices, int64_t n, int64_t num_rows,
                           int64_t dim, int64_t padding_idx, bool scale_by_freq, T* grad_weight,
                           const ParallelFor& pfor) {
  PYMAKEMORE_DISPATCH(embedding_backward<T, Index>(grad_out, indices, n, num_rows, dim,
                                                   padding_idx, scale_by_freq, grad_weight, pfor))
}

template <typename T>
void linear_forward(const T* x, const T* w, const T* bias, int64_t n, int64_t k, int64_t h,
                    Activation act, T* y, const ParallelFor& pfor) {
  PYMAKEMORE_DISPATCH(linear_forward<T>(x, w, bias, n, k, h, act, y, pfor))
}

template <typename T>
void linear_backward(const T* gy, const T* y, const T* x, const T* w, int64_t n, int64_t k,
                     int64_t h, Activation act, T* grad_x, T* grad_w, T* grad_b,
                     const ParallelFor& pfor) {
  PYMAKEMORE_DISPATCH(linear_backward<T>(gy, y, x, w, n, k, h, act, grad_x, grad_w, grad_b, pfor))
}

template <typename T, typename Index>
int64_t cross_entropy_forward(const T* logits, const Index* target, const T* class_weight,
                              int64_t n, int64_t c, const CrossEntropyOptions& opt, T* loss,
                              double* lse, T* grad_logits, const ParallelFor& pfor) {
  PYMAKEMORE_DISPATCH(cross_entropy_forward<T, Index>(logits, target, class_weight, n, c, opt,
                                                      loss, lse, grad_logits, pfor))
}

template <typename T, typename Index>
int64_t cross_entropy_backward(const T* grad_loss, const T* logits, const Index* target,
                               const T* class_weight, const double* lse, int64_t n, int64_t c,
                               const CrossEntropyOptions& opt, T* grad_logits,
                               const ParallelFor& pfor) {
  PYMAKEMORE_DISPATCH(cross_entropy_backward<T, Index>(grad_loss, logits, target, class_weight,
                                                       lse, n, c, opt, grad_logits, pfor))
}

template <typename T>
void batch_norm_tanh_forward(const T* x, int64_t m, int64_t c, const T* weight, const T* bias,
                             T* running_mean, T* running_var, bool training, double momentum,
                             double eps, bool unbiased, T* y, T* save_mean, T* save_invstd,
                             const ParallelFor& pfor) {
  PYMAKEMORE_DISPATCH(batch_norm_tanh_forward<T>(x, m, c, weight, bias, running_mean,
                                                 running_var, training, momentum, eps, unbiased,
                                                 y, save_mean, save_invstd, pfor))
}

template <typename T>
void batch_norm_tanh_backward(const T* gy, const T* y, const T* x, int64_t m, int64_t c,
                              const T* weight, const T* save_mean, const T* save_invstd,
                              bool training, bool unbiased, T* grad_x, T* grad_weight,
                              T* grad_bias, const ParallelFor& pfor) {
  PYMAKEMORE_DISPATCH(batch_norm_tanh_backward<T>(gy, y, x, m, c, weight, save_mean,
                                                  save_invstd, training, unbiased, grad_x,
                                                  grad_weight, grad_bias, pfor))
}

int64_t mlp_train_steps(const MlpShape& shape, MlpParams params, const int64_t* X,
                        const int64_t* Y, int64_t n_train, const float* lrs, int64_t steps,
                        int64_t first_step, uint64_t seed, const int64_t* batch_indices,
                        float* losses, int threads) {
  PYMAKEMORE_DISPATCH(mlp_train_steps(shape, params, X, Y, n_train, lrs, steps, first_step, seed,
                                      batch_indices, losses, threads))
}

int64_t chain_train_steps(const ChainShape& shape, ChainParams params, const int64_t* X,
                          const int64_t* Y, int64_t n_train, const float* lrs, int64_t steps,
                          int64_t first_step, uint64_t seed, const int64_t* batch_indices,
                          const bool* record, double* update_stats, float* losses,
                          int threads) {
  PYMAKEMORE_DISPATCH(chain_train_steps(shape, params, X, Y, n_train, lrs, steps, first_step,
                                        seed, batch_indices, record, update_stats, losses,
                                        threads))
}

#undef PYMAKEMORE_DISPATCH

#define PYMAKEMORE_INSTANTIATE_INDEXED(T, Index)                                              \
  template int64_t embedding_forward<T, Index>(const Index*, int64_t, const T*, int64_t,      \
                                               int64_t, T*, const ParallelFor&);              \
  template int64_t embedding_backward<T, Index>(const T*, const Index*, int64_t, int64_t,     \
                                                int64_t, int64_t, bool, T*, const ParallelFor&); \
  template int64_t cross_entropy_forward<T, Index>(const T*, const Index*, const T*, int64_t, \
                                                   int64_t, const CrossEntropyOptions&, T*,   \
                                                   double*, T*, const ParallelFor&);          \
  template int64_t cross_entropy_backward<T, Index>(const T*, const T*, const Index*,         \
                                                    const T*, const double*, int64_t, int64_t, \
                                                    const CrossEntropyOptions&, T*,           \
                                                    const ParallelFor&);
#define PYMAKEMORE_INSTANTIATE(T)                                                             \
  PYMAKEMORE_INSTANTIATE_INDEXED(T, int32_t)                                                  \
  PYMAKEMORE_INSTANTIATE_INDEXED(T, int64_t)                                                  \
  template void linear_forward<T>(const T*, const T*, const T*, int64_t, int64_t, int64_t,    \
                                  Activation, T*, const ParallelFor&);                        \
  template void linear_backward<T>(const T*, const T*, const T*, const T*, int64_t, int64_t,  \
                                   int64_t, Activation, T*, T*, T*, const ParallelFor&);      \
  template void batch_norm_tanh_forward<T>(const T*, int64_t, int64_t, const T*, const T*, T*,  \
                                           T*, bool, double, double, bool, T*, T*, T*,        \
                                           const ParallelFor&);                              \
  template void batch_norm_tanh_backward<T>(const T*, const T*, const T*, int64_t, int64_t,    \
                                            const T*, const T*, const T*, bool, bool, T*, T*,  \
                                            T*, const ParallelFor&);
PYMAKEMORE_INSTANTIATE(float)
PYMAKEMORE_INSTANTIATE(double)
#undef PYMAKEMORE_INSTANTIATE
#undef PYMAKEMORE_INSTANTIATE_INDEXED

}  // namespace pymakemore
