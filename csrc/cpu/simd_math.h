// exp and tanh of a whole simd vector: AVX-512 intrinsics where the build has them, otherwise
// vec_math.h's branch-free scalar code lane by lane (which the compiler vectorises).
#pragma once

#include "simd.h"
#include "vec_math.h"
#if defined(__AVX512F__)
#include "avx512_math.h"
#endif

namespace pymakemore::simd {

// f applied to each lane
template <typename T, typename F>
inline vec_t<T> lanewise(vec_t<T> v, F f) {
  alignas(64) T lanes[Vec<T>::lanes];
  store(lanes, v);
  for (T& e : lanes) e = f(e);
  return load(lanes);
}

template <typename T>
inline vec_t<T> tanh(vec_t<T> v) {
  return lanewise<T>(v, [](T e) { return vec::tanh(e); });
}

template <typename T>
inline vec_t<T> exp(vec_t<T> v) {
  return lanewise<T>(v, [](T e) { return vec::exp(e); });
}

#if defined(__AVX512F__)
template <>
inline vec_t<float> tanh<float>(vec_t<float> v) {
  return static_cast<vec_t<float>>(avx512::tanh(static_cast<__m512>(v)));
}

template <>
inline vec_t<float> exp<float>(vec_t<float> v) {
  return static_cast<vec_t<float>>(avx512::exp(static_cast<__m512>(v)));
}
#endif

}  // namespace pymakemore::simd
