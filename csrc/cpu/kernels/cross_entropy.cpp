// cross_entropy_forward / _backward: cross entropy over rows of logits by a max-subtracted
// log-sum-exp, softmax never stored. Compiled once per level (csrc/cpu/levels/<level>/).
#include "this_level.h"  // first: see there

#include "common.h"
#include "cpu_math.h"
#include "row_ops.h"

#include <limits>

namespace pymakemore::PYMAKEMORE_LEVEL {
namespace {

using cpu::FirstInvalid;

// Rows per piece of the loss / weight sums, summed in a fixed order (deterministic).
constexpr int64_t kSumPiece = 1024;

// Row statistics are computed kBatch rows at a time (see rows::max_and_sum_exp).
constexpr int64_t kBatch = 16;

struct BatchLse {
  // lse = max + log_sum, kept in double: at |x| ~ 1e4 a float lse would be off by half an
  // ulp of 1e4, far more than the loss allows. NaN when a row holds a NaN or its max is
  // infinite (as torch's log_softmax).
  double max[kBatch];
  double log_sum[kBatch];
};

template <typename T>
void batch_logsumexp(const T* x, int64_t rows, int64_t c, BatchLse& out) {
  T m[kBatch], s[kBatch];
  rows::max_and_sum_exp(x, rows, c, m, s);
  for (int64_t r = rows; r < kBatch; ++r) m[r] = s[r] = T(1);  // keeps the loop below full
  for (int64_t r = 0; r < kBatch; ++r) {
    // the sum is in [1, c]: its log is small, so float precision costs nothing in lse
    out.max[r] = static_cast<double>(m[r]);
    out.log_sum[r] = static_cast<double>(math::log(s[r]));
  }
  for (int64_t r = 0; r < rows; ++r)
    if (std::isinf(m[r]) || std::isnan(m[r]) || std::isnan(s[r]))
      out.max[r] = out.log_sum[r] = std::numeric_limits<double>::quiet_NaN();
}

// sum_j w_j * (max - x_j) (w may be null: all ones); each term is exact before weighting,
// unlike lse * sum(w) - sum(w x), which cancels badly for large logits.
template <typename T>
T row_weighted_gap(const T* x, const T* w, T max, int64_t c) {
  T s = T(0);
  if (w) {
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < c; ++j) s += w[j] * (max - x[j]);
  } else {
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < c; ++j) s += max - x[j];
  }
  return s;
}

template <typename T>
T sum_of(const T* w, int64_t c) {
  T s = T(0);
  for (int64_t j = 0; j < c; ++j) s += w[j];
  return s;
}

template <typename Index>
bool ignored(Index t, const CrossEntropyOptions& opt) {
  return static_cast<int64_t>(t) == opt.ignore_index;
}

template <typename Index>
bool valid_class(Index t, int64_t c) {
  return t >= 0 && static_cast<int64_t>(t) < c;
}

// Sum of the target classes' weights over non-ignored rows: the divisor of Reduction::Mean.
// Out-of-range targets are skipped (never read through): the callers report them.
template <typename T, typename Index>
double mean_divisor(const Index* target, const T* class_weight, int64_t n, int64_t c,
                    const CrossEntropyOptions& opt) {
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const Index t = target[i];
    if (ignored(t, opt) || !valid_class(t, c)) continue;
    total += class_weight ? static_cast<double>(class_weight[static_cast<int64_t>(t)]) : 1.0;
  }
  return total;
}

// What every row's gradient shares: d loss_i / d x_j = scale ((1-eps) w_t (p_j - [j==t]) +
// eps/c (W p_j - w_j)), W = sum_j w_j.
template <typename T>
struct GradTerms {
  GradTerms(const T* class_weight, int64_t c, const CrossEntropyOptions& opt)
      : eps(static_cast<T>(opt.label_smoothing)),
        spread(eps / static_cast<T>(std::max<int64_t>(c, 1))),
        weight_total(class_weight ? sum_of(class_weight, c) : T(c)) {}
  T eps, spread, weight_total;
};

