// Whole training steps of the BatchNorm models of makemore parts 3 and 5 (ChainShape: bnmlp,
// bnmlp-deep, wavenet) in C++: minibatch draw, forward, backward, SGD update and running
// statistics, with no autograd, dispatcher or Python between them and nothing allocated per
// step. Compiled once per instruction-set level (csrc/cpu/levels/).
//
// Layouts, as the MLP engine (kernels/mlp_engine.cpp, whose building blocks this shares):
// activations are kept transposed, (features, columns), a column being one (example, position)
// of the layer, so that the products run with vectors along the columns and the weights as
// broadcast scalars; the weight gradients run with vectors along a weight row and leave the
// registers straight into the weights. A layer's columns are P groups of Bp (the batch padded
// to whole vectors), the groups ordered so that the next layer's flattening of `group`
// consecutive positions is a plain matrix: the output of layer i is written as the input of
// layer i + 1, whose row j * F + f holds feature f of the j-th position of each group, in
// contiguous columns. Both layouts of each input, (features, columns) and (columns, features),
// are written as the previous layer's tanh leaves the registers.
//
// Threads split each layer's units in two halves (the same split on one thread, so both give
// the same numbers): BatchNorm's statistics are per unit, so a unit needs no other thread's
// work until the next layer reads all of them. The threads meet once after each layer's
// forward (the last one's with its share of the logits) and once after each layer's backward
// (its share of the input's gradient); the loss, the head's bias and the embeddings each
// thread computes for itself, identically.
#include "this_level.h"  // first: see there

#include "common.h"
#include "cpu_math.h"
#include "engine_parts.h"
#include "simd.h"

