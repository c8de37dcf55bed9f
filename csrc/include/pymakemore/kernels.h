// Raw kernels of the fused ops: plain pointers and sizes, no torch.
//
// CPU kernels take a ParallelFor so the caller picks the thread pool (the torch layer passes
// one backed by at::parallel_for; the C++ tests pass serial_for or std::thread). Every
// reduction is split into pieces whose boundaries depend on the shape only, never on the
// number of threads, so results are bit-identical run to run and across thread counts.
#pragma once

#include <cstdint>
#include <functional>
#include <type_traits>

namespace pymakemore {

// A non-owning reference to a callable fn(begin, end): unlike std::function it never
// allocates, which matters when a kernel runs in a few microseconds. Valid while the callable
// it was made from lives (kernels pass lambdas straight to a ParallelFor).
class RangeFn {
 public:
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, RangeFn>>>
  RangeFn(const F& fn)  // NOLINT: implicit, so a lambda can be passed as is
      : callable_(&fn), call_([](const void* c, int64_t b, int64_t e) {
          (*static_cast<const F*>(c))(b, e);
        }) {}
  void operator()(int64_t begin, int64_t end) const { call_(callable_, begin, end); }

 private:
  const void* callable_;
  void (*call_)(const void*, int64_t, int64_t);
};

// Runs fn over [0, n) in pieces of at least `grain` items, possibly in parallel.
using ParallelFor = std::function<void(int64_t n, int64_t grain, const RangeFn& fn)>;

void serial_for(int64_t n, int64_t grain, const RangeFn& fn);

// Kernels that validate indices return kAllValid, or the position of the first invalid one
// (the caller reads the value there to report it).
constexpr int64_t kAllValid = -1;

// ---- embedding: out[i, :] = weight[indices[i], :] ----------------------------------------
template <typename T, typename Index>
int64_t embedding_forward(const Index* indices, int64_t n, const T* weight, int64_t num_rows,
                          int64_t dim, T* out, const ParallelFor& pfor);

// grad_weight (num_rows, dim) is overwritten with the sum of grad_out rows per index.
// padding_idx < 0 means none; with scale_by_freq each row's sum is divided by its count.
template <typename T, typename Index>
int64_t embedding_backward(const T* grad_out, const Index* indices, int64_t n, int64_t num_rows,
                           int64_t dim, int64_t padding_idx, bool scale_by_freq, T* grad_weight,
                           const ParallelFor& pfor);

// ---- linear and linear_tanh: y = act(x @ w^T + b), x (n, k), w (h, k), b (h) or null -----
enum class Activation : int { Identity = 0, Tanh = 1 };

template <typename T>
void linear_forward(const T* x, const T* w, const T* bias, int64_t n, int64_t k, int64_t h,
                    Activation act, T* y, const ParallelFor& pfor);

// gz = gy * act'(.) (for tanh 1 - y^2, from the saved output y; identity needs no y);
// grad_x = gz @ w, grad_w = gz^T @ x, grad_b = sum over rows of gz.
// Any of grad_x, grad_w, grad_b may be null to skip it.
template <typename T>
void linear_backward(const T* gy, const T* y, const T* x, const T* w, int64_t n, int64_t k,
                     int64_t h, Activation act, T* grad_x, T* grad_w, T* grad_b,
                     const ParallelFor& pfor);

// ---- cross entropy over rows of logits (n, c) ---------------------------------------------
enum class Reduction : int { None = 0, Mean = 1, Sum = 2 };

struct CrossEntropyOptions {
  Reduction reduction = Reduction::Mean;
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;
};

// Writes lse[i] (log-sum-exp of row i, max-subtracted; double whatever T, so that logits of
// large magnitude keep their precision) and the loss: n values into `loss` for
// Reduction::None (0 for ignored rows), else one value. class_weight (c) may be null.
// grad_logits, if not null (Reduction::Mean or Sum only): the gradient for grad_loss = 1 as
// well, each row written while it is still in cache (cross_entropy_backward's numbers).
template <typename T, typename Index>
int64_t cross_entropy_forward(const T* logits, const Index* target, const T* class_weight,
                              int64_t n, int64_t c, const CrossEntropyOptions& opt, T* loss,
                              double* lse, T* grad_logits, const ParallelFor& pfor);

// grad_logits = g_i * d(loss_i)/d(logits), with softmax recomputed from lse. grad_loss holds one
// value (Mean, Sum) or n values (None).
template <typename T, typename Index>
int64_t cross_entropy_backward(const T* grad_loss, const T* logits, const Index* target,
                               const T* class_weight, const double* lse, int64_t n, int64_t c,
                               const CrossEntropyOptions& opt, T* grad_logits,
                               const ParallelFor& pfor);

}  // namespace pymakemore

namespace pymakemore {

// ---- the makemore MLP, whole training steps (engine "fused") -----------------------------------
// Parameters in the layout of pymakemore.models.MLP: C (vocab, n_embd), W1 (n_hidden,
// block * n_embd), b1 (n_hidden), W2 (vocab, n_hidden), b2 (vocab); float32, updated in place.
struct MlpShape {
  int64_t vocab, block, n_embd, n_hidden, batch;
};

struct MlpParams {
  float* C;
  float* W1;
  float* b1;
  float* W2;
  float* b2;
};

// Minibatch row b of step s: a counter-based hash of (seed, s, b) reduced to [0, n_train):
// the same draws whatever the thread count, and a resumed run continues the sequence.
int64_t mlp_batch_index(uint64_t seed, int64_t step, int64_t b, int64_t n_train);

// Runs `steps` SGD steps (sample, forward, backward, update) from step `first_step`, with
// learning rate lrs[s] at step first_step + s, writing each step's mean loss to losses[s].
// batch_indices (steps x batch, optional) replaces the hash draws, for tests. threads >= 2
// runs the two halves of the hidden layer on two threads (the numbers do not change).
// Returns kAllValid, or the position in X or Y of a character id outside [0, vocab).
int64_t mlp_train_steps(const MlpShape& shape, MlpParams params, const int64_t* X,
                        const int64_t* Y, int64_t n_train, const float* lrs, int64_t steps,
                        int64_t first_step, uint64_t seed, const int64_t* batch_indices,
                        float* losses, int threads);

}  // namespace pymakemore
