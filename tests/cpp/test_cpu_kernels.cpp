// Unit tests of the torch-free CPU kernels against naive double-precision loops, plus
// determinism across thread counts. Run by ctest; prints each failure and exits non-zero.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "pymakemore/kernels.h"
#include "avx512_math.h"
#include "row_ops.h"
#include "vec_math.h"

using namespace pymakemore;

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

template <typename A, typename B>
void check_close(const std::vector<A>& got, const std::vector<B>& want, double tol,
                 const std::string& what) {
  if (got.size() != want.size()) return check(false, what + ": size mismatch");
  double worst = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = static_cast<double>(got[i]), w = static_cast<double>(want[i]);
    const double err = std::fabs(g - w) / std::max(1.0, std::fabs(w));
    if (!(err <= tol) && !(std::isnan(g) && std::isnan(w))) worst = std::max(worst, err);
    if (std::isnan(err) && !(std::isnan(g) && std::isnan(w))) worst = INFINITY;
  }
  check(worst <= tol, what + ": max error " + std::to_string(worst));
}

// A ParallelFor on std::thread with a given thread count, to prove results do not depend on it.
ParallelFor threads_for(int threads) {
  return [threads](int64_t n, int64_t grain, const RangeFn& fn) {
    if (n <= 0) return;
    const int64_t pieces = std::min<int64_t>(threads, std::max<int64_t>(1, n / std::max<int64_t>(grain, 1)));
    const int64_t step = (n + pieces - 1) / pieces;
    std::vector<std::thread> pool;
    for (int64_t b = 0; b < n; b += step) pool.emplace_back(fn, b, std::min(n, b + step));
    for (auto& t : pool) t.join();
  };
}

std::mt19937 rng(1234);