namespace pymakemore::PYMAKEMORE_LEVEL {
using engine::Minibatches;

namespace {

using namespace engine;

// Two sums over a row of n floats (whole vectors): term(c) gives the two terms' vectors at
// column c. Float vectors of at most kSumVectors each, whose lanes are added pairwise (a short
// dependency chain: these run once per unit and layer at every step: lane_sum) into double
// totals: an accurate sum over long rows too.
constexpr int64_t kSumVectors = 64;

template <typename Term>
std::array<double, 2> row_sums(int64_t n, const Term& term) {
  std::array<double, 2> total{0.0, 0.0};
  for (int64_t c0 = 0; c0 < n; c0 += kSumVectors * L) {
    Vec first{}, second{};
    for (int64_t c = c0; c < std::min(n, c0 + kSumVectors * L); c += L) {
      const auto [a, b] = term(c);
      first += a;
      second += b;
    }
    total[0] += lane_sum(first);
    total[1] += lane_sum(second);
  }
  return total;
}

// One hidden layer: its sizes, parameters in padded layouts and per-step buffers.
struct Layer {
  ChainLayer given;         // the caller's parameters (copied in, and back at the end)
  int64_t k, F, Fp, K, Kp;  // group; input features (real, padded); K = k * Fp, padded to L
  int64_t H, Hp, C, N;      // units (real, padded); columns; valid columns (batch x groups)
  int64_t next_C;           // columns of the next layer (or of the head): C / its group
  std::array<HiddenHalf, 2> halves;
  std::vector<int64_t> input_row;  // the padded row of each real input feature
  AlignedFloats W{0};               // (Hp, Kp)
  std::vector<float> bias, gain, shift, running_mean, running_var, invstd;  // Hp each
  AlignedFloats xhat{0}, dz{0};     // (Hp, C): z normalised; the gradient before BatchNorm
  AlignedFloats partial_dx[2] = {AlignedFloats(0), AlignedFloats(0)};  // per half: (Kp, C)
  AlignedFloats xT{0}, x{0};  // the input (Kp, C) and (C, Kp); layer 0's are each thread's
};

class ChainSteps {
 public:
  ChainSteps(const ChainShape& shape, const ChainParams& params, const int64_t* X,
             const int64_t* Y, int64_t n_train, int threads)
      : shape_(shape), B(shape.batch), V(shape.vocab), T(shape.block), D(shape.n_embd),
        Bp(cpu::round_up(B, L)), Vp(cpu::round_up(V, L)), X_(X), Y_(Y), n_train_(n_train),
        params_(params), threads_(threads), barrier_(threads, spin_limit()) {
    int64_t positions = T, F = D, Fp = D;
    std::vector<int64_t> input_row(static_cast<size_t>(D));
    for (int64_t f = 0; f < D; ++f) input_row[f] = f;
    layers_.resize(static_cast<size_t>(shape.layers));
    for (int64_t i = 0; i < shape.layers; ++i) {
      Layer& ly = layers_[i];
      ly.given = params.layers[i];
      ly.k = ly.given.group;
      positions /= ly.k;
      ly.F = F, ly.Fp = Fp, ly.K = ly.k * Fp, ly.Kp = cpu::round_up(ly.K, L);
      ly.H = ly.given.out_features;
      ly.halves = split_units(ly.H);
      ly.Hp = ly.halves[0].rows + ly.halves[1].rows;
      ly.C = positions * Bp, ly.N = positions * B;
      ly.input_row = input_row;
      ly.W = AlignedFloats(ly.Hp * ly.Kp);
      for (auto* v :
           {&ly.bias, &ly.gain, &ly.shift, &ly.running_mean, &ly.running_var, &ly.invstd})
        v->assign(static_cast<size_t>(ly.Hp), 0.0f);
      ly.xhat = AlignedFloats(ly.Hp * ly.C);
      ly.dz = AlignedFloats(ly.Hp * ly.C);
      for (AlignedFloats& p : ly.partial_dx) p = AlignedFloats(ly.Kp * ly.C);
      if (i > 0) {
        ly.xT = AlignedFloats(ly.Kp * ly.C);
        ly.x = AlignedFloats(ly.C * ly.Kp);
      }
      // the units' padded rows, which are the next layer's input rows
      input_row.assign(static_cast<size_t>(ly.H), 0);
      for (const HiddenHalf& hf : ly.halves)
        for (int64_t u = 0; u < hf.count; ++u) input_row[hf.first + u] = hf.row0 + u;
      F = ly.H, Fp = ly.Hp;
    }
    for (int64_t i = 0; i < shape.layers; ++i)
      layers_[i].next_C = i + 1 < shape.layers ? layers_[i + 1].C : Bp;
    head_rows_ = input_row;
    Hh_ = F, Hhp_ = Fp;
    head_xT_ = AlignedFloats(Hhp_ * Bp);
    head_dxT_ = AlignedFloats(Hhp_ * Bp);
    head_wT_ = AlignedFloats(Hhp_ * Vp);
    for (AlignedFloats& p : partial_logitsT_) p = AlignedFloats(Vp * Bp);
    column_of_position_ = positions_to_columns();
    mask_ = AlignedFloats(layers_[0].C);
    for (int64_t c = 0; c < layers_[0].C; ++c) mask_[c] = c % Bp < B ? 1.0f : 0.0f;
    copy_in();
    for (std::vector<double>& sums : sums_) sums.assign(static_cast<size_t>(matrices() * 4), 0.0);
    for (int t = 0; t < threads; ++t) own_.emplace_back(*this);
  }

  // `steps` steps from first_step; thread 0 of the caller, thread 1 (if any) started here
  void run(const float* lrs, int64_t steps, int64_t first_step, uint64_t seed,
           const int64_t* batch_indices, const bool* record, double* update_stats,
           float* losses) {
    const auto work = [&](int t) {
      steps_on(t, lrs, steps, first_step, seed, batch_indices, record, update_stats, losses);
    };
    on_threads(threads_, work);
    copy_out();
  }

