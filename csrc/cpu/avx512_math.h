// exp and tanh of sixteen floats with AVX-512 intrinsics: the algorithms of vec_math.h,
// with the scaling by 2^n done by vscalefps (which also produces the subnormals and the
// zeros below the range, so no selects are needed).
#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>

#include <cstdint>

namespace pymakemore::avx512 {

// exp: the range reduction of vec::exp_f32 and a degree-5 polynomial fitted (near-minimax,
// relative error 9.2e-8) on |r| <= ln2/2. Operand order in max/min keeps NaN (vmaxps returns
// its second operand when one is NaN).
inline __m512 exp(__m512 x) {
  const __m512 xc = _mm512_min_ps(_mm512_set1_ps(88.0f), _mm512_max_ps(_mm512_set1_ps(-110.0f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), xc);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723e-6f), r);
  __m512 p = _mm512_set1_ps(0.008290317413424652f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.04189793269765243f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.1666763614684292f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.49999149495122697f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.9999997072099469f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);  // p * 2^n
}

// tanh: vec::tanh_f32's method, a / (a + 2) with a = expm1(2|x|) (series below |x| = 0.3,
// exp - 1 above), one division, sign put back with a bit select.
inline __m512 tanh(__m512 x) {
  const __m512 sign_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x80000000));
  const __m512 ax = _mm512_andnot_ps(sign_mask, x);
  const __m512 y = _mm512_mul_ps(_mm512_set1_ps(2.0f), _mm512_min_ps(_mm512_set1_ps(20.0f), ax));
  __m512 series = _mm512_set1_ps(1.0f / 362880.0f);
  series = _mm512_fmadd_ps(series, y, _mm512_set1_ps(1.0f / 40320.0f));
  series = _mm512_fmadd_ps(series, y, _mm512_set1_ps(1.0f / 5040.0f));
  series = _mm512_fmadd_ps(series, y, _mm512_set1_ps(1.0f / 720.0f));
  series = _mm512_fmadd_ps(series, y, _mm512_set1_ps(1.0f / 120.0f));
  series = _mm512_fmadd_ps(series, y, _mm512_set1_ps(1.0f / 24.0f));
  series = _mm512_fmadd_ps(series, y, _mm512_set1_ps(1.0f / 6.0f));
  series = _mm512_fmadd_ps(series, y, _mm512_set1_ps(0.5f));
  series = _mm512_fmadd_ps(series, y, _mm512_set1_ps(1.0f));
  series = _mm512_mul_ps(series, y);
  const __m512 above = _mm512_sub_ps(exp(y), _mm512_set1_ps(1.0f));
  const __m512 a = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.3f), _CMP_LT_OQ),
                                        above, series);
  const __m512 t = _mm512_div_ps(a, _mm512_add_ps(a, _mm512_set1_ps(2.0f)));
  return _mm512_or_ps(t, _mm512_and_ps(x, sign_mask));  // t >= 0 (or NaN): copy x's sign
}

// lanes [0, left) of a vector, for the last (partial) vector of a row
inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u);
}

}  // namespace pymakemore::avx512
#endif  // __AVX512F__