std::vector<float> randn(size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

std::vector<int64_t> randint(size_t n, int64_t hi) {
  std::uniform_int_distribution<int64_t> d(0, hi - 1);
  std::vector<int64_t> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

void test_vec_math() {
  double worst_tanh = 0.0, worst_exp = 0.0;
  for (int i = -2000000; i <= 2000000; ++i) {
    const float x = i * 1e-5f;
    const double t = std::tanh(static_cast<double>(x));
    if (t != 0.0)
      worst_tanh = std::max(worst_tanh, std::fabs(vec::tanh_f32(x) - t) / std::fabs(t));
    const float e = x * 4.0f;  // exp over [-80, 80]
    const double ee = std::exp(static_cast<double>(e));
    worst_exp = std::max(worst_exp, std::fabs(vec::exp_f32(e) - ee) / ee);
  }
  check(worst_tanh < 4 * 1.2e-7, "tanh_f32 within 4 ulp: " + std::to_string(worst_tanh));
  check(worst_exp < 4 * 1.2e-7, "exp_f32 within 4 ulp: " + std::to_string(worst_exp));
  check(vec::exp_f32(-INFINITY) == 0.0f && vec::exp_f32(-200.0f) == 0.0f, "exp(-inf) = 0");
  check(std::isnan(vec::exp_f32(NAN)) && std::isnan(vec::tanh_f32(NAN)), "NaN propagates");
  check(vec::tanh_f32(INFINITY) == 1.0f && vec::tanh_f32(-INFINITY) == -1.0f, "tanh(+-inf)");
  check(vec::tanh_f32(1e-30f) == 1e-30f, "tanh of a tiny value is itself");
#if defined(__AVX512F__)
  double worst_avx = 0.0, worst_avx_exp = 0.0;
  for (int i = -2000000; i <= 2000000; i += 16) {
    alignas(64) float in[16], out[16], out_exp[16];
    for (int l = 0; l < 16; ++l) in[l] = (i + l) * 1e-5f;
    _mm512_store_ps(out, avx512::tanh(_mm512_load_ps(in)));
    for (int l = 0; l < 16; ++l) in[l] *= 4.0f;
    _mm512_store_ps(out_exp, avx512::exp(_mm512_load_ps(in)));
    for (int l = 0; l < 16; ++l) {
      const double x = in[l] / 4.0f, t = std::tanh(x), e = std::exp(double(in[l]));
      if (t != 0.0) worst_avx = std::max(worst_avx, std::fabs(out[l] - t) / std::fabs(t));
      worst_avx_exp = std::max(worst_avx_exp, std::fabs(out_exp[l] - e) / e);
    }
  }
  check(worst_avx < 4 * 1.2e-7, "avx512 tanh within 4 ulp: " + std::to_string(worst_avx));
  check(worst_avx_exp < 4 * 1.2e-7, "avx512 exp within 4 ulp: " + std::to_string(worst_avx_exp));
  alignas(64) float special[16] = {NAN, INFINITY, -INFINITY, 0.0f, 1e-30f, -1e-30f, 25.0f, -25.0f};
  _mm512_store_ps(special, avx512::tanh(_mm512_load_ps(special)));
  check(std::isnan(special[0]) && special[1] == 1.0f && special[2] == -1.0f && special[3] == 0.0f &&
            special[4] == 1e-30f && special[5] == -1e-30f && special[6] == 1.0f &&
            special[7] == -1.0f,
        "avx512 tanh special values");
#endif
}

// The per-row primitives (the AVX-512 versions where the build has AVX-512) against double.
void test_row_ops() {
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
      check(m[r] == float(mm), "row max c=" + std::to_string(c));
      check(rows::max(x.data() + r * c, c) == float(mm), "rows::max c=" + std::to_string(c));
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
    check(worst < 2e-6, "row sums and gradients c=" + std::to_string(c) + ": " +
                            std::to_string(worst));
  }
  // -inf entries contribute exactly 0; a NaN makes the sum NaN
  std::vector<float> x = {-INFINITY, 0.0f, 1.0f, -INFINITY, -200.0f};
  check(std::fabs(rows::sum_exp(x.data(), 5, 1.0f) - (1.0f + std::exp(-1.0f))) < 1e-6f,
        "exp(-inf) adds nothing");
  std::vector<float> g(5);
  rows::softmax_grad<float>(x.data(), 5, 1.0f, 0.0f, 1.0f, 0.0f, nullptr, g.data());
  check(g[0] == 0.0f && g[3] == 0.0f && g[4] == 0.0f, "gradient of a -inf logit is exactly 0");
  x[2] = NAN;
  check(std::isnan(rows::sum_exp(x.data(), 5, 0.0f)), "NaN reaches the sum");
}

void test_embedding() {
  for (const auto& [rows, dim, n] : {std::tuple<int64_t, int64_t, int64_t>{27, 10, 30000},
                                    {5000, 20, 7000}, {1, 1, 1}, {3, 4, 0}}) {
    const auto weight = randn(rows * dim);
    auto idx = randint(n, rows);
    std::vector<float> out(n * dim);
    check(embedding_forward<float, int64_t>(idx.data(), n, weight.data(), rows, dim, out.data(),
                                            serial_for) == kAllValid, "embedding valid");
    std::vector<float> want(n * dim);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t d = 0; d < dim; ++d) want[i * dim + d] = weight[idx[i] * dim + d];
    check(out == want, "embedding forward is an exact gather");

    const auto grad = randn(n * dim);
    for (const int64_t pad : {int64_t(-1), int64_t(0)}) {
      for (const bool scale : {false, true}) {
        std::vector<double> ref(rows * dim, 0.0);
        std::vector<int64_t> count(rows, 0);
        for (int64_t i = 0; i < n; ++i) ++count[idx[i]];
        for (int64_t i = 0; i < n; ++i) {
          if (idx[i] == pad) continue;
          for (int64_t d = 0; d < dim; ++d)
            ref[idx[i] * dim + d] += grad[i * dim + d] / (scale ? count[idx[i]] : 1);
        }
        std::vector<float> gw(rows * dim, -1.0f), gw2(rows * dim, -2.0f);
        embedding_backward<float, int64_t>(grad.data(), idx.data(), n, rows, dim, pad, scale,
                                           gw.data(), serial_for);
        embedding_backward<float, int64_t>(grad.data(), idx.data(), n, rows, dim, pad, scale,
                                           gw2.data(), threads_for(3));
        const std::string tag = " rows=" + std::to_string(rows) + " pad=" + std::to_string(pad) +
                                " scale=" + std::to_string(scale);
        check_close(gw, ref, 1e-4, "embedding backward" + tag);
        check(gw == gw2, "embedding backward identical across thread counts" + tag);
      }
    }
  }
  std::vector<int32_t> idx = {0, 3, 7, -1, 9};
  std::vector<float> weight(7 * 2, 1.0f), out(5 * 2);
  check(embedding_forward<float, int32_t>(idx.data(), 5, weight.data(), 7, 2, out.data(),
                                          threads_for(2)) == 2,
        "embedding reports the first out-of-range position");
  std::vector<float> grad(5 * 2, 1.0f), gw(7 * 2);
  check(embedding_backward<float, int32_t>(grad.data(), idx.data(), 5, 7, 2, -1, false,
                                           gw.data(), serial_for) == 2,
        "embedding backward reports the first out-of-range position");
}