 private:
  // What each thread keeps to itself: its copies of C and the head's bias, the minibatch, the
  // first layer's input, the loss and its buffers.
  struct ThreadState {
    explicit ThreadState(const ChainSteps& m)
        : C(m.params_.C, m.params_.C + m.V * m.D),
          out_bias(m.params_.out_bias, m.params_.out_bias + m.V), dC(m.V * m.D),
          xT(m.layers_[0].Kp * m.layers_[0].C), x(m.layers_[0].C * m.layers_[0].Kp),
          loss(m.V, m.B), rows(m.B), next_rows(m.B), xb(m.B * m.T), yb(m.B) {}
    std::vector<float> C, out_bias, dC;
    AlignedFloats xT, x;
    ColumnLoss loss;
    std::vector<int64_t> rows, next_rows, xb, yb;
  };

  // The first layer's column group of each embedding position: groups are ordered so that
  // each layer's input is a plain matrix (see the top of the file): position t of a level
  // whose layer takes k at a time sits at group (t % k) * (groups of the next level) +
  // (the group of t / k at the next level).
  std::vector<int64_t> positions_to_columns() const {
    // group_of[t]: the column group of position t of layer i's output, from the last layer's
    // one position down to layer 0's output
    std::vector<int64_t> group_of{0};
    for (int64_t i = shape_.layers - 1; i >= 1; --i) {
      const int64_t k = layers_[i].k, next = static_cast<int64_t>(group_of.size());
      std::vector<int64_t> here(static_cast<size_t>(next * k));
      for (int64_t t = 0; t < next * k; ++t) here[t] = (t % k) * next + group_of[t / k];
      group_of.swap(here);
    }
    // position t of the embeddings: row (t % k0) * D + d of layer 0, column group group_of[t / k0]
    std::vector<int64_t> column(static_cast<size_t>(T));
    const int64_t k0 = layers_[0].k;
    for (int64_t t = 0; t < T; ++t) column[t] = group_of[t / k0] * Bp;
    return column;
  }

  // The caller's parameters into the padded layouts, and back (every thread's C and head
  // bias are the same).
  void copy_in() {
    each_parameter([](float& padded, const float& given) { padded = given; });
  }

  void copy_out() {
    std::copy(own_[0].C.begin(), own_[0].C.end(), params_.C);
    std::copy(own_[0].out_bias.begin(), own_[0].out_bias.end(), params_.out_bias);
    each_parameter([](const float& padded, float& given) { given = padded; });
  }

  // pair(padded, given) for each element of the layers' parameters and running statistics and
  // of the head's weight, in the padded layout and in the caller's
  template <typename Pair>
  void each_parameter(const Pair& pair) {
    for (Layer& ly : layers_) {
      const ChainLayer& g = ly.given;
      const int64_t in = ly.k * ly.F;
      for (const HiddenHalf& hf : ly.halves)
        for (int64_t u = 0; u < hf.count; ++u) {
          const int64_t unit = hf.first + u, row = hf.row0 + u;
          for (int64_t j = 0; j < ly.k; ++j)
            for (int64_t f = 0; f < ly.F; ++f)
              pair(ly.W[row * ly.Kp + j * ly.Fp + ly.input_row[f]],
                   g.weight[unit * in + j * ly.F + f]);
          if (g.bias) pair(ly.bias[row], g.bias[unit]);
          pair(ly.gain[row], g.gain[unit]);
          pair(ly.shift[row], g.shift[unit]);
          pair(ly.running_mean[row], g.running_mean[unit]);
          pair(ly.running_var[row], g.running_var[unit]);
        }
    }
    for (int64_t u = 0; u < Hh_; ++u)
      for (int64_t v = 0; v < V; ++v)
        pair(head_wT_[head_rows_[u] * Vp + v], params_.out_weight[v * Hh_ + u]);
  }

