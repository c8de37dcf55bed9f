// tests/cpp/level_internals.cpp at the avx512 level; empty where the build has no such level.
#include "cpu_levels.h"
#if PYMAKEMORE_X86_LEVELS
#define PYMAKEMORE_LEVEL_AVX512
#include "../level_internals.cpp"
#endif
