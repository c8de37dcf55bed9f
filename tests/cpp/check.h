// The C++ tests' checks: each failure printed, all counted (included before any target pragma,
// so these inline functions are compiled for the baseline wherever they are used).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace pymakemore_tests {

inline int failures = 0;

inline void check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

inline std::mt19937& rng() {
  static std::mt19937 generator(1234);
  return generator;
}

inline std::vector<float> randn(size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng());
  return v;
}

}  // namespace pymakemore_tests
