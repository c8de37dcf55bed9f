// The instruction-set level that this translation unit compiles the kernels for. The files
// csrc/cpu/levels/<level>/*.cpp define PYMAKEMORE_LEVEL_<LEVEL> and include one kernel file
// (csrc/cpu/kernels/), which includes this header first; with no level defined (the C++
// tests) it is the portable one.
//
// Every standard header the kernels use, and kernels.h, are included here, before the target
// pragma: their inline functions and template instantiations are compiled for the baseline in
// every translation unit, so whichever copy the linker keeps runs on any CPU. Everything after
// the pragma is in namespace pymakemore::<level> (PYMAKEMORE_LEVEL), whose names no other level
// shares. Level-specific code tests PYMAKEMORE_AVX512 and PYMAKEMORE_VECTOR_BYTES, never the
// compiler's __AVX512F__ (a target pragma does not set it).
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <new>
#include <thread>
#include <type_traits>
#include <vector>

#include "cpu_levels.h"
#include "pymakemore/kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

// A kernel file reaches the compiler through its level's file, so GCC takes it for a header and
// flags its anonymous-namespace types in lambdas (harmless: one translation unit each); and it
// notes that vectors wider than the baseline's change the calling convention, which matters
// only across translation units of different levels, where no vector is ever passed.
#pragma GCC diagnostic ignored "-Wsubobject-linkage"
#pragma GCC diagnostic ignored "-Wpsabi"

#if PYMAKEMORE_X86_LEVELS && defined(PYMAKEMORE_LEVEL_AVX512)
#define PYMAKEMORE_LEVEL avx512
#define PYMAKEMORE_AVX512 1
#define PYMAKEMORE_VECTOR_BYTES 64
#define PYMAKEMORE_VECTOR_REGISTERS 32
#pragma GCC target("arch=x86-64-v4")
#elif PYMAKEMORE_X86_LEVELS && defined(PYMAKEMORE_LEVEL_AVX2)
#define PYMAKEMORE_LEVEL avx2
#define PYMAKEMORE_AVX512 0
#define PYMAKEMORE_VECTOR_BYTES 32
#define PYMAKEMORE_VECTOR_REGISTERS 16
#pragma GCC target("arch=x86-64-v3")
#else
#define PYMAKEMORE_LEVEL portable
#define PYMAKEMORE_AVX512 0
#define PYMAKEMORE_VECTOR_BYTES 16  // SSE2 on x86-64, NEON on aarch64
#if defined(__aarch64__)
#define PYMAKEMORE_VECTOR_REGISTERS 32
#else
#define PYMAKEMORE_VECTOR_REGISTERS 16
#endif
#endif

// This level's kernels, declared from their one signature (kernel_functions.inc): a kernel
// file's definition that differs from it fails to compile at its instantiation.
namespace pymakemore::PYMAKEMORE_LEVEL {
#include "pymakemore/kernel_declarations.inc"
}  // namespace pymakemore::PYMAKEMORE_LEVEL
