// Checks of one instruction-set level's internals (exp/tanh/log for floats and for vectors,
// the cross-entropy row primitives) against double precision; compiled once per level by
// tests/cpp/levels/<level>.cpp, as the kernels are.
#include "check.h"  // first: before this_level.h's target pragma

#include "this_level.h"

#include "cpu_math.h"
#include "row_ops.h"
#include "simd.h"

#define PYMAKEMORE_STRING_OF(x) #x
#define PYMAKEMORE_NAME_OF(x) PYMAKEMORE_STRING_OF(x)

namespace pymakemore::PYMAKEMORE_LEVEL::tests {
namespace {

using pymakemore_tests::check;
using pymakemore_tests::randn;

const std::string kLevel = PYMAKEMORE_NAME_OF(PYMAKEMORE_LEVEL);

// exp and tanh, of a float and of every lane of a vector, within 4 ulp over their range
void check_math() {
  using V = simd::vec_t<float>;
  constexpr int64_t L = simd::Vec<float>::lanes;
  double worst[4] = {};  // tanh, exp, vector tanh, vector exp
  for (int i = -2000000; i <= 2000000; i += L) {
    alignas(64) float x[L], e[L], vt[L], ve[L];
    for (int64_t l = 0; l < L; ++l) {
      x[l] = (i + l) * 1e-5f;
      e[l] = x[l] * 4.0f;  // exp over [-80, 80]
    }
    simd::store(vt, math::tanh(simd::load(x)));
    simd::store(ve, math::exp(simd::load(e)));
    for (int64_t l = 0; l < L; ++l) {
      const double t = std::tanh(double(x[l])), ee = std::exp(double(e[l]));
      if (t != 0.0) {
        worst[0] = std::max(worst[0], std::fabs(math::tanh(x[l]) - t) / std::fabs(t));
        worst[2] = std::max(worst[2], std::fabs(vt[l] - t) / std::fabs(t));
      }
      worst[1] = std::max(worst[1], std::fabs(math::exp(e[l]) - ee) / ee);
      worst[3] = std::max(worst[3], std::fabs(ve[l] - ee) / ee);
    }
  }
  const char* names[4] = {"tanh", "exp", "vector tanh", "vector exp"};
  for (int k = 0; k < 4; ++k)
    check(worst[k] < 4 * 1.2e-7,
          kLevel + ": " + names[k] + " within 4 ulp: " + std::to_string(worst[k]));
  const float special[8] = {NAN, INFINITY, -INFINITY, 0.0f, 1e-30f, -1e-30f, 25.0f, -25.0f};
  const float want[8] = {NAN, 1.0f, -1.0f, 0.0f, 1e-30f, -1e-30f, 1.0f, -1.0f};
  alignas(64) float lanes[L];
  for (int k = 0; k < 8; ++k) {
    std::fill(lanes, lanes + L, special[k]);
    simd::store(lanes, math::tanh(simd::load(lanes)));
    const float s = math::tanh(special[k]);
    const bool ok = std::isnan(want[k]) ? std::isnan(s) && std::isnan(lanes[0])
                                        : s == want[k] && lanes[0] == want[k];
    check(ok, kLevel + ": tanh(" + std::to_string(special[k]) + ")");
  }
  check(math::exp(-INFINITY) == 0.0f && math::exp(-200.0f) == 0.0f, kLevel + ": exp(-inf) = 0");
  check(std::isnan(math::exp(NAN)), kLevel + ": exp(NaN) is NaN");
  check(std::signbit(math::tanh(-0.0f)), kLevel + ": tanh(-0) = -0");
  double worst_log = 0.0;
  for (float v = 1.0f; v < 60000.0f; v *= 1.01f)
    worst_log = std::max(worst_log, std::fabs(math::log(v) - std::log(double(v))));
  check(worst_log < 1e-6, kLevel + ": log within 1e-6: " + std::to_string(worst_log));
}

// The per-row primitives (the AVX-512 versions at that level) against double.
void check_row_ops() {
  // 257: one term past a block of the sums; 50304: GPT-2's vocabulary, where one float chain
  // over the row would drift ~1e-4
  for (const int64_t c : {1, 15, 16, 17, 27, 33, 257, 1000, 50304}) {
    auto x = randn(16 * c, 4.0f);
    float m[16], s[16];
    rows::max_and_sum_exp(x.data(), 16, c, m, s);
    double worst = 0.0;
    for (int64_t r = 0; r < 16; ++r) {
      double mm = -INFINITY, ss = 0.0;
      for (int64_t j = 0; j < c; ++j) mm = std::max(mm, double(x[r * c + j]));
      for (int64_t j = 0; j < c; ++j) ss += std::exp(x[r * c + j] - mm);
      check(m[r] == float(mm), kLevel + ": row max c=" + std::to_string(c));
      check(rows::max(x.data() + r * c, c) == float(mm),
            kLevel + ": rows::max c=" + std::to_string(c));
      worst = std::max(worst, std::fabs(s[r] - ss) / ss);
      const double s1 = rows::sum_exp(x.data() + r * c, c, m[r]);
      worst = std::max(worst, std::fabs(s1 - ss) / ss);
      std::vector<float> g(c);
      rows::softmax_grad<float>(x.data() + r * c, c, m[r], 0.0f, 2.0f, 0.5f, nullptr, g.data());
      for (int64_t j = 0; j < c; ++j) {
        const double want = 2.0 * std::exp(double(x[r * c + j]) - m[r]) - 0.5;
        worst = std::max(worst, std::fabs(g[j] - want) / std::max(1.0, std::fabs(want)));
      }
    }
    check(worst < 2e-6, kLevel + ": row sums and gradients c=" + std::to_string(c) + ": " +
                            std::to_string(worst));
  }
  // -inf entries contribute exactly 0; a NaN makes the sum NaN
  std::vector<float> x = {-INFINITY, 0.0f, 1.0f, -INFINITY, -200.0f};
  check(std::fabs(rows::sum_exp(x.data(), 5, 1.0f) - (1.0f + std::exp(-1.0f))) < 1e-6f,
        kLevel + ": exp(-inf) adds nothing");
  std::vector<float> g(5);
  rows::softmax_grad<float>(x.data(), 5, 1.0f, 0.0f, 1.0f, 0.0f, nullptr, g.data());
  check(g[0] == 0.0f && g[3] == 0.0f && g[4] == 0.0f,
        kLevel + ": gradient of a -inf logit is exactly 0");
  x[2] = NAN;
  check(std::isnan(rows::sum_exp(x.data(), 5, 0.0f)), kLevel + ": NaN reaches the sum");
  // long rows: -inf is no NaN, a NaN anywhere (vector part or rest) is
  for (const int64_t at : {3, 290}) {
    std::vector<float> row(300, 0.5f);
    row[7] = -INFINITY;
    row[150] = 2.0f;
    check(rows::max(row.data(), 300) == 2.0f, kLevel + ": max of a row with -inf");
    row[at] = NAN;
    check(std::isnan(rows::max(row.data(), 300)),
          kLevel + ": NaN at " + std::to_string(at) + " makes the max NaN");
  }
}

}  // namespace

void check_internals() {
  check_math();
  check_row_ops();
}

}  // namespace pymakemore::PYMAKEMORE_LEVEL::tests