  void steps_on(int t, const float* lrs, int64_t steps, int64_t first_step, uint64_t seed,
                const int64_t* batch_indices, const bool* record, double* update_stats,
                float* losses) {
    ThreadState& own = own_[t];
    const bool together = threads_ >= 2;
    const int first_half = together ? t : 0, end_half = together ? t + 1 : 2;
    const int64_t n_layers = shape_.layers;
    int64_t round = 0;
    const auto meet = [&] {
      if (together) barrier_.wait(++round);
    };
    const Minibatches batches{X_, Y_, n_train_, T, B, seed, first_step, batch_indices};
    const auto draw = [&](int64_t s, std::vector<int64_t>& out) {
      if (s < steps) batches.draw(s, out.data());
    };
    draw(0, own.next_rows);
    int64_t recorded = 0;
    for (int64_t s = 0; s < steps; ++s) {
      const float lr = lrs[s];
      const bool measuring = record && record[s];
      own.rows.swap(own.next_rows);
      draw(s + 1, own.next_rows);
      gather(own);
      for (int64_t i = 0; i < n_layers; ++i) {
        const float* xT = i == 0 ? own.xT.get() : layers_[i].xT.get();
        for (int h = first_half; h < end_half; ++h) {
          forward(i, h, xT);
          if (i + 1 == n_layers) head_forward(h);
        }
        meet();
      }
      const float loss = own.loss.run(partial_logitsT_[0].get(), partial_logitsT_[1].get(),
                                      own.out_bias.data(), own.yb.data(), lr);
      if (t == 0) losses[s] = loss;
      for (int h = first_half; h < end_half; ++h) head_backward(own, h, lr, measuring);
      for (int64_t i = n_layers - 1; i >= 0; --i) {
        const float* x = i == 0 ? own.x.get() : layers_[i].x.get();
        for (int h = first_half; h < end_half; ++h) backward(i, h, x, lr, measuring);
        meet();
      }
      update_embeddings(own, lr, measuring && t == 0);
      if (measuring && t == 0) {
        // every thread has met since its sums were written, and none writes them again
        // before the next step's first meeting
        double* out = update_stats + recorded++ * matrices() * 4;
        for (int64_t m = 0; m < matrices() * 4; ++m) out[m] = sums_[0][m] + sums_[1][m];
        for (std::vector<double>& sums : sums_) std::fill(sums.begin(), sums.end(), 0.0);
      }
    }
  }

  // The weight matrices whose update:data ratios the diagnostics follow: C, each layer's W,
  // the head's weight; for each, sums of the update's elements and squares and of the
  // weights' (before the update) elements and squares, per half.
  int64_t matrices() const { return shape_.layers + 2; }

  void gather(ThreadState& own) const {
    // the ids first, in a loop of independent loads: the rows are scattered over a training
    // set larger than the caches, and their misses overlap here, not behind each copy
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = own.rows[b];
      for (int64_t t = 0; t < T; ++t) own.xb[b * T + t] = X_[row * T + t];
      own.yb[b] = Y_[row];
    }
    const Layer& first = layers_[0];
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        const float* src = own.C.data() + own.xb[b * T + t] * D;
        const int64_t column = column_of_position_[t] + b, at = (t % first.k) * D;
        for (int64_t d = 0; d < D; ++d) {
          own.xT[(at + d) * first.C + column] = src[d];
          own.x[column * first.Kp + at + d] = src[d];
        }
      }
  }

  // The next layer's input (or the head's) in both layouts: (next Kp, next C) and its transpose.
  float* next_xT(int64_t i) {
    return i + 1 < shape_.layers ? layers_[i + 1].xT.get() : head_xT_.get();
  }

