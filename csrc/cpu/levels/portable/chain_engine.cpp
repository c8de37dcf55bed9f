// kernels/chain_engine.cpp at the portable level (csrc/cpu/this_level.h).
#define PYMAKEMORE_LEVEL_PORTABLE
#include "kernels/chain_engine.cpp"
