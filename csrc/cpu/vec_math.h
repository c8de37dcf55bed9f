// exp and tanh written without branches or library calls, so the compiler vectorises the
// loops that use them (libm's expf/tanhf are scalar calls that block vectorisation).
// float uses these; double keeps libm, where accuracy matters more than speed.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace pymakemore::vec {

// exp(x) for x <= 88: 2^n * e^r with |r| <= ln2/2 and a degree-6 polynomial fitted
// (near-minimax, relative error 2e-9) on that range. Below -87.3 the result would be
// subnormal: returns 0.
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
  float p = 0.001384362237655687f;
  p = p * r + 0.008374155711465138f;
  p = p * r + 0.04166800265868498f;
  p = p * r + 0.16666431257846595f;
  p = p * r + 0.4999999420602331f;
  p = p * r + 1.0000000321655151f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < kLow ? 0.0f : p * scale;
}

// tanh(|x|) = a / (a + 2) with a = expm1(2|x|): a Taylor series for |x| < 0.3 (no
// cancellation near 0), exp(2|x|) - 1 above (exp >= 1.8 there, so the subtraction is
// benign). One division for both; sign restored at the end.
inline float tanh_f32(float x) {
  const float ax = std::fabs(x);
  const float y = 2.0f * (ax > 20.0f ? 20.0f : ax);  // tanh(20) rounds to 1 in float
  float series = 1.0f / 362880.0f;  // 1/9!
  series = series * y + 1.0f / 40320.0f;
  series = series * y + 1.0f / 5040.0f;
  series = series * y + 1.0f / 720.0f;
  series = series * y + 1.0f / 120.0f;
  series = series * y + 1.0f / 24.0f;
  series = series * y + 1.0f / 6.0f;
  series = series * y + 0.5f;
  series = series * y + 1.0f;
  series = series * y;
  const float a = ax < 0.3f ? series : exp_f32(y) - 1.0f;
  return std::copysign(a / (a + 2.0f), x);
}

// log(x) for finite x > 0 (what a sum of exponentials is): x = 2^e * m, m in [sqrt(1/2),
// sqrt(2)), log m = 2 atanh((m - 1) / (m + 1)) by its series (truncation below 4e-10).
inline float log_f32(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  int32_t e = ((bits >> 23) & 0xFF) - 127;
  bits = (bits & 0x007FFFFF) | 0x3F800000;  // mantissa in [1, 2)
  float m;
  std::memcpy(&m, &bits, sizeof(m));
  if (m > 1.41421356f) {
    m *= 0.5f;
    e += 1;
  }
  const float t = (m - 1.0f) / (m + 1.0f);
  const float t2 = t * t;
  float p = 1.0f / 11.0f;
  p = p * t2 + 1.0f / 9.0f;
  p = p * t2 + 1.0f / 7.0f;
  p = p * t2 + 1.0f / 5.0f;
  p = p * t2 + 1.0f / 3.0f;
  p = p * t2 + 1.0f;
  return static_cast<float>(e) * 0.693147180559945309f + 2.0f * t * p;
}

inline float exp(float x) { return exp_f32(x); }
inline double exp(double x) { return std::exp(x); }
inline float tanh(float x) { return tanh_f32(x); }
inline double tanh(double x) { return std::tanh(x); }
inline float log(float x) { return log_f32(x); }
inline double log(double x) { return std::log(x); }

}  // namespace pymakemore::vec
