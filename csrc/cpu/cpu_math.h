// exp, tanh and log for the CPU kernels, written once for a float and for a vector of floats
// (GCC/Clang vector extensions, __m512 included): no branches and no library calls, so the
// same code is vectorised at every instruction-set level and gives the same numbers on each
// (one FMA more or less aside). double keeps libm, where accuracy matters more than speed.
#pragma once

#include "this_level.h"

namespace pymakemore::PYMAKEMORE_LEVEL::math {

template <typename V>
constexpr bool kScalar = std::is_floating_point_v<V>;

// The integers of the same width as V's lanes (int32_t for a float), and the bits of each.
template <typename V>
using IntOf = std::conditional_t<kScalar<V>, int32_t, decltype(V{} < V{})>;

template <typename V>
inline IntOf<V> bits_of(V v) {
  IntOf<V> i;
  std::memcpy(&i, &v, sizeof(v));
  return i;
}

template <typename V>
inline V from_bits(IntOf<V> i) {
  V v;
  std::memcpy(&v, &i, sizeof(v));
  return v;
}

// c in every lane (c is never -0, for which 0 + c would not give c)
template <typename V>
inline V splat(float c) {
  return V{} + c;
}

// a where cond holds, else b (lane by lane for vectors)
template <typename V, typename Cond>
inline V select(Cond cond, V a, V b) {
  return cond ? a : b;
}

// exp(x): 2^n * e^r with |r| <= ln2/2 and a degree-6 polynomial fitted (near-minimax, relative
// error 2e-9) on that range. Below -87.3 the result would be subnormal: returns 0. NaN passes.
template <typename V>
inline V exp(V x) {
  const V low = splat<V>(-87.3f), high = splat<V>(88.0f);
  const V xc = select(x < low, low, select(x > high, high, x));  // NaN: both false
  const V round = splat<V>(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const V n = (xc * splat<V>(1.44269504088896341f) + round) - round;
  V r = xc - n * splat<V>(0.693145751953125f);  // ln2 split so that n * hi is exact
  r = r - n * splat<V>(1.42860682030941723e-6f);
  V p = splat<V>(0.001384362237655687f);
  p = p * r + splat<V>(0.008374155711465138f);
  p = p * r + splat<V>(0.04166800265868498f);
  p = p * r + splat<V>(0.16666431257846595f);
  p = p * r + splat<V>(0.4999999420602331f);
  p = p * r + splat<V>(1.0000000321655151f);
  p = p * r + splat<V>(1.0f);
  IntOf<V> e;
  if constexpr (kScalar<V>) {
    e = static_cast<int32_t>(n);
  } else {
    e = __builtin_convertvector(n, IntOf<V>);
  }
  const V scale = from_bits<V>((e + 127) << 23);
  return select(x < low, V{}, p * scale);
}

// tanh(|x|) = a / (a + 2) with a = expm1(2|x|): a Taylor series for |x| < 0.3 (no
// cancellation near 0), exp(2|x|) - 1 above (exp >= 1.8 there, so the subtraction is benign).
// One division for both; x's sign put back at the end.
template <typename V>
inline V tanh(V x) {
  const IntOf<V> sign = bits_of(x) & (IntOf<V>{} + std::numeric_limits<int32_t>::min());
  const V ax = from_bits<V>(bits_of(x) ^ sign);
  const V y = splat<V>(2.0f) * select(ax > splat<V>(20.0f), splat<V>(20.0f), ax);  // tanh(20) is 1
  V series = splat<V>(1.0f / 362880.0f);  // 1/9!
  series = series * y + splat<V>(1.0f / 40320.0f);
  series = series * y + splat<V>(1.0f / 5040.0f);
  series = series * y + splat<V>(1.0f / 720.0f);
  series = series * y + splat<V>(1.0f / 120.0f);
  series = series * y + splat<V>(1.0f / 24.0f);
  series = series * y + splat<V>(1.0f / 6.0f);
  series = series * y + splat<V>(0.5f);
  series = series * y + splat<V>(1.0f);
  series = series * y;
  const V a = select(ax < splat<V>(0.3f), series, exp(y) - splat<V>(1.0f));
  const V t = a / (a + splat<V>(2.0f));  // >= 0, or NaN
  return from_bits<V>(bits_of(t) | sign);
}

// log(x) for finite x > 0 (what a sum of exponentials is): x = 2^e * m, m in [sqrt(1/2),
// sqrt(2)), log m = 2 atanh((m - 1) / (m + 1)) by its series (truncation below 4e-10).
inline float log(float x) {
  int32_t bits = bits_of(x);
  int32_t e = ((bits >> 23) & 0xFF) - 127;
  bits = (bits & 0x007FFFFF) | 0x3F800000;  // mantissa in [1, 2)
  float m = from_bits<float>(bits);
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

inline double exp(double x) { return std::exp(x); }
inline double tanh(double x) { return std::tanh(x); }
inline double log(double x) { return std::log(x); }

}  // namespace pymakemore::PYMAKEMORE_LEVEL::math