// Beyond this |lse|, max + log_sum held in one double may have lost log_sum's digits (at 1e17
// all of them: tied logits then give p = 1 for every class instead of 1/c).
constexpr double kLargeLse = 65536.0;

// A row's log-sum-exp as hi + lo (T each) for p = exp((x - hi) - lo): x - hi is exact for the
// x that matter (x near lse), so p keeps full precision. From the saved lse where that is exact
// enough; for a larger one from the row's own max and log-sum, kept apart (recomputed, one row
// at a time, so the forward's gradient and the backward's agree bit for bit).
template <typename T>
std::pair<T, T> lse_split(const T* x, int64_t c, double lse) {
  if (!(std::fabs(lse) >= kLargeLse) || std::isinf(lse)) {
    const T hi = static_cast<T>(lse);
    return {hi, static_cast<T>(lse - static_cast<double>(hi))};
  }
  BatchLse row;
  batch_logsumexp(x, 1, c, row);
  const double max = row.max[0], log_sum = row.log_sum[0];
  const T hi = static_cast<T>(max + log_sum);
  return {hi, static_cast<T>((max - static_cast<double>(hi)) + log_sum)};
}

// Row i's gradient for a valid target ti, scaled by `scale`.
template <typename T>
void row_gradient(const T* x, int64_t ti, const T* class_weight, double lse, int64_t c, T scale,
                  const GradTerms<T>& terms, T* g) {
  const T wt = class_weight ? class_weight[ti] : T(1);
  const auto [hi, lo] = lse_split(x, c, lse);
  // without smoothing the W term is absent, not 0 * W: W overflows to inf for class weights
  // near the type's limit, and 0 * inf would make every gradient NaN
  const T smoothing_coef = terms.spread != T(0) ? terms.spread * terms.weight_total : T(0);
  const T p_coef = scale * ((T(1) - terms.eps) * wt + smoothing_coef);
  rows::softmax_grad(x, c, hi, lo, p_coef, scale * terms.spread, class_weight, g);
  g[ti] -= scale * (T(1) - terms.eps) * wt;
}

}  // namespace