  // z = W x for the half's units, then BatchNorm's statistics, xhat and y = tanh(gain xhat +
  // shift) of each unit's row, y written as the next layer's input
  void forward(int64_t i, int h, const float* xT) {
    Layer& ly = layers_[i];
    const HiddenHalf& hf = ly.halves[h];
    product(hf.rows, ly.C / L, &ly.W[hf.row0 * ly.Kp], ly.Kp, 1, xT, ly.C, ly.K,
            store_rows(&ly.xhat[hf.row0 * ly.C], ly.C));
    float* yT = next_xT(i);
    float* y = i + 1 < shape_.layers ? layers_[i + 1].x.get() : nullptr;
    const int64_t next_Kp = i + 1 < shape_.layers ? layers_[i + 1].Kp : 0;
    const float* mask = mask_.get();
    const double n = static_cast<double>(ly.N);
    for (int64_t r = hf.row0; r < hf.row0 + hf.rows; ++r) {
      float* z = &ly.xhat[r * ly.C];
      if (ly.given.bias) {
        const Vec b = simd::broadcast(ly.bias[r]);
        for (int64_t c = 0; c < ly.C; c += L) simd::store(z + c, simd::load(z + c) + b);
      }
      // the sums of d = z - p and d^2 in one pass, p the row's first value (a shift that
      // keeps the variance accurate when the mean is large against the spread)
      const Vec p = simd::broadcast(z[0]);
      const auto [sum, sum_squares] = row_sums(ly.C, [&](int64_t c) {
        const Vec d = (simd::load(z + c) - p) * simd::load(mask + c);
        return std::array<Vec, 2>{d, d * d};
      });
      const double mean = static_cast<double>(z[0]) + sum / n;
      const Vec m = simd::broadcast(static_cast<float>(mean));
      const double squares = std::max(0.0, sum_squares - sum * sum / n);
      const double unbiased_var = squares / (n - 1.0);
      const double var = shape_.unbiased ? unbiased_var : squares / n;
      const float invstd = static_cast<float>(1.0 / std::sqrt(var + shape_.eps));
      ly.invstd[r] = invstd;
      const double momentum = shape_.momentum, old_mean = ly.running_mean[r],
                   old_var = ly.running_var[r];
      ly.running_mean[r] = static_cast<float>(old_mean + momentum * (mean - old_mean));
      ly.running_var[r] = static_cast<float>(old_var + momentum * (unbiased_var - old_var));
      const Vec scale = simd::broadcast(invstd), gain = simd::broadcast(ly.gain[r]),
                shift = simd::broadcast(ly.shift[r]);
      // column c = j * next_C + cn is column cn of the next layer's input, in its group j
      for (int64_t j = 0, c = 0; j < ly.C / ly.next_C; ++j) {
        const int64_t row = j * ly.Hp + r;
        for (int64_t cn = 0; cn < ly.next_C; cn += L, c += L) {
          const Vec xh = (simd::load(z + c) - m) * scale;
          simd::store(z + c, xh);
          const Vec out = simd::tanh<float>(gain * xh + shift) * simd::load(mask + c);
          simd::store(yT + row * ly.next_C + cn, out);
          if (y)
            for (int64_t l = 0; l < L; ++l) y[(cn + l) * next_Kp + row] = out[l];
        }
      }
    }
  }

  // the half's share of the logits, from its units of the last layer
  void head_forward(int h) {
    const HiddenHalf& hf = layers_.back().halves[h];
    product(cpu::round_up(V, kRows), Bp / L, &head_wT_[hf.row0 * Vp], 1, Vp,
            &head_xT_[hf.row0 * Bp], Bp, hf.rows, store_rows(partial_logitsT_[h].get(), Bp));
  }

  // the gradient of the half's units of the last layer, then the head's update of their rows
  void head_backward(const ThreadState& own, int h, float lr, bool measuring) {
    const HiddenHalf& hf = layers_.back().halves[h];
    float* wT = &head_wT_[hf.row0 * Vp];
    product(hf.rows, Bp / L, wT, Vp, 1, own.loss.dlogitsT(), Bp, V,
            store_rows(&head_dxT_[hf.row0 * Bp], Bp));
    const Vec step = simd::broadcast(lr);
    if (measuring) {
      double* sums = &sums_[h][(matrices() - 1) * 4];
      add_sums(wT, hf.rows * Vp, sums + 2);
      product(hf.rows, Vp / L, &head_xT_[hf.row0 * Bp], Bp, 1, own.loss.dlogits(), Vp, B,
              subtract_and_measure(wT, Vp, step, sums));
    } else {
      product(hf.rows, Vp / L, &head_xT_[hf.row0 * Bp], Bp, 1, own.loss.dlogits(), Vp, B,
              subtract_from_rows(wT, Vp, step));
    }
  }

