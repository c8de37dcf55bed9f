// kernels/chain_engine.cpp at the avx512 level (csrc/cpu/this_level.h); empty where the build
// has no such level.
#include "cpu_levels.h"
#if PYMAKEMORE_X86_LEVELS
#define PYMAKEMORE_LEVEL_AVX512
#include "kernels/chain_engine.cpp"
#endif
