// 64-byte vectors through GCC/Clang vector extensions: portable (the compiler lowers them to
// AVX-512, AVX2, SSE or NEON), and, unlike arrays, reliably kept in registers across the
// inner loops of the register-tiled matrix products.
#pragma once

#include <cstdint>
#include <cstring>

namespace pymakemore::simd {

template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(64)));
  static constexpr int64_t lanes = 64 / sizeof(T);
};

template <typename T>
using vec_t = typename Vec<T>::type;

template <typename T>
inline vec_t<T> load(const T* p) {
  vec_t<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline void store(T* p, vec_t<T> v) {
  std::memcpy(p, &v, sizeof(v));
}

template <typename T>
inline vec_t<T> broadcast(T s) {
  return vec_t<T>{} + s;
}

}  // namespace pymakemore::simd