  // BatchNorm and tanh backward for the half's units (their gain, shift and bias updated),
  // then the half's share of the gradient of the layer's input and its rows of W updated
  void backward(int64_t i, int h, const float* x, float lr, bool measuring) {
    Layer& ly = layers_[i];
    const HiddenHalf& hf = ly.halves[h];
    const bool last = i + 1 == shape_.layers;
    // the gradient of the layer's output, in the layout of the next layer's input
    const float* gy0 = last ? head_dxT_.get() : layers_[i + 1].partial_dx[0].get();
    const float* gy1 = last ? nullptr : layers_[i + 1].partial_dx[1].get();
    const float* yT = last ? head_xT_.get() : layers_[i + 1].xT.get();
    const float* mask = mask_.get();
    const double n = static_cast<double>(ly.N);
    const Vec one = simd::broadcast(1.0f);
    for (int64_t r = hf.row0; r < hf.row0 + hf.rows; ++r) {
      const float* xh = &ly.xhat[r * ly.C];
      float* dz = &ly.dz[r * ly.C];
      // dz holds the gradient before tanh first; its sum and its sum against xhat with it
      Vec sum_d{}, sum_dx{};
      double dshift = 0.0, dgain = 0.0;
      for (int64_t j = 0, c = 0; j < ly.C / ly.next_C; ++j) {
        const int64_t row = (j * ly.Hp + r) * ly.next_C;
        for (int64_t cn = 0; cn < ly.next_C; cn += L, c += L) {
          Vec gy = simd::load(gy0 + row + cn);
          if (gy1) gy += simd::load(gy1 + row + cn);
          const Vec y = simd::load(yT + row + cn);
          const Vec d = gy * (one - y * y) * simd::load(mask + c);
          simd::store(dz + c, d);
          sum_d += d;
          sum_dx += d * simd::load(xh + c);
          if ((c / L + 1) % kSumVectors == 0) {
            dshift += lane_sum(sum_d), dgain += lane_sum(sum_dx);
            sum_d = sum_dx = Vec{};
          }
        }
      }
      dshift += lane_sum(sum_d), dgain += lane_sum(sum_dx);
      const float gain = ly.gain[r];
      const Vec scale = simd::broadcast(gain * ly.invstd[r]),
                mean_d = simd::broadcast(static_cast<float>(dshift / n)),
                mean_dx = simd::broadcast(
                    static_cast<float>(dgain / (shape_.unbiased ? n - 1.0 : n)));
      for (int64_t c = 0; c < ly.C; c += L)
        simd::store(dz + c, scale * (simd::load(dz + c) - mean_d - simd::load(xh + c) * mean_dx) *
                                simd::load(mask + c));
      if (ly.given.bias)
        ly.bias[r] -= lr * static_cast<float>(row_sums(ly.C, [&](int64_t c) {
          return std::array<Vec, 2>{simd::load(dz + c), Vec{}};
        })[0]);
      ly.gain[r] = gain - lr * static_cast<float>(dgain);
      ly.shift[r] -= lr * static_cast<float>(dshift);
    }
    // the half's share of the input's gradient, with the old weights; then W -= lr dz x
    product(cpu::round_up(ly.K, kRows), ly.C / L, &ly.W[hf.row0 * ly.Kp], 1, ly.Kp,
            &ly.dz[hf.row0 * ly.C], ly.C, hf.rows, store_rows(ly.partial_dx[h].get(), ly.C));
    float* w = &ly.W[hf.row0 * ly.Kp];
    const Vec step = simd::broadcast(lr);
    if (measuring) {
      double* sums = &sums_[h][(1 + i) * 4];
      add_sums(w, hf.rows * ly.Kp, sums + 2);
      product(hf.rows, ly.Kp / L, &ly.dz[hf.row0 * ly.C], ly.C, 1, x, ly.Kp, ly.C,
              subtract_and_measure(w, ly.Kp, step, sums));
    } else {
      product(hf.rows, ly.Kp / L, &ly.dz[hf.row0 * ly.C], ly.C, 1, x, ly.Kp, ly.C,
              subtract_from_rows(w, ly.Kp, step));
    }
  }

