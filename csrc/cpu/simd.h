// Vectors of the level's width (64 bytes at avx512, 32 at avx2, 16 at portable) through
// GCC/Clang vector extensions: the compiler lowers them to that level's registers, and, unlike
// arrays, keeps them in registers across the inner loops of the register-tiled products.
#pragma once

#include "cpu_math.h"
#include "this_level.h"

namespace pymakemore::PYMAKEMORE_LEVEL::simd {

constexpr int64_t kBytes = PYMAKEMORE_VECTOR_BYTES;

template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(kBytes)));
  static constexpr int64_t lanes = kBytes / sizeof(T);
};

template <typename T>
using vec_t = typename Vec<T>::type;

// Register tiles of the matrix products: rows x vectors accumulators, with a broadcast and a
// tile row's vectors beside them, fit the level's registers (8 x 2 + 3 of avx512's 32; 4 x 2
// + 3 elsewhere). Rows must divide a vector's floats: the MLP engine pads its sizes to whole
// vectors and takes them kTileRows at a time.
constexpr int64_t kTileRows = PYMAKEMORE_VECTOR_REGISTERS >= 32 && kBytes >= 32 ? 8 : 4;
constexpr int64_t kTileVecs = 2;

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
  typedef Index lanes_t __attribute__((vector_size(kBytes)));
  return __builtin_shuffle(vec_t<T>{s}, lanes_t{});
#endif
}

// exp and tanh of every lane (cpu_math.h; double lane by lane through libm)
template <typename T>
inline vec_t<T> exp(vec_t<T> v) {
  if constexpr (std::is_same_v<T, float>) {
    return math::exp(v);
  } else {
    for (int64_t i = 0; i < Vec<T>::lanes; ++i) v[i] = std::exp(v[i]);
    return v;
  }
}

template <typename T>
inline vec_t<T> tanh(vec_t<T> v) {
  if constexpr (std::is_same_v<T, float>) {
    return math::tanh(v);
  } else {
    for (int64_t i = 0; i < Vec<T>::lanes; ++i) v[i] = std::tanh(v[i]);
    return v;
  }
}

}  // namespace pymakemore::PYMAKEMORE_LEVEL::simd
