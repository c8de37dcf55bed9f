// 64-byte vectors through GCC/Clang vector extensions: portable (the compiler lowers them to
// AVX-512, AVX2, SSE or NEON), and, unlike arrays, reliably kept in registers across the
// inner loops of the register-tiled matrix products.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

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

// Every lane s. Written as a shuffle of lane 0, which compiles to one broadcast (from memory
// where s is loaded); `vec_t<T>{} + s` would keep an add (0 + s is not s for s = -0).
template <typename T>
inline vec_t<T> broadcast(T s) {
#if defined(__clang__)
  return vec_t<T>{} + s;
#else
  using Index = std::conditional_t<sizeof(T) == 8, int64_t, int32_t>;
  typedef Index lanes_t __attribute__((vector_size(64)));
  return __builtin_shuffle(vec_t<T>{s}, lanes_t{});
#endif
}

}  // namespace pymakemore::simd