  // C -= lr * dC, dC the two halves' gradients of the first layer's input added up per
  // character; measuring: C's update statistics into the first half's sums
  void update_embeddings(ThreadState& own, float lr, bool measuring) {
    const Layer& first = layers_[0];
    std::fill(own.dC.begin(), own.dC.end(), 0.0f);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        float* g = &own.dC[own.xb[b * T + t] * D];
        const int64_t column = column_of_position_[t] + b, at = (t % first.k) * D;
        for (int64_t d = 0; d < D; ++d) {
          const int64_t e = (at + d) * first.C + column;
          g[d] += first.partial_dx[0][e] + first.partial_dx[1][e];
        }
      }
    if (measuring) {  // (on the first thread: every thread's C is the same)
      double* sums = &sums_[0][0];
      add_sums(own.C.data(), V * D, sums + 2);
      for (int64_t e = 0; e < V * D; ++e) {
        const double update = static_cast<double>(lr * own.dC[e]);
        sums[0] += update;
        sums[1] += update * update;
      }
    }
    for (int64_t e = 0; e < V * D; ++e) own.C[e] -= lr * own.dC[e];
  }

  const ChainShape shape_;
  const int64_t B, V, T, D, Bp, Vp;
  const int64_t* X_;
  const int64_t* Y_;
  const int64_t n_train_;
  ChainParams params_;
  const int threads_;
  std::vector<Layer> layers_;
  std::vector<int64_t> head_rows_;  // the padded row of each of the last layer's units
  int64_t Hh_ = 0, Hhp_ = 0;        // the last layer's units (real, padded)
  // shared: the head's input (Hhp, Bp), the gradient of it, its weight transposed (Hhp, Vp)
  AlignedFloats head_xT_{0}, head_dxT_{0}, head_wT_{0};
  AlignedFloats partial_logitsT_[2] = {AlignedFloats(0), AlignedFloats(0)};
  std::vector<int64_t> column_of_position_;
  AlignedFloats mask_{0};  // 1 in the columns of real examples, 0 in the batch's padding
  std::vector<ThreadState> own_;
  Barrier barrier_;
  // each half's sums at a step whose update statistics are recorded (matrices() x 4)
  std::array<std::vector<double>, 2> sums_;
};

}  // namespace

int64_t chain_train_steps(const ChainShape& shape, ChainParams params, const int64_t* X,
                          const int64_t* Y, int64_t n_train, const float* lrs, int64_t steps,
                          int64_t first_step, uint64_t seed, const int64_t* batch_indices,
                          const bool* record, double* update_stats, float* losses,
                          int threads) {
  const int64_t bad =
      Minibatches{X, Y, n_train, shape.block, shape.batch, seed, first_step, batch_indices}
          .first_invalid_id(steps, shape.vocab);
  if (bad != kAllValid) return bad;
  ChainSteps engine(shape, params, X, Y, n_train, std::min(threads, 2));
  engine.run(lrs, steps, first_step, seed, batch_indices, record, update_stats, losses);
  return kAllValid;
}

}  // namespace pymakemore::PYMAKEMORE_LEVEL