void test_linear() {
  for (const Activation act : {Activation::Identity, Activation::Tanh}) {
    const bool tanh_act = act == Activation::Tanh;
    for (const auto& [n, k, h] : {std::tuple<int64_t, int64_t, int64_t>{32, 30, 200},
                                 {32, 200, 27}, {1, 1, 1}, {257, 129, 65}, {5, 0, 3},
                                 {3000, 30, 27}}) {
      const auto x = randn(n * k), w = randn(h * k, 0.2f), b = randn(h), gy = randn(n * h);
      std::vector<float> y(n * h);
      linear_forward<float>(x.data(), w.data(), b.data(), n, k, h, act, y.data(), serial_for);
      std::vector<double> ref(n * h);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < h; ++j) {
          double z = b[j];
          for (int64_t q = 0; q < k; ++q) z += double(x[i * k + q]) * w[j * k + q];
          ref[i * h + j] = tanh_act ? std::tanh(z) : z;
        }
      const std::string tag = std::string(tanh_act ? " tanh " : " identity ") +
                              std::to_string(n) + "x" + std::to_string(k) + "->" +
                              std::to_string(h);
      check_close(y, ref, 2e-6 * (tanh_act ? 1.0 : std::sqrt(double(k + 1))),
                  "linear forward" + tag);

      std::vector<double> gx_ref(n * k, 0.0), gw_ref(h * k, 0.0), gb_ref(h, 0.0);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < h; ++j) {
          const double g = gy[i * h + j];
          const double gz = tanh_act ? g * (1.0 - double(y[i * h + j]) * y[i * h + j]) : g;
          gb_ref[j] += gz;
          for (int64_t q = 0; q < k; ++q) {
            gx_ref[i * k + q] += gz * w[j * k + q];
            gw_ref[j * k + q] += gz * x[i * k + q];
          }
        }
      // identity must not read y: pass none
      const float* saved = tanh_act ? y.data() : nullptr;
      std::vector<float> gx(n * k), gw(h * k), gb(h), gw2(h * k), gb2(h);
      linear_backward<float>(gy.data(), saved, x.data(), w.data(), n, k, h, act, gx.data(),
                             gw.data(), gb.data(), serial_for);
      linear_backward<float>(gy.data(), saved, x.data(), w.data(), n, k, h, act, nullptr,
                             gw2.data(), gb2.data(), threads_for(4));
      const double sum_tol = 2e-6 * std::sqrt(double(std::max<int64_t>(n, 1)));
      check_close(gx, gx_ref, 2e-5 * std::sqrt(double(std::max<int64_t>(h, 1)) / 30.0),
                  "linear grad_x" + tag);
      check_close(gw, gw_ref, sum_tol * 10, "linear grad_w" + tag);
      check_close(gb, gb_ref, sum_tol * 10, "linear grad_b" + tag);
      check(gw == gw2 && gb == gb2, "linear backward identical across threads" + tag);
    }
  }
}

