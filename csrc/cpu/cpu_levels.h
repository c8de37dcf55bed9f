// Which instruction-set levels this build compiles (see CpuLevel in kernels.h): portable
// always; avx2 and avx512 on x86-64 with GCC, whose target pragma compiles them without
// changing the flags of the build (csrc/cpu/this_level.h).
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PYMAKEMORE_X86_LEVELS 1
#else
#define PYMAKEMORE_X86_LEVELS 0
#endif