template <typename T, typename Index>
int64_t cross_entropy_forward(const T* logits, const Index* target, const T* class_weight,
                              int64_t n, int64_t c, const CrossEntropyOptions& opt, T* loss,
                              double* lse, T* grad_logits, const ParallelFor& pfor) {
  FirstInvalid invalid;
  const double eps = opt.label_smoothing;
  const GradTerms<T> terms(class_weight, c, opt);
  const double divisor =
      opt.reduction == Reduction::Mean ? mean_divisor(target, class_weight, n, c, opt) : 1.0;
  // the scale a backward call with grad_loss = 1 would use (see cross_entropy_backward)
  const T grad_scale = static_cast<T>(1.0 / divisor);
  const double weight_total = class_weight ? static_cast<double>(sum_of(class_weight, c))
                                           : static_cast<double>(c);
  const int64_t pieces = cpu::ceil_div(n, kSumPiece);
  std::vector<double> piece_sum(opt.reduction == Reduction::None ? 0 : pieces, 0.0);

  pfor(pieces, cpu::grain_for(kSumPiece * c), [&](int64_t p0, int64_t p1) {
    BatchLse stats;
    for (int64_t p = p0; p < p1; ++p) {
      double sum = 0.0;
      const int64_t end = std::min(n, (p + 1) * kSumPiece);
      for (int64_t i0 = p * kSumPiece; i0 < end; i0 += kBatch) {
        const int64_t rows = std::min(kBatch, end - i0);
        batch_logsumexp(logits + i0 * c, rows, c, stats);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = i0 + r;
          const T* x = logits + i * c;
          const Index t = target[i];
          const double max = stats.max[r], log_sum = stats.log_sum[r];
          lse[i] = max + log_sum;
          double row_loss = 0.0;
          if (grad_logits && (ignored(t, opt) || !valid_class(t, c)))
            std::fill(grad_logits + i * c, grad_logits + (i + 1) * c, T(0));
          if (!ignored(t, opt)) {
            if (!valid_class(t, c)) {
              invalid.report(i);
              continue;
            }
            const int64_t ti = static_cast<int64_t>(t);
            const double wt = class_weight ? static_cast<double>(class_weight[ti]) : 1.0;
            // -log p_t = (max - x_t) + log_sum: no rounding at the logits' magnitude
            row_loss = (1.0 - eps) * wt * ((max - static_cast<double>(x[ti])) + log_sum);
            if (eps > 0.0) {
              // sum_j w_j * -log p_j, spread evenly over the c classes
              const double smooth =
                  std::isnan(max) ? max
                                  : static_cast<double>(row_weighted_gap(
                                        x, class_weight, static_cast<T>(max), c)) +
                                        weight_total * log_sum;
              row_loss += eps / static_cast<double>(c) * smooth;
            }
            // last: the row's logits are read before its gradient is written, so the
            // gradient may overwrite them (grad_logits == logits)
            if (grad_logits)
              row_gradient(x, ti, class_weight, lse[i], c, grad_scale, terms, grad_logits + i * c);
          }
          if (opt.reduction == Reduction::None)
            loss[i] = static_cast<T>(row_loss);
          else
            sum += row_loss;
        }
      }
      if (opt.reduction != Reduction::None) piece_sum[p] = sum;
    }
  });
  if (invalid.result() != kAllValid) return invalid.result();

  if (opt.reduction != Reduction::None) {
    double total = 0.0;
    for (double s : piece_sum) total += s;
    if (opt.reduction == Reduction::Mean) {
      // NaN when the divisor is 0 (every row ignored, or every target's class weight 0), as
      // in torch, whose target term is 0 / 0 even when label smoothing's term is not
      total = divisor == 0.0 ? std::numeric_limits<double>::quiet_NaN() : total / divisor;
    }
    loss[0] = static_cast<T>(total);
  }
  return kAllValid;
}

template <typename T, typename Index>
int64_t cross_entropy_backward(const T* grad_loss, const T* logits, const Index* target,
                               const T* class_weight, const double* lse, int64_t n, int64_t c,
                               const CrossEntropyOptions& opt, T* grad_logits,
                               const ParallelFor& pfor) {
  FirstInvalid invalid;
  const GradTerms<T> terms(class_weight, c, opt);
  // Mean and Sum scale every row by one value; None reads a value per row below.
  T scale_all = opt.reduction == Reduction::None ? T(0) : grad_loss[0];
  if (opt.reduction == Reduction::Mean) {
    // When every row is ignored no row reads the scale, so a zero divisor never reaches a row.
    scale_all = static_cast<T>(static_cast<double>(scale_all) /
                               mean_divisor(target, class_weight, n, c, opt));
  }

  pfor(n, cpu::grain_for(c), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      T* g = grad_logits + i * c;
      const Index t = target[i];
      if (ignored(t, opt) || !valid_class(t, c)) {
        if (!ignored(t, opt)) invalid.report(i);
        std::fill(g, g + c, T(0));  // exactly zero, even next to NaN logits
        continue;
      }
      const T scale = opt.reduction == Reduction::None ? grad_loss[i] : scale_all;
      row_gradient(logits + i * c, static_cast<int64_t>(t), class_weight, lse[i], c, scale, terms,
                   g);
    }
  });
  return invalid.result();
}

PYMAKEMORE_INSTANTIATE_TI(cross_entropy_forward)
PYMAKEMORE_INSTANTIATE_TI(cross_entropy_backward)

}  // namespace pymakemore::PYMAKEMORE_LEVEL
