// Unit tests of the torch-free CPU kernels against naive double-precision loops, plus
// determinism across thread counts. Run by ctest; prints each failure and exits non-zero.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "cpu_levels.h"
#include "pymakemore/kernels.h"

using namespace pymakemore;
using pymakemore_tests::check;
using pymakemore_tests::failures;
using pymakemore_tests::randn;

// each level's internals (tests/cpp/level_internals.cpp)
namespace pymakemore::portable::tests {
void check_internals();
}
#if PYMAKEMORE_X86_LEVELS
namespace pymakemore::avx2::tests {
void check_internals();
}
namespace pymakemore::avx512::tests {
void check_internals();
}
#endif

namespace {

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

std::vector<int64_t> randint(size_t n, int64_t hi) {
  std::uniform_int_distribution<int64_t> d(0, hi - 1);
  std::vector<int64_t> v(n);
  for (auto& x : v) x = d(pymakemore_tests::rng());
  return v;
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
      // the float sum's rounding grows with sqrt(k + 1) terms; tanh' <= 1 passes it on as is
      check_close(y, ref, 2e-6 * std::sqrt(double(k + 1)), "linear forward" + tag);

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
          for (auto& v : w) v = 0.5f + std::uniform_real_distribution<float>(0, 1)(pymakemore_tests::rng());
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
            // in place: the gradient over the logits themselves, the same numbers
            std::vector<float> in_place = x, loss3(1);
            std::vector<double> lse3(n);
            check(cross_entropy_forward<float, int64_t>(in_place.data(), t.data(), wp, n, c, opt,
                                                        loss3.data(), lse3.data(),
                                                        in_place.data(), threads_for(2)) ==
                      kAllValid,
                  "cross entropy in place valid" + tag);
            const bool same_loss3 =
                loss3 == loss2 || (std::isnan(loss2[0]) && std::isnan(loss3[0]));
            check(same_loss3 && lse3 == lse2 && in_place == fused,
                  "the gradient written over the logits equals the one written beside" + tag);
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
  // ids are checked in the rows the steps draw, before any step runs
  std::vector<int64_t> bad_x = X;
  bad_x[5] = V;  // row 1
  std::vector<int64_t> rows(B, 0);
  rows[3] = 1;
  std::vector<float> C = C0, W1 = W10, b1(H), W2 = W20, b2(V), losses(1);
  check(mlp_train_steps({V, T, D, H, B}, {C.data(), W1.data(), b1.data(), W2.data(), b2.data()},
                        bad_x.data(), Y.data(), n, lrs.data(), 1, 0, 7, rows.data(),
                        losses.data(), 1) == 5 &&
            C == C0,
        "engine reports the first bad character id and trains nothing");
}

// The BatchNorm chain engine (wavenet's shape, smaller): identical on one and two threads, it
// learns a simple rule, and reports a bad id before training.
void test_chain_engine() {
  const int64_t n = 2000, V = 27, T = 4, D = 6, H = 20, B = 32;
  std::vector<int64_t> X(n * T), Y(n);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t t = 0; t < T; ++t) X[i * T + t] = randint(1, V)[0];
    Y[i] = X[i * T + T - 1];
  }
  const auto C0 = randn(V * D), W00 = randn(H * 2 * D, 0.3f), W10 = randn(H * 2 * H, 0.2f),
             Wo0 = randn(V * H, 0.05f);
  const int64_t steps = 300;
  std::vector<float> lrs(steps, 0.1f);
  std::vector<float> results[2];
  for (int threads = 1; threads <= 2; ++threads) {
    std::vector<float> C = C0, W0 = W00, W1 = W10, Wo = Wo0, bo(V, 0.0f), losses(steps);
    std::vector<float> gains(2 * H, 1.0f), shifts(2 * H, 0.0f), means(2 * H, 0.0f),
        vars(2 * H, 1.0f);
    ChainLayer layers[2] = {
        {2, D, H, W0.data(), nullptr, &gains[0], &shifts[0], &means[0], &vars[0]},
        {2, H, H, W1.data(), nullptr, &gains[H], &shifts[H], &means[H], &vars[H]}};
    const ChainShape shape{V, T, D, B, 2, 0.1, 1e-5, true};
    const int64_t bad = chain_train_steps(shape, {C.data(), layers, Wo.data(), bo.data()},
                                          X.data(), Y.data(), n, lrs.data(), steps, 0, 7,
                                          nullptr, nullptr, nullptr, losses.data(), threads);
    check(bad == kAllValid, "chain engine accepts valid data");
    check(losses.back() < 0.5f * losses.front(),
          "chain engine learns: " + std::to_string(losses.front()) + " -> " +
              std::to_string(losses.back()));
    results[threads - 1] = losses;
    for (const auto* v : {&C, &W0, &W1, &Wo, &gains, &means, &vars})
      results[threads - 1].insert(results[threads - 1].end(), v->begin(), v->end());
  }
  check(results[0] == results[1], "chain engine: identical on one and two threads");
  std::vector<int64_t> bad_y = Y;
  bad_y[1] = -1;
  std::vector<int64_t> rows(B, 1);
  std::vector<float> C = C0, W0 = W00, W1 = W10, Wo = Wo0, bo(V), losses(1), p(4 * H, 1.0f);
  ChainLayer layers[2] = {{2, D, H, W0.data(), nullptr, &p[0], &p[H], &p[2 * H], &p[3 * H]},
                          {2, H, H, W1.data(), nullptr, &p[0], &p[H], &p[2 * H], &p[3 * H]}};
  check(chain_train_steps({V, T, D, B, 2, 0.1, 1e-5, true},
                          {C.data(), layers, Wo.data(), bo.data()}, X.data(), bad_y.data(), n,
                          lrs.data(), 1, 0, 7, rows.data(), nullptr, nullptr, losses.data(),
                          1) == n * T + 1 &&
            C == C0,
        "chain engine reports a bad target and trains nothing");
}

}  // namespace

// Every level this CPU runs: its internals, then the kernels through the entry points of
// kernels.h with that level chosen.
int main() {
  std::setvbuf(stdout, nullptr, _IONBF, 0);  // a crash keeps the lines before it
  void (*const internals[])() = {
    portable::tests::check_internals,
#if PYMAKEMORE_X86_LEVELS
    avx2::tests::check_internals, avx512::tests::check_internals,
#endif
  };
  const int levels = static_cast<int>(best_cpu_level()) + 1;
  for (int level = 0; level < levels; ++level) {
    const char* name = cpu_level_name(static_cast<CpuLevel>(level));
    std::printf("level %s\n", name);
    internals[level]();
    set_cpu_level(name);
    test_embedding();
    test_linear();
    test_cross_entropy();
    test_mlp_engine();
    test_chain_engine();
  }
  for (int level = levels; level < 3; ++level)
    std::printf("level %s: not run (this CPU or build lacks it)\n",
                cpu_level_name(static_cast<CpuLevel>(level)));
  if (failures) {
    std::printf("%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("all CPU kernel checks passed\n");
  return 0;
}