void test_cross_entropy() {
  for (const auto& [n, c] : {std::pair<int64_t, int64_t>{64, 27}, {3, 50257}, {5, 1}, {0, 4}}) {
    for (const Reduction red : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
      for (const double eps : {0.0, 0.1}) {
        for (const bool weighted : {false, true}) {
          const auto x = randn(n * c, 3.0f);
          auto t = randint(n, c);
          if (n > 2) t[1] = -100;
          std::vector<float> w(c);
          for (auto& v : w) v = 0.5f + std::uniform_real_distribution<float>(0, 1)(rng);
          const float* wp = weighted ? w.data() : nullptr;
          CrossEntropyOptions opt{red, -100, eps};
          std::vector<float> loss(red == Reduction::None ? n : 1);
          std::vector<double> lse(n);
          check(cross_entropy_forward<float, int64_t>(x.data(), t.data(), wp, n, c, opt,
                                                      loss.data(), lse.data(), nullptr,
                                                      threads_for(2)) ==
                    kAllValid,
                "cross entropy valid");
          // naive loss and gradient in double
          std::vector<double> rows(n, 0.0), grad_ref(n * c, 0.0);
          double total = 0.0, divisor = 0.0, wsum = 0.0;
          for (int64_t j = 0; j < c; ++j) wsum += weighted ? w[j] : 1.0;
          const std::vector<float> g_none = randn(n);
          for (int64_t i = 0; i < n; ++i) {
            if (t[i] == -100) continue;
            double m = -INFINITY, s = 0.0;
            for (int64_t j = 0; j < c; ++j) m = std::max(m, double(x[i * c + j]));
            for (int64_t j = 0; j < c; ++j) s += std::exp(x[i * c + j] - m);
            const double l = m + std::log(s);
            const double wt = weighted ? w[t[i]] : 1.0;
            double smooth = 0.0;
            for (int64_t j = 0; j < c; ++j) smooth += (weighted ? w[j] : 1.0) * (l - x[i * c + j]);
            rows[i] = (1 - eps) * wt * (l - x[i * c + t[i]]) + eps / c * smooth;
            total += rows[i];
            divisor += wt;
          }
          std::vector<double> want;
          if (red == Reduction::None)
            want = rows;
          else
            want = {red == Reduction::Mean ? total / divisor : total};
          const std::string tag = " n=" + std::to_string(n) + " c=" + std::to_string(c) +
                                  " red=" + std::to_string(int(red)) + " eps=" +
                                  std::to_string(eps) + " w=" + std::to_string(weighted);
          check_close(loss, want, 1e-5, "cross entropy loss" + tag);

          const std::vector<float> g_one = {1.5f};
          const float* g = red == Reduction::None ? g_none.data() : g_one.data();
          for (int64_t i = 0; i < n; ++i) {
            if (t[i] == -100) continue;
            const double scale = red == Reduction::None ? g[i]
                                 : red == Reduction::Mean ? g[0] / divisor : g[0];
            const double wt = weighted ? w[t[i]] : 1.0;
            for (int64_t j = 0; j < c; ++j) {
              const double p = std::exp(x[i * c + j] - lse[i]);
              const double wj = weighted ? w[j] : 1.0;
              grad_ref[i * c + j] = scale * ((1 - eps) * wt * (p - (j == t[i])) +
                                             eps / c * (wsum * p - wj));
            }
          }
          std::vector<float> grad(n * c), grad2(n * c);
          cross_entropy_backward<float, int64_t>(g, x.data(), t.data(), wp, lse.data(), n, c,
                                                 opt, grad.data(), serial_for);
          cross_entropy_backward<float, int64_t>(g, x.data(), t.data(), wp, lse.data(), n, c,
                                                 opt, grad2.data(), threads_for(3));
          check_close(grad, grad_ref, 1e-6, "cross entropy grad" + tag);
          check(grad == grad2, "cross entropy grad identical across threads" + tag);
          if (red != Reduction::None) {
            // the forward's own gradient: the backward's numbers for grad_loss = 1
            std::vector<float> fused(n * c, 7.0f), unit_grad(n * c), loss2(1);
            std::vector<double> lse2(n);
            check(cross_entropy_forward<float, int64_t>(x.data(), t.data(), wp, n, c, opt,
                                                        loss2.data(), lse2.data(), fused.data(),
                                                        threads_for(2)) == kAllValid,
                  "cross entropy with gradient valid" + tag);
            const float unit = 1.0f;
            cross_entropy_backward<float, int64_t>(&unit, x.data(), t.data(), wp, lse.data(), n,
                                                   c, opt, unit_grad.data(), serial_for);
            const bool same_loss = loss2 == loss || (std::isnan(loss[0]) && std::isnan(loss2[0]));
            check(same_loss && lse2 == lse && fused == unit_grad,
                  "forward's gradient equals the backward's" + tag);
          }
        }
      }
    }
  }
  // an out-of-range target is reported; an all-ignored mean gives NaN loss, zero gradient
  std::vector<float> x(3 * 4, 0.5f), loss(1), grad(3 * 4, 7.0f);
  std::vector<double> lse(3);
  std::vector<int32_t> bad = {1, 4, -7};
  check(cross_entropy_forward<float, int32_t>(x.data(), bad.data(), nullptr, 3, 4, {}, loss.data(),
                                              lse.data(), nullptr, serial_for) == 1,
        "cross entropy reports the first bad target");
  std::vector<int32_t> ignored = {-100, -100, -100};
  cross_entropy_forward<float, int32_t>(x.data(), ignored.data(), nullptr, 3, 4, {}, loss.data(),
                                        lse.data(), nullptr, serial_for);
  check(std::isnan(loss[0]), "all-ignored mean loss is NaN (as torch)");
  const float one = 1.0f;
  cross_entropy_backward<float, int32_t>(&one, x.data(), ignored.data(), nullptr, lse.data(), 3,
                                         4, {}, grad.data(), serial_for);
  check(std::all_of(grad.begin(), grad.end(), [](float v) { return v == 0.0f; }),
        "all-ignored gradient is zero");
}

