// tests/cpp/level_internals.cpp at the portable level.
#define PYMAKEMORE_LEVEL_PORTABLE
#include "../level_internals.cpp"
