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
#include "pymakemore/kernel_declarations.inc"
}  // namespace portable
#if PYMAKEMORE_X86_LEVELS
namespace avx2 {
#include "pymakemore/kernel_declarations.inc"
}  // namespace avx2
namespace avx512 {
#include "pymakemore/kernel_declarations.inc"
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

// Each entry point: the same call at the active level.
#define PYMAKEMORE_KERNEL_TI(Return, name, params, args) \
  template <typename T, typename Index>                  \
  Return name params {                                   \
    PYMAKEMORE_DISPATCH(name<T, Index> args)             \
  }
#define PYMAKEMORE_KERNEL_T(Return, name, params, args) \
  template <typename T>                                 \
  Return name params {                                  \
    PYMAKEMORE_DISPATCH(name<T> args)                   \
  }
#define PYMAKEMORE_KERNEL(Return, name, params, args) \
  Return name params { PYMAKEMORE_DISPATCH(name args) }
#include "pymakemore/kernel_functions.inc"
#undef PYMAKEMORE_KERNEL_TI
#undef PYMAKEMORE_KERNEL_T
#undef PYMAKEMORE_KERNEL
#undef PYMAKEMORE_DISPATCH

// ... and each template entry point instantiated for every type the ops use.
#define PYMAKEMORE_KERNEL_TI(Return, name, params, args) PYMAKEMORE_INSTANTIATE_TI(name)
#define PYMAKEMORE_KERNEL_T(Return, name, params, args) PYMAKEMORE_INSTANTIATE_T(name)
#define PYMAKEMORE_KERNEL(Return, name, params, args)
#include "pymakemore/kernel_functions.inc"
#undef PYMAKEMORE_KERNEL_TI
#undef PYMAKEMORE_KERNEL_T
#undef PYMAKEMORE_KERNEL

}  // namespace pymakemore
