// Raw kernels of the fused ops: plain pointers and sizes, no torch.
//
// CPU kernels take a ParallelFor so the caller picks the thread pool (the torch layer passes
// one backed by at::parallel_for; the C++ tests pass serial_for or std::thread). Every
// reduction is split into pieces whose boundaries depend on the shape only, never on the
// number of threads, so results are bit-identical run to run and across thread counts.
//
// Each kernel is compiled once per instruction-set level (csrc/cpu/this_level.h); the functions
// declared here call the level chosen when the library loads (see CpuLevel below). Every
// kernel's signature is written once, in kernel_functions.inc.
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

enum class Activation : int { Identity = 0, Tanh = 1 };

enum class Reduction : int { None = 0, Mean = 1, Sum = 2 };

struct CrossEntropyOptions {
  Reduction reduction = Reduction::Mean;
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;
};

// The makemore MLP's parameters in the layout of pymakemore.models.MLP: C (vocab, n_embd),
// W1 (n_hidden, block * n_embd), b1 (n_hidden), W2 (vocab, n_hidden), b2 (vocab); float32.
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

// The BatchNorm models of makemore parts 3 and 5 as one chain (pymakemore.models.BNMLP and
// WaveNet): embedding C (vocab, n_embd) over `block` positions, then per hidden layer `group`
// consecutive positions side by side (part 5's FlattenConsecutive; the first layer of part 3
// takes all `block`) -> linear (weight (out_features, group * in_features), optional bias) ->
// BatchNorm (gain, shift; statistics over the batch and the remaining positions) -> tanh, and
// a linear head (out_weight (vocab, last out_features), out_bias (vocab)) once one position is
// left; float32.
struct ChainLayer {
  int64_t group, in_features, out_features;
  float* weight;
  float* bias;  // null: none
  float* gain;
  float* shift;
  float* running_mean;
  float* running_var;
};

struct ChainShape {
  int64_t vocab, block, n_embd, batch, layers;
  double momentum, eps;  // the running statistics' momentum (torch's meaning), BatchNorm's eps
  bool unbiased;         // normalise by the unbiased batch variance (the lectures) or the biased
};

struct ChainParams {
  float* C;
  ChainLayer* layers;  // shape.layers of them
  float* out_weight;
  float* out_bias;
};

// Minibatch row b of step s: a counter-based hash of (seed, s, b) reduced to [0, n_train):
// the same draws whatever the thread count, and a resumed run continues the sequence.
int64_t mlp_batch_index(uint64_t seed, int64_t step, int64_t b, int64_t n_train);

// ---- instruction-set levels ---------------------------------------------------------------
// portable: the compiler's baseline (SSE2 on x86-64, NEON on aarch64); avx2: AVX2 + FMA
// (x86-64-v3); avx512: AVX-512 F/BW/DQ/VL (x86-64-v4). The kernels run at the highest level
// this CPU supports, or at the level named by the environment variable PYMAKEMORE_CPU_LEVEL
// (for tests and benchmarks: one machine runs every level it can).
enum class CpuLevel : int { Portable = 0, Avx2 = 1, Avx512 = 2 };

const char* cpu_level_name(CpuLevel level);
// The highest level this CPU (and this build) can run.
CpuLevel best_cpu_level();
// The level the kernels run at. Throws std::invalid_argument when PYMAKEMORE_CPU_LEVEL names
// no level, or one above best_cpu_level().
CpuLevel cpu_level();
// Parses a level's name (as cpu_level_name writes it) and makes it the kernels' level; throws
// std::invalid_argument for an unknown name or a level above best_cpu_level().
void set_cpu_level(const char* name);

// The kernels: each signature is written once, in kernel_functions.inc.
#include "pymakemore/kernel_declarations.inc"

// Explicit instantiations of a kernel template for every dtype (and index type) the ops use,
// from its name alone (its signature comes from its declaration).
#define PYMAKEMORE_INSTANTIATE_T(name)              \
  template decltype(name<float>) name<float>;       \
  template decltype(name<double>) name<double>;
#define PYMAKEMORE_INSTANTIATE_TI(name)                              \
  template decltype(name<float, int32_t>) name<float, int32_t>;     \
  template decltype(name<float, int64_t>) name<float, int64_t>;     \
  template decltype(name<double, int32_t>) name<double, int32_t>;   \
  template decltype(name<double, int64_t>) name<double, int64_t>;

}  // namespace pymakemore