// The whole-step engine: the same numbers on one or two threads; it learns a simple rule.
void test_mlp_engine() {
  const int64_t n = 2000, V = 27, T = 3, D = 10, H = 200, B = 32, K = T * D;
  std::vector<int64_t> X(n * T), Y(n);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t t = 0; t < T; ++t) X[i * T + t] = randint(1, V)[0];
    Y[i] = X[i * T + T - 1];  // the next character repeats the last one
  }
  const auto C0 = randn(V * D), W10 = randn(H * K, 0.1f), W20 = randn(V * H, 0.01f);
  const int64_t steps = 300;
  std::vector<float> lrs(steps, 0.1f);
  std::vector<float> results[2];
  for (int threads = 1; threads <= 2; ++threads) {
    std::vector<float> C = C0, W1 = W10, b1(H, 0.0f), W2 = W20, b2(V, 0.0f), losses(steps);
    const int64_t bad = mlp_train_steps({V, T, D, H, B}, {C.data(), W1.data(), b1.data(),
                                        W2.data(), b2.data()}, X.data(), Y.data(), n,
                                        lrs.data(), steps, 0, 7, nullptr, losses.data(), threads);
    check(bad == kAllValid, "engine accepts valid data");
    check(losses.back() < 0.5f * losses.front(),
          "engine learns: " + std::to_string(losses.front()) + " -> " +
              std::to_string(losses.back()));
    results[threads - 1] = losses;
    results[threads - 1].insert(results[threads - 1].end(), W2.begin(), W2.end());
    results[threads - 1].insert(results[threads - 1].end(), C.begin(), C.end());
  }
  check(results[0] == results[1], "engine: identical on one and two threads");
  std::vector<int64_t> bad_x = X;
  bad_x[5] = V;
  std::vector<float> C = C0, W1 = W10, b1(H), W2 = W20, b2(V), losses(1);
  check(mlp_train_steps({V, T, D, H, B}, {C.data(), W1.data(), b1.data(), W2.data(), b2.data()},
                        bad_x.data(), Y.data(), n, lrs.data(), 1, 0, 7, nullptr, losses.data(),
                        1) == 5,
        "engine reports the first bad character id");
}

}  // namespace

int main() {
  test_vec_math();
  test_row_ops();
  test_embedding();
  test_linear();
  test_cross_entropy();
  test_mlp_engine();
  if (failures) {
    std::printf("%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("all CPU kernel checks passed\n");
  return 0;
}
