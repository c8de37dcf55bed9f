// exp and tanh written without branches or library calls, so the compiler vectorises the
// loops that use them (libm's expf/tanhf are scalar calls that block vectorisation).
// float uses these; double keeps libm, where accuracy matters more than speed.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace pymakemore::vec {

// exp(x) for x <= 88: 2^n * e^r with |r| <= ln2/2 and a degree-7 Taylor polynomial
// (truncation 5e-9 relative). Below -87.3 the result would be subnormal: returns 0.
inline float exp_f32(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693145751953125f;  // ln2 split so n * kLn2Hi is exact
  constexpr float kLn2Lo = 1.42860682030941723e-6f;
  constexpr float kRound = 12582912.0f;         // 1.5 * 2^23: adding it rounds to an integer
  constexpr float kLow = -87.3f;
  const float xc = x < kLow ? kLow : (x > 88.0f ? 88.0f : x);  // NaN passes through
  const float n = (xc * kLog2e + kRound) - kRound;
  float r = xc - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < kLow ? 0.0f : p * scale;
}

// tanh(x): e / (e + 2) with e = expm1(2|x|) by Taylor series for |x| < 0.625 (no cancellation
// near 0), else 1 - 2 / (exp(2|x|) + 1); sign restored at the end.
inline float tanh_f32(float x) {
  const float a = std::fabs(x);
  const float y = 2.0f * a;
  float em1 = 1.0f / 6227020800.0f;  // 1/13!
  em1 = em1 * y + 1.0f / 479001600.0f;
  em1 = em1 * y + 1.0f / 39916800.0f;
  em1 = em1 * y + 1.0f / 3628800.0f;
  em1 = em1 * y + 1.0f / 362880.0f;
  em1 = em1 * y + 1.0f / 40320.0f;
  em1 = em1 * y + 1.0f / 5040.0f;
  em1 = em1 * y + 1.0f / 720.0f;
  em1 = em1 * y + 1.0f / 120.0f;
  em1 = em1 * y + 1.0f / 24.0f;
  em1 = em1 * y + 1.0f / 6.0f;
  em1 = em1 * y + 0.5f;
  em1 = em1 * y + 1.0f;
  em1 = em1 * y;
  const float small = em1 / (em1 + 2.0f);
  const float e = exp_f32(y > 40.0f ? 40.0f : y);  // tanh(20) rounds to 1 in float
  const float large = 1.0f - 2.0f / (e + 1.0f);
  return std::copysign(a < 0.625f ? small : large, x);
}

inline float exp(float x) { return exp_f32(x); }
inline double exp(double x) { return std::exp(x); }
inline float tanh(float x) { return tanh_f32(x); }
inline double tanh(double x) { return std::tanh(x); }

}  // namespace pymakemore::vec
