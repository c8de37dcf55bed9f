// kernels/cross_entropy.cpp at the portable level (csrc/cpu/this_level.h).
#define PYMAKEMORE_LEVEL_PORTABLE
#include "kernels/cross_entropy.cpp"
