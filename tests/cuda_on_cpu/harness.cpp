// The CUDA kernels of csrc/cuda executed on the CPU (HIP-CPU, through convert.py and the shim)
// and checked against their csrc/cpu twins. For each launcher of cuda_kernels.h, across dtypes,
// index types, edge shapes and special values:
//   - the results agree with the CPU kernel's (float32 inputs for the float16/bfloat16 cases);
//   - no launch breaks the GPU's limits (grid, block, shared memory, __launch_bounds__), no
//     block's threads diverge at a barrier or a warp's lanes at a shuffle (HIP-CPU's report);
//   - every "device" buffer ends against a page that faults on access, outputs and workspace
//     start as NaN bytes, shared memory too at each block's start;
//   - the launcher returns 0 and leaves CUDA's last-error variable clear;
// and, for one case per launcher path, each launch and API call is made to fail in turn: the
// launcher must return that error, launch nothing after it, and leave no stale error behind.
// Indices and targets out of range must stop the kernel with the CPU ops' message: those
// cases run in a child process (`harness --trap NAME`), as a __trap ends the process here.
//
// Run it twice, with HIP_CPU_SIM_REVERSE unset and =1 (threads of a block in turns in two
// orders); `make cuda-on-cpu` does. Exit status 0 when every check passed.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "sim.h"

#include "pymakemore/cuda_kernels.h"
#include "pymakemore/kernels.h"

namespace pk = pymakemore;
namespace cu = pymakemore::cuda;
using cuda_on_cpu::state;

namespace {

// ---- reporting ----------------------------------------------------------------------------
long checks = 0, failures = 0;

void fail(const std::string& where, const std::string& what) {
  ++failures;
  if (failures <= 60) std::printf("FAIL %s: %s\n", where.c_str(), what.c_str());
}

void expect(bool ok, const std::string& where, const std::string& what) {
  ++checks;
  if (!ok) fail(where, what);
}

// ---- "device" memory: host pages, each buffer ending against a page that faults -------------
class Guarded {
 public:
  Guarded(size_t bytes, size_t align) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t rounded = (bytes + align - 1) / align * align;
    pages_ = (rounded + page - 1) / page + 1;
    base_ = static_cast<char*>(
        mmap(nullptr, pages_ * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (base_ == MAP_FAILED) {
      std::perror("mmap");
      std::exit(2);
    }
    mprotect(base_ + (pages_ - 1) * page, page, PROT_NONE);
    data_ = base_ + (pages_ - 1) * page - rounded;
    std::memset(data_, 0xff, rounded);  // NaN bytes: what a kernel forgets to write shows
  }
  ~Guarded() { munmap(base_, pages_ * static_cast<size_t>(sysconf(_SC_PAGESIZE))); }
  Guarded(const Guarded&) = delete;
  Guarded& operator=(const Guarded&) = delete;
  void* data() const { return data_; }

 private:
  char* base_;
  char* data_;
  size_t pages_;
};

template <typename T>
struct Buffer {
  Guarded memory;
  size_t n;
  explicit Buffer(size_t count) : memory(count * sizeof(T), alignof(T)), n(count) {}
  Buffer(const std::vector<T>& values) : Buffer(values.size()) {
    if (!values.empty()) std::memcpy(memory.data(), values.data(), values.size() * sizeof(T));
  }
  T* get() const { return static_cast<T*>(memory.data()); }
  T& operator[](size_t i) const { return get()[i]; }
};

// ---- element types --------------------------------------------------------------------------
template <typename T> struct Info;
template <> struct Info<float> {
  static constexpr cu::Dtype dtype = cu::Dtype::Float32;
  static constexpr const char* name = "float32";
  static constexpr double rtol = 2e-5;
};
template <> struct Info<double> {
  static constexpr cu::Dtype dtype = cu::Dtype::Float64;
  static constexpr const char* name = "float64";
  static constexpr double rtol = 1e-11;  // a float step anywhere in the path shows
};
template <> struct Info<__half> {
  static constexpr cu::Dtype dtype = cu::Dtype::Float16;
  static constexpr const char* name = "float16";
  static constexpr double rtol = 2e-3;
};
template <> struct Info<__nv_bfloat16> {
  static constexpr cu::Dtype dtype = cu::Dtype::BFloat16;
  static constexpr const char* name = "bfloat16";
  static constexpr double rtol = 1.6e-2;
};

// The CPU kernels' element type for T: float16 and bfloat16 compute in float there too.
template <typename T>
using Ref = std::conditional_t<std::is_same_v<T, double>, double, float>;

double to_double(float v) { return v; }
double to_double(double v) { return v; }
double to_double(__half v) { return __half2float(v); }
double to_double(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
T from_double(double v) {
  if constexpr (std::is_same_v<T, __half>) return __float2half(float(v));
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16(float(v));
  else return T(v);
}

template <typename I> const char* index_name() { return sizeof(I) == 8 ? "int64" : "int32"; }
template <typename I> cu::IndexDtype index_dtype() {
  return sizeof(I) == 8 ? cu::IndexDtype::Int64 : cu::IndexDtype::Int32;
}

// Values rounded to T, so the CPU kernel reads exactly what the CUDA kernel reads.
template <typename T>
std::vector<T> as(const std::vector<double>& v) {
  std::vector<T> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = from_double<T>(v[i]);
  return out;
}

template <typename R, typename T>
std::vector<R> widen(const std::vector<T>& v) {
  std::vector<R> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = R(to_double(v[i]));
  return out;
}

// A reproducible stream of numbers.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9e3779b97f4a7c15ULL + 1) {}
  uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  double uniform(double lo, double hi) { return lo + (hi - lo) * double(next() >> 11) * 0x1p-53; }
  int64_t below(int64_t n) { return int64_t(next() % uint64_t(n)); }
  std::vector<double> values(size_t n, double lo, double hi) {
    std::vector<double> v(n);
    for (auto& x : v) x = uniform(lo, hi);
    return v;
  }
};

// |got - want| <= rtol * (|want| + scale) + allowance[i], scale = the largest |want| (so a sum
// of terms of mixed signs is judged on its terms' size) or `floor`, where the values come from
// cancelling terms of that size; NaN matches NaN, an infinity itself.
template <typename T, typename W>
void compare(const std::string& where, const char* what, const T* got, const std::vector<W>& want,
             double rtol_factor = 1.0, double floor = 0.0,
             const std::vector<double>* allowance = nullptr) {
  double scale = floor;
  for (const W& w : want)
    if (std::isfinite(double(w))) scale = std::max(scale, std::fabs(double(w)));
  const double rtol = Info<T>::rtol * rtol_factor;
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = to_double(got[i]), w = double(want[i]);
    const double extra = allowance ? (*allowance)[i] : 0.0;
    bool ok;
    if (std::isnan(w)) ok = std::isnan(g);
    else if (std::isinf(w)) ok = g == w;
    else ok = std::isfinite(g) && std::fabs(g - w) <= rtol * (std::fabs(w) + scale) + extra + 1e-300;
    if (!ok && bad++ == 0) first = i;
  }
  ++checks;
  if (bad) {
    char line[256];
    std::snprintf(line, sizeof line, "%s: %zu of %zu differ; first at %zu: got %.17g, want %.17g",
                  what, bad, want.size(), first, to_double(got[first]), double(want[first]));
    fail(where, line);
  }
}

// For a long reduction in float the CPU kernel's own error can exceed compare()'s bound: there
// the CUDA result must be within that bound of the float64 result, or no further from it than
// twice the CPU kernel's float result is.
template <typename T, typename R>
void compare_with_exact(const std::string& where, const char* what, const T* got,
                        const std::vector<R>& cpu, const std::vector<double>& exact) {
  std::vector<double> allowance(exact.size());
  for (size_t i = 0; i < exact.size(); ++i)
    allowance[i] = 2.0 * std::fabs(double(cpu[i]) - exact[i]);
  compare(where, what, got, exact, 1.0, 0.0, &allowance);
}

// ---- running a launcher ---------------------------------------------------------------------
void reset_state() {
  auto& s = state();
  s.calls = 0;
  s.fail_at = 0;
  s.injected = cudaSuccess;
  s.launches = 0;
  s.launches_after_failure = 0;
  s.last_error = cudaSuccess;
  s.violations.clear();
}

void report_violations(const std::string& where) {
  ++checks;
  for (const auto& v : state().violations) fail(where, v);
  const uint64_t divergences = hip::detail::sim::divergences.exchange(0);
  ++checks;
  if (divergences)
    fail(where, std::to_string(divergences) +
                    " barrier or shuffle divergence(s) reported by the simulator (above)");
}

// A good run: status 0, no broken limit, the last error left clear. Returns the number of
// calls that can fail (launches and API calls) it made.
long run_clean(const std::string& where, const std::function<cu::Status()>& run) {
  reset_state();
  const cu::Status status = run();
  expect(status == 0, where, "returned " + std::to_string(status) + " (" +
                                 cudaGetErrorString(cudaError_t(status)) + ")");
  expect(cudaPeekAtLastError() == cudaSuccess, where, "left an error in cudaGetLastError");
  report_violations(where);
  const long calls = state().calls;
  if (calls == 0) {
    // nothing launched: nothing to report, even when an earlier error is still unread
    reset_state();
    state().last_error = cudaErrorLaunchFailure;
    expect(run() == 0, where, "launched nothing but returned an earlier, unrelated error");
    reset_state();
  }
  return calls;
}

// Each launch and API call of the run made to fail in turn.
void run_failing_each_call(const std::string& where, const std::function<cu::Status()>& run) {
  const long calls = run_clean(where, run);
  for (long k = 1; k <= calls; ++k) {
    reset_state();
    state().fail_at = k;
    const cu::Status status = run();
    const std::string at = where + " [call " + std::to_string(k) + " of " +
                           std::to_string(calls) + " fails]";
    expect(state().injected != cudaSuccess, at, "the call was never made");
    expect(status == int(state().injected), at,
           "returned " + std::to_string(status) + ", not the failed call's error " +
               std::to_string(int(state().injected)));
    expect(state().launches_after_failure == 0, at,
           std::to_string(state().launches_after_failure) + " call(s) made after the failure");
    expect(cudaPeekAtLastError() == cudaSuccess, at, "left the error in cudaGetLastError");
    report_violations(at);
  }
  reset_state();
}

// ---- embedding ------------------------------------------------------------------------------
template <typename T, typename I>
void embedding_case(int64_t n, int64_t rows, int64_t dim, int64_t padding_idx, bool scale_by_freq,
                    bool inject, Rng& rng) {
  using R = Ref<T>;
  char name[160];
  std::snprintf(name, sizeof name, "embedding %s/%s n=%lld rows=%lld dim=%lld pad=%lld freq=%d",
                Info<T>::name, index_name<I>(), (long long)n, (long long)rows, (long long)dim,
                (long long)padding_idx, int(scale_by_freq));
  const std::vector<T> weight = as<T>(rng.values(static_cast<size_t>(rows * dim), -2, 2));
  std::vector<I> indices(static_cast<size_t>(n));
  // few distinct rows, so rows repeat (the backward's sums) and some stay unused
  for (auto& i : indices) i = I(rows > 0 ? rng.below(std::min<int64_t>(rows, 1 + n / 3)) : 0);
  const std::vector<T> grad_out = as<T>(rng.values(static_cast<size_t>(n * dim), -1, 1));

  // forward
  if (rows > 0 || n == 0) {
    Buffer<T> w(weight), out(static_cast<size_t>(n * dim));
    Buffer<I> idx(indices);
    auto run = [&] {
      return cu::embedding_forward(Info<T>::dtype, index_dtype<I>(), idx.get(), n, w.get(), rows,
                                   dim, out.get(), nullptr);
    };
    if (inject) run_failing_each_call(std::string(name) + " forward", run);
    run_clean(std::string(name) + " forward", run);
    std::vector<R> want(static_cast<size_t>(n * dim));
    const std::vector<R> w_ref = widen<R>(weight);
    pk::embedding_forward<R, I>(indices.data(), n, w_ref.data(), rows, dim, want.data(),
                                pk::serial_for);
    compare(std::string(name) + " forward", "out", out.get(), want, 0.0);  // a copy: exact
  }
  // backward
  {
    Buffer<T> g(grad_out), gw(static_cast<size_t>(rows * dim));
    Buffer<I> idx(indices);
    Buffer<char> ws(cu::embedding_backward_workspace_bytes(index_dtype<I>(), n, rows));
    auto run = [&] {
      return cu::embedding_backward(Info<T>::dtype, index_dtype<I>(), g.get(), idx.get(), n, rows,
                                    dim, padding_idx, scale_by_freq, gw.get(), ws.get(), nullptr);
    };
    if (inject) run_failing_each_call(std::string(name) + " backward", run);
    run_clean(std::string(name) + " backward", run);
    std::vector<R> want(static_cast<size_t>(rows * dim));
    const std::vector<R> g_ref = widen<R>(grad_out);
    pk::embedding_backward<R, I>(g_ref.data(), indices.data(), n, rows, dim, padding_idx,
                                 scale_by_freq, want.data(), pk::serial_for);
    compare(std::string(name) + " backward", "grad_weight", gw.get(), want);
  }
}

template <typename T, typename I>
void embedding_cases(Rng& rng) {
  const bool first = std::is_same_v<T, float> && sizeof(I) == 8;
  embedding_case<T, I>(0, 5, 3, -1, false, first, rng);       // no indices
  embedding_case<T, I>(0, 0, 3, -1, false, false, rng);       // an empty table
  embedding_case<T, I>(1, 1, 1, -1, false, false, rng);
  embedding_case<T, I>(7, 5, 0, -1, false, false, rng);       // rows of no width
  embedding_case<T, I>(7, 5, 3, -1, false, first, rng);
  embedding_case<T, I>(96, 27, 10, 0, false, false, rng);     // the lecture's table, padding row
  embedding_case<T, I>(96, 27, 10, -1, true, false, rng);     // scale_grad_by_freq
  embedding_case<T, I>(300, 30, 257, 2, true, false, rng);    // rows wider than a block
  embedding_case<T, I>(2000, 4, 5, -1, false, false, rng);    // long runs of one row
}

// ---- linear, linear_tanh --------------------------------------------------------------------
template <typename T>
void linear_case(int64_t n, int64_t k, int64_t h, pk::Activation act, bool bias, int grads,
                 bool inject, Rng& rng) {
  using R = Ref<T>;
  char name[160];
  std::snprintf(name, sizeof name, "linear %s n=%lld k=%lld h=%lld %s bias=%d grads=%d",
                Info<T>::name, (long long)n, (long long)k, (long long)h,
                act == pk::Activation::Tanh ? "tanh" : "identity", int(bias), grads);
  const std::vector<T> x = as<T>(rng.values(static_cast<size_t>(n * k), -1, 1));
  const std::vector<T> w = as<T>(rng.values(static_cast<size_t>(h * k), -0.5, 0.5));
  const std::vector<T> b = as<T>(rng.values(bias ? static_cast<size_t>(h) : 0, -0.5, 0.5));
  const std::vector<T> gy = as<T>(rng.values(static_cast<size_t>(n * h), -1, 1));
  const std::vector<R> x_ref = widen<R>(x), w_ref = widen<R>(w), b_ref = widen<R>(b),
                       gy_ref = widen<R>(gy);

  std::vector<R> y_ref(static_cast<size_t>(n * h));
  pk::linear_forward<R>(x_ref.data(), w_ref.data(), bias ? b_ref.data() : nullptr, n, k, h, act,
                        y_ref.data(), pk::serial_for);
  Buffer<T> xb(x), wb(w), bb(b), y(static_cast<size_t>(n * h));
  auto forward = [&] {
    return cu::linear_forward(Info<T>::dtype, xb.get(), wb.get(), bias ? bb.get() : nullptr, n,
                              k, h, act, y.get(), nullptr);
  };
  if (inject) run_failing_each_call(std::string(name) + " forward", forward);
  run_clean(std::string(name) + " forward", forward);
  compare(std::string(name) + " forward", "y", y.get(), y_ref);

  // the backward reads the forward's output as the CUDA path saved it
  std::vector<T> y_saved(static_cast<size_t>(n * h));
  for (size_t i = 0; i < y_saved.size(); ++i) y_saved[i] = y[i];
  const std::vector<R> y_saved_ref = widen<R>(y_saved);
  const bool want_x = grads & 1, want_w = grads & 2, want_b = bias && (grads & 4);
  std::vector<R> gx_ref(static_cast<size_t>(n * k)), gw_ref(static_cast<size_t>(h * k)), gb_ref(static_cast<size_t>(h));
  pk::linear_backward<R>(gy_ref.data(), y_saved_ref.data(), x_ref.data(), w_ref.data(), n, k, h,
                         act, want_x ? gx_ref.data() : nullptr, want_w ? gw_ref.data() : nullptr,
                         want_b ? gb_ref.data() : nullptr, pk::serial_for);
  Buffer<T> gyb(gy), ys(y_saved), gx(static_cast<size_t>(n * k)), gw(static_cast<size_t>(h * k)), gb(static_cast<size_t>(h));
  Buffer<char> ws(cu::linear_backward_workspace_bytes(n, k, h));
  auto backward = [&] {
    return cu::linear_backward(Info<T>::dtype, gyb.get(), ys.get(), xb.get(), wb.get(), n, k, h,
                               act, want_x ? gx.get() : nullptr, want_w ? gw.get() : nullptr,
                               want_b ? gb.get() : nullptr, ws.get(), nullptr);
  };
  if (inject) run_failing_each_call(std::string(name) + " backward", backward);
  run_clean(std::string(name) + " backward", backward);
  // the float64 result from the same inputs (and the same saved y)
  std::vector<double> gx64(static_cast<size_t>(n * k)), gw64(static_cast<size_t>(h * k)),
      gb64(static_cast<size_t>(h));
  const std::vector<double> gy64 = widen<double>(gy), y64 = widen<double>(y_saved),
                            x64 = widen<double>(x), w64 = widen<double>(w);
  pk::linear_backward<double>(gy64.data(), y64.data(), x64.data(), w64.data(), n, k, h, act,
                              want_x ? gx64.data() : nullptr, want_w ? gw64.data() : nullptr,
                              want_b ? gb64.data() : nullptr, pk::serial_for);
  const std::string bwd = std::string(name) + " backward";
  if (want_x) compare_with_exact(bwd, "grad_x", gx.get(), gx_ref, gx64);
  if (want_w) compare_with_exact(bwd, "grad_w", gw.get(), gw_ref, gw64);
  if (want_b) compare_with_exact(bwd, "grad_b", gb.get(), gb_ref, gb64);
}

template <typename T>
void linear_cases(Rng& rng) {
  const bool first = std::is_same_v<T, float>;
  const auto tanh = pk::Activation::Tanh, identity = pk::Activation::Identity;
  linear_case<T>(1, 1, 1, tanh, true, 7, first, rng);
  linear_case<T>(3, 5, 7, identity, false, 7, false, rng);
  linear_case<T>(64, 64, 64, tanh, true, 7, false, rng);     // one whole tile
  linear_case<T>(65, 17, 63, tanh, true, 7, false, rng);     // tile edges
  linear_case<T>(130, 30, 200, tanh, true, 7, false, rng);   // the lecture's hidden layer
  linear_case<T>(32, 200, 27, identity, true, 5, false, rng);  // its head: grad_x and grad_b
  linear_case<T>(9, 0, 4, tanh, true, 7, false, rng);        // no inputs: y = tanh(b)
  linear_case<T>(0, 5, 4, tanh, true, 7, false, rng);        // no rows
  linear_case<T>(5, 3, 0, tanh, true, 7, false, rng);        // no outputs
  linear_case<T>(4500, 3, 2, tanh, true, 6, false, rng);     // grad_w and grad_b in pieces
}

// Grids past the limits of a launch's y and z (65,535): row tiles numbered along x, loops that
// stride over what one grid does not cover.
void huge_grid_cases(Rng& rng) {
  // 65,537 row tiles of 64 in the forward and grad_x products; 64 pieces of grad_w
  linear_case<float>(4194305, 1, 1, pk::Activation::Tanh, true, 7, false, rng);
  // 524,281 rows of an embedding's gradient, one block each, more than the grid's 524,280
  embedding_case<float, int32_t>(3, 524281, 1, -1, false, false, rng);
}

// ---- cross entropy --------------------------------------------------------------------------
// Special: +-inf and NaN logits; HugeWeights: class weights whose sum overflows float (the
// targets in the classes of weight 1); Huge: rows of tied logits near +-1e17 and 1e30, and rows
// near 1e12 a unit apart (their lse beyond what one float64 holds of log(sum)); ZeroWeights:
// every target in a class of weight 0 (a mean is NaN, label smoothing or not, as torch's)
enum class Values { Normal, Large, Special, HugeWeights, Huge, ZeroWeights };

template <typename T, typename I>
void cross_entropy_case(int64_t n, int64_t c, pk::Reduction reduction, bool weighted,
                        double smoothing, Values values, bool with_grad, bool in_place,
                        bool inject, Rng& rng) {
  using R = Ref<T>;
  const char* reductions[] = {"none", "mean", "sum"};
  const char* kinds[] = {"normal", "large", "special", "huge-weights", "huge", "zero-weights"};
  char name[200];
  std::snprintf(name, sizeof name,
                "cross_entropy %s/%s n=%lld c=%lld %s weights=%d eps=%g %s grad=%d in_place=%d",
                Info<T>::name, index_name<I>(), (long long)n, (long long)c,
                reductions[int(reduction)], int(weighted), smoothing, kinds[int(values)],
                int(with_grad), int(in_place));
  const int64_t ignore_index = c > 2 ? 1 : -100;
  std::vector<double> raw = rng.values(static_cast<size_t>(n * c), -4, 4);
  if (values == Values::Huge)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < c; ++j)
        raw[static_cast<size_t>(i * c + j)] = i % 3 == 0 ? (i % 2 ? -1e17 : 1e17)
                                              : i % 3 == 1 ? 1e30
                                                           : 1e12 + double(j % 7);
  if (values == Values::Large)  // a large common offset per row: lse must keep its precision
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < c; ++j) raw[static_cast<size_t>(i * c + j)] += (i % 2 ? 1e4 : -3e3);
  std::vector<I> target(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) target[static_cast<size_t>(i)] = I(rng.below(c));
  if (n > 2) target[1] = I(ignore_index);  // an ignored row (class 1 where c > 2)
  if (values == Values::Special && c > 0) {
    const double inf = std::numeric_limits<double>::infinity();
    for (int64_t i = 0; i < n; ++i) {
      double* row = raw.data() + i * c;
      switch (i % 5) {
        case 0: row[c - 1] = -inf; break;                 // one impossible class
        case 1: for (int64_t j = 0; j < c; ++j) row[j] = -inf; break;  // every class
        case 2: row[0] = inf; break;                      // a certain class
        case 3: row[c / 2] = std::nan(""); break;
        default: break;
      }
    }
  }
  const std::vector<T> logits = as<T>(raw);
  std::vector<double> raw_weight = rng.values(weighted ? static_cast<size_t>(c) : 0, 0.25, 2);
  if (values == Values::HugeWeights) {
    for (int64_t j = 0; j < c; ++j) raw_weight[static_cast<size_t>(j)] = j < 2 ? 3e38 : 1.0;
    for (int64_t i = 0; i < n; ++i) target[static_cast<size_t>(i)] = I(2 + rng.below(c - 2));
  }
  if (values == Values::ZeroWeights) {
    raw_weight[0] = 0.0;
    for (int64_t i = 0; i < n; ++i) target[static_cast<size_t>(i)] = I(0);
  }
  const std::vector<T> weight = as<T>(raw_weight);
  const bool per_row = reduction == pk::Reduction::None;
  const std::vector<T> grad_loss = as<T>(rng.values(per_row ? static_cast<size_t>(n) : 1, -2, 2));
  const pk::CrossEntropyOptions opt{reduction, ignore_index, smoothing};

  const std::vector<R> logits_ref = widen<R>(logits), weight_ref = widen<R>(weight),
                       grad_loss_ref = widen<R>(grad_loss);
  std::vector<R> loss_ref(per_row ? static_cast<size_t>(n) : 1), grad_ref(static_cast<size_t>(n * c));
  std::vector<double> lse_ref(static_cast<size_t>(n));
  const int64_t bad = pk::cross_entropy_forward<R, I>(
      logits_ref.data(), target.data(), weighted ? weight_ref.data() : nullptr, n, c, opt,
      loss_ref.data(), lse_ref.data(), with_grad ? grad_ref.data() : nullptr, pk::serial_for);
  expect(bad == pk::kAllValid, name, "the CPU kernel refused the targets");

  // forward
  Buffer<T> x(logits), w(weight), loss(loss_ref.size()), grad(static_cast<size_t>(n * c));
  Buffer<double> lse(static_cast<size_t>(n));
  Buffer<I> t(target);
  Buffer<char> ws(cu::cross_entropy_workspace_bytes(n));
  auto forward = [&] {
    if (in_place) std::memcpy(x.get(), logits.data(), logits.size() * sizeof(T));
    return cu::cross_entropy_forward(Info<T>::dtype, index_dtype<I>(), x.get(), t.get(),
                                     weighted ? w.get() : nullptr, n, c, opt, loss.get(),
                                     lse.get(), with_grad ? (in_place ? x.get() : grad.get())
                                                          : nullptr,
                                     ws.get(), nullptr);
  };
  const std::string fwd = std::string(name) + " forward";
  if (inject) run_failing_each_call(fwd, forward);
  run_clean(fwd, forward);
  compare(fwd, "loss", loss.get(), loss_ref);
  // (lse is float64 whatever T; from float32 arithmetic below float64)
  compare(fwd, "lse", lse.get(), lse_ref, std::is_same_v<T, double> ? 1.0 : 1e6);
  if (with_grad) compare(fwd, "grad", in_place ? x.get() : grad.get(), grad_ref);
  if (in_place || with_grad) return;  // the backward is checked on the plain cases

  // backward, from the forward's lse
  std::vector<R> bgrad_ref(static_cast<size_t>(n * c));
  pk::cross_entropy_backward<R, I>(grad_loss_ref.data(), logits_ref.data(), target.data(),
                                   weighted ? weight_ref.data() : nullptr, lse_ref.data(), n, c,
                                   opt, bgrad_ref.data(), pk::serial_for);
  Buffer<T> gl(grad_loss), bgrad(static_cast<size_t>(n * c));
  Buffer<double> lse_in(lse_ref);
  auto backward = [&] {
    return cu::cross_entropy_backward(Info<T>::dtype, index_dtype<I>(), gl.get(), x.get(),
                                      t.get(), weighted ? w.get() : nullptr, lse_in.get(), n, c,
                                      opt, bgrad.get(), ws.get(), nullptr);
  };
  const std::string bwd = std::string(name) + " backward";
  if (inject) run_failing_each_call(bwd, backward);
  run_clean(bwd, backward);
  compare(bwd, "grad", bgrad.get(), bgrad_ref);
}

template <typename T, typename I>
void cross_entropy_cases(Rng& rng) {
  const bool first = std::is_same_v<T, float> && sizeof(I) == 8;
  const auto none = pk::Reduction::None, mean = pk::Reduction::Mean, sum = pk::Reduction::Sum;
  const auto normal = Values::Normal, large = Values::Large, special = Values::Special;
  // (n, c, reduction, weighted, smoothing, values, with_grad, in_place, inject)
  cross_entropy_case<T, I>(0, 5, none, false, 0.0, normal, false, false, first, rng);
  cross_entropy_case<T, I>(0, 5, mean, true, 0.0, normal, true, false, first, rng);
  cross_entropy_case<T, I>(1, 1, mean, false, 0.0, normal, false, false, false, rng);
  cross_entropy_case<T, I>(3, 5, sum, false, 0.1, normal, false, false, false, rng);
  for (const int64_t c : {27, 1024, 1025, 3000}) {  // warp rows, their limit, block rows
    const bool inject_here = first && (c == 27 || c == 3000);
    cross_entropy_case<T, I>(37, c, none, true, 0.1, normal, false, false, inject_here, rng);
    cross_entropy_case<T, I>(37, c, mean, true, 0.1, normal, true, false, inject_here, rng);
    cross_entropy_case<T, I>(37, c, mean, false, 0.0, normal, false, false, inject_here, rng);
    cross_entropy_case<T, I>(37, c, sum, false, 0.2, large, true, false, false, rng);
    cross_entropy_case<T, I>(37, c, mean, true, 0.0, normal, true, true, false, rng);
    cross_entropy_case<T, I>(37, c, sum, false, 0.1, normal, true, true, false, rng);
  }
  for (const int64_t c : {7, 1500}) {
    cross_entropy_case<T, I>(20, c, none, false, 0.0, special, false, false, false, rng);
    cross_entropy_case<T, I>(20, c, none, true, 0.1, special, false, false, false, rng);
    cross_entropy_case<T, I>(20, c, mean, false, 0.0, special, false, false, false, rng);
  }
  cross_entropy_case<T, I>(4, 3, mean, true, 0.0, large, true, false, false, rng);
  if constexpr (!std::is_same_v<T, __half>) {  // (3e38 and 1e17 are beyond float16's range)
    for (const int64_t c : {5, 1500})
      for (const auto reduction : {mean, none})
        cross_entropy_case<T, I>(9, c, reduction, false, 0.0, Values::Huge,
                                 reduction != none, false, false, rng);
    cross_entropy_case<T, I>(6, 4, mean, true, 0.0, Values::HugeWeights, true, false, false, rng);
    cross_entropy_case<T, I>(6, 4, sum, true, 0.0, Values::HugeWeights, false, false, false, rng);
    cross_entropy_case<T, I>(6, 4, mean, true, 0.1, Values::ZeroWeights, false, false, false, rng);
    cross_entropy_case<T, I>(6, 4, mean, true, 0.1, Values::ZeroWeights, true, false, false, rng);
  }
  cross_entropy_case<T, I>(300, 27, mean, false, 0.0, normal, true, false, false, rng);
}

template <typename T>
void scale_grad_cases(Rng& rng) {
  for (const double factor : {1.0, 2.5, 0.0}) {
    for (const int64_t n : {0, 1, 1000}) {
      char name[96];
      std::snprintf(name, sizeof name, "scale_grad %s n=%lld factor=%g", Info<T>::name,
                    (long long)n, factor);
      const std::vector<T> grad = as<T>(rng.values(static_cast<size_t>(n), -1, 1));
      Buffer<T> g(grad), f(std::vector<T>{from_double<T>(factor)});
      auto run = [&] {
        std::memcpy(g.get(), grad.data(), grad.size() * sizeof(T));
        return cu::scale_grad(Info<T>::dtype, g.get(), n, f.get(), nullptr);
      };
      if (std::is_same_v<T, float> && n == 1000) run_failing_each_call(name, run);
      run_clean(name, run);
      std::vector<double> want(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) want[static_cast<size_t>(i)] = to_double(from_double<T>(to_double(grad[static_cast<size_t>(i)]) * factor));
      compare(name, "grad", g.get(), want);
    }
  }
}

// ---- batch_norm_tanh -------------------------------------------------------------------------
template <typename T>
void batch_norm_case(int64_t m, int64_t c, bool training, bool unbiased, bool affine,
                     bool running, double offset, bool inject, Rng& rng) {
  char name[160];
  std::snprintf(name, sizeof name,
                "batch_norm_tanh %s m=%lld c=%lld training=%d unbiased=%d affine=%d running=%d "
                "offset=%g", Info<T>::name, (long long)m, (long long)c, int(training),
                int(unbiased), int(affine), int(running), offset);
  std::vector<double> raw = rng.values(static_cast<size_t>(m * c), -2, 2);
  for (auto& v : raw) v += offset;  // a mean large against the spread
  const std::vector<T> x = as<T>(raw);
  const std::vector<T> w = as<T>(rng.values(affine ? static_cast<size_t>(c) : 0, 0.5, 1.5));
  const std::vector<T> b = as<T>(rng.values(affine ? static_cast<size_t>(c) : 0, -1, 1));
  const std::vector<T> rm0 = as<T>(rng.values(running ? static_cast<size_t>(c) : 0, -1, 1));
  const std::vector<T> rv0 = as<T>(rng.values(running ? static_cast<size_t>(c) : 0, 0.5, 2));
  const std::vector<T> gy = as<T>(rng.values(static_cast<size_t>(m * c), -1, 1));
  const double momentum = 0.1, eps = 1e-5;

  std::vector<T> rm_ref = rm0, rv_ref = rv0, y_ref(static_cast<size_t>(m * c)),
                 mean_ref(static_cast<size_t>(c)), invstd_ref(static_cast<size_t>(c));
  pk::batch_norm_tanh_forward<T>(x.data(), m, c, affine ? w.data() : nullptr,
                                 affine ? b.data() : nullptr, running ? rm_ref.data() : nullptr,
                                 running ? rv_ref.data() : nullptr, training, momentum, eps,
                                 unbiased, y_ref.data(), mean_ref.data(), invstd_ref.data(),
                                 pk::serial_for);
  Buffer<T> xb(x), wb(w), bb(b), rm(rm0), rv(rv0), y(static_cast<size_t>(m * c)),
      mean(static_cast<size_t>(c)), invstd(static_cast<size_t>(c));
  auto forward = [&] {
    if (running) {  // each run from the same statistics
      std::memcpy(rm.get(), rm0.data(), rm0.size() * sizeof(T));
      std::memcpy(rv.get(), rv0.data(), rv0.size() * sizeof(T));
    }
    return cu::batch_norm_tanh_forward(Info<T>::dtype, xb.get(), m, c,
                                       affine ? wb.get() : nullptr, affine ? bb.get() : nullptr,
                                       running ? rm.get() : nullptr,
                                       running ? rv.get() : nullptr, training, momentum, eps,
                                       unbiased, y.get(), mean.get(), invstd.get(), nullptr);
  };
  const std::string fwd = std::string(name) + " forward";
  if (inject) run_failing_each_call(fwd, forward);
  run_clean(fwd, forward);
  compare(fwd, "y", y.get(), y_ref);
  compare(fwd, "save_mean", mean.get(), mean_ref);
  compare(fwd, "save_invstd", invstd.get(), invstd_ref);
  if (running) {
    compare(fwd, "running_mean", rm.get(), rm_ref);
    compare(fwd, "running_var", rv.get(), rv_ref);
  }

  // backward, from the CPU kernel's saved output and statistics (the same inputs for both)
  std::vector<T> gx_ref(static_cast<size_t>(m * c)), gw_ref(static_cast<size_t>(c)),
      gb_ref(static_cast<size_t>(c));
  pk::batch_norm_tanh_backward<T>(gy.data(), y_ref.data(), x.data(), m, c,
                                  affine ? w.data() : nullptr, mean_ref.data(),
                                  invstd_ref.data(), training, unbiased, gx_ref.data(),
                                  affine ? gw_ref.data() : nullptr,
                                  affine ? gb_ref.data() : nullptr, pk::serial_for);
  Buffer<T> gyb(gy), ys(y_ref), means(mean_ref), invstds(invstd_ref),
      gx(static_cast<size_t>(m * c)), gw(static_cast<size_t>(c)), gb(static_cast<size_t>(c));
  auto backward = [&] {
    return cu::batch_norm_tanh_backward(Info<T>::dtype, gyb.get(), ys.get(), xb.get(), m, c,
                                        affine ? wb.get() : nullptr, means.get(), invstds.get(),
                                        training, unbiased, gx.get(),
                                        affine ? gw.get() : nullptr,
                                        affine ? gb.get() : nullptr, nullptr);
  };
  const std::string bwd = std::string(name) + " backward";
  if (inject) run_failing_each_call(bwd, backward);
  run_clean(bwd, backward);
  // grad_x is a difference of terms of size |gy| |w| invstd: judged on that size
  double terms = 0.0;
  for (int64_t j = 0; j < c; ++j)
    terms = std::max(terms, (affine ? std::fabs(to_double(w[j])) : 1.0) *
                                std::fabs(to_double(invstd_ref[j])));
  compare(bwd, "grad_x", gx.get(), gx_ref, 1.0, terms);
  if (affine) {
    compare(bwd, "grad_weight", gw.get(), gw_ref);
    compare(bwd, "grad_bias", gb.get(), gb_ref);
  }
}

template <typename T>
void batch_norm_cases(Rng& rng) {
  const bool first = std::is_same_v<T, float>;
  for (const bool training : {true, false})
    for (const bool unbiased : {false, true}) {
      batch_norm_case<T>(32, 200, training, unbiased, true, true, 0.0, first && training, rng);
      batch_norm_case<T>(2, 1, training, unbiased, false, training ? false : true, 0.0, false,
                         rng);
      batch_norm_case<T>(130, 33, training, unbiased, true, true, 0.0, false, rng);  // tiles
    }
  batch_norm_case<T>(4 * 32, 128, true, true, true, true, 0.0, false, rng);  // WaveNet's
  batch_norm_case<T>(20000, 5, true, false, true, true, 1000.0, false, rng);  // long, offset
  batch_norm_case<T>(3, 70000, true, true, true, true, 0.0, false, rng);  // many column tiles
}

void batch_norm_refuses_half_types() {
  // the torch layer computes float16 and bfloat16 in float32: the launchers refuse them,
  // launching nothing and leaving no error behind
  for (const cu::Dtype dtype : {cu::Dtype::Float16, cu::Dtype::BFloat16}) {
    reset_state();
    const cu::Status status = cu::batch_norm_tanh_forward(
        dtype, nullptr, 2, 3, nullptr, nullptr, nullptr, nullptr, true, 0.1, 1e-5, true,
        nullptr, nullptr, nullptr, nullptr);
    expect(status == cudaErrorInvalidValue && state().launches == 0 &&
               cudaPeekAtLastError() == cudaSuccess,
           "batch_norm_tanh with a half type", "not refused cleanly");
  }
  reset_state();
}

// ---- the MLP engine -------------------------------------------------------------------------
void mlp_engine_case(int64_t steps, bool given_batches, bool inject, Rng& rng) {
  const pk::MlpShape s{27, 3, 10, 64, 32};
  const int64_t K = s.block * s.n_embd, n_train = 500;
  char name[96];
  std::snprintf(name, sizeof name, "mlp_train_steps steps=%lld batches=%s", (long long)steps,
                given_batches ? "given" : "drawn");
  std::vector<float> C(static_cast<size_t>(s.vocab * s.n_embd)), W1(static_cast<size_t>(s.n_hidden * K)),
      b1(static_cast<size_t>(s.n_hidden)), W2(static_cast<size_t>(s.vocab * s.n_hidden)), b2(static_cast<size_t>(s.vocab));
  for (auto* p : {&C, &W1, &b1, &W2, &b2})
    for (auto& v : *p) v = float(rng.uniform(-0.5, 0.5));
  std::vector<int64_t> X(static_cast<size_t>(n_train * s.block)), Y(static_cast<size_t>(n_train));
  for (auto& v : X) v = rng.below(s.vocab);
  for (auto& v : Y) v = rng.below(s.vocab);
  std::vector<float> lrs(static_cast<size_t>(steps));
  for (int64_t i = 0; i < steps; ++i) lrs[static_cast<size_t>(i)] = i % 2 ? 0.1f : 0.05f;
  std::vector<int64_t> batches(given_batches ? static_cast<size_t>(steps * s.batch) : 0);
  for (auto& v : batches) v = rng.below(n_train);
  const uint64_t seed = 1234;
  const int64_t first_step = 7;

  std::vector<float> Cr = C, W1r = W1, b1r = b1, W2r = W2, b2r = b2, losses_ref(static_cast<size_t>(steps));
  pk::mlp_train_steps(s, {Cr.data(), W1r.data(), b1r.data(), W2r.data(), b2r.data()}, X.data(),
                      Y.data(), n_train, lrs.data(), steps, first_step, seed,
                      given_batches ? batches.data() : nullptr, losses_ref.data(), 1);

  Buffer<float> Cd(C), W1d(W1), b1d(b1), W2d(W2), b2d(b2), lr(lrs), losses(static_cast<size_t>(steps));
  Buffer<int64_t> Xd(X), Yd(Y), bd(batches);
  auto run = [&] {
    std::memcpy(Cd.get(), C.data(), C.size() * 4);  // each run from the same start
    std::memcpy(W1d.get(), W1.data(), W1.size() * 4);
    std::memcpy(b1d.get(), b1.data(), b1.size() * 4);
    std::memcpy(W2d.get(), W2.data(), W2.size() * 4);
    std::memcpy(b2d.get(), b2.data(), b2.size() * 4);
    return cu::mlp_train_steps(s.vocab, s.block, s.n_embd, s.n_hidden, s.batch, Cd.get(),
                               W1d.get(), b1d.get(), W2d.get(), b2d.get(), Xd.get(), Yd.get(),
                               n_train, lr.get(), steps, first_step, seed,
                               given_batches ? bd.get() : nullptr, losses.get(), nullptr);
  };
  if (inject) run_failing_each_call(name, run);
  run_clean(name, run);
  compare(name, "losses", losses.get(), losses_ref, 5.0);
  compare(name, "C", Cd.get(), Cr, 5.0);
  compare(name, "W1", W1d.get(), W1r, 5.0);
  compare(name, "b1", b1d.get(), b1r, 5.0);
  compare(name, "W2", W2d.get(), W2r, 5.0);
  compare(name, "b2", b2d.get(), b2r, 5.0);
}

void mlp_engine_limits() {
  // an engine too large for one block's shared memory: refused, the error returned and cleared
  int64_t hidden = 200;
  while (cu::mlp_engine_shared_bytes(27, 3, 10, hidden, 32) <= cuda_on_cpu::kOptInSharedLimit)
    hidden *= 2;
  reset_state();
  const cu::Status status = cu::mlp_train_steps(27, 3, 10, hidden, 32, nullptr, nullptr, nullptr,
                                                nullptr, nullptr, nullptr, nullptr, 1, nullptr, 1,
                                                0, 0, nullptr, nullptr, nullptr);
  const std::string where = "mlp_train_steps too large for shared memory";
  expect(status != 0, where, "was not refused");
  expect(state().launches == 0, where, "launched");
  expect(cudaPeekAtLastError() == cudaSuccess, where, "left its error in cudaGetLastError");
  reset_state();
}

// ---- indices and targets out of range: each in a child process ------------------------------
struct TrapCase {
  const char* name;
  std::function<void()> run;
  const char* message;  // what the kernel prints before its trap
};

std::vector<TrapCase> trap_cases() {
  std::vector<TrapCase> cases;
  cases.push_back({"embedding_forward", [] {
    Buffer<float> w(std::vector<float>(10, 1.f)), out(8);
    Buffer<int64_t> idx(std::vector<int64_t>{0, 4, 5, 1});
    cu::embedding_forward(cu::Dtype::Float32, cu::IndexDtype::Int64, idx.get(), 4, w.get(), 5, 2,
                          out.get(), nullptr);
  }, "pymakemore::embedding: index 5 at position 2 is out of range [0, 5)"});
  cases.push_back({"embedding_forward_no_width", [] {
    Buffer<float> w(0), out(0);
    Buffer<int32_t> idx(std::vector<int32_t>{-1});
    cu::embedding_forward(cu::Dtype::Float32, cu::IndexDtype::Int32, idx.get(), 1, w.get(), 5, 0,
                          out.get(), nullptr);
  }, "pymakemore::embedding: index -1 at position 0 is out of range [0, 5)"});
  cases.push_back({"embedding_backward", [] {
    Buffer<double> g(std::vector<double>(6, 1.0)), gw(10);
    Buffer<int64_t> idx(std::vector<int64_t>{1, 0, 7});
    Buffer<char> ws(cu::embedding_backward_workspace_bytes(cu::IndexDtype::Int64, 3, 5));
    cu::embedding_backward(cu::Dtype::Float64, cu::IndexDtype::Int64, g.get(), idx.get(), 3, 5, 2,
                           -1, false, gw.get(), ws.get(), nullptr);
  }, "pymakemore::embedding_backward: index 7 at position 2 is out of range [0, 5)"});
  for (const auto reduction : {pk::Reduction::None, pk::Reduction::Mean}) {
    const bool mean = reduction == pk::Reduction::Mean;
    cases.push_back({mean ? "cross_entropy_forward_mean" : "cross_entropy_forward_none",
                     [reduction] {
      Buffer<float> x(std::vector<float>(12, 0.5f)), loss(4), grad(12);
      Buffer<double> lse(4);
      Buffer<int64_t> t(std::vector<int64_t>{0, 2, 3, 1});
      Buffer<char> ws(cu::cross_entropy_workspace_bytes(4));
      cu::cross_entropy_forward(cu::Dtype::Float32, cu::IndexDtype::Int64, x.get(), t.get(),
                                nullptr, 4, 3, {reduction, -100, 0.0}, loss.get(), lse.get(),
                                nullptr, ws.get(), nullptr);
    }, "pymakemore::cross_entropy: target 3 at position 2 is out of range [0, 3)"});
    cases.push_back({mean ? "cross_entropy_backward_mean" : "cross_entropy_backward_none",
                     [reduction] {
      Buffer<float> x(std::vector<float>(12, 0.5f)), gl(std::vector<float>(4, 1.f)), grad(12);
      Buffer<double> lse(std::vector<double>(4, 1.0));
      Buffer<int32_t> t(std::vector<int32_t>{0, 2, -2, 1});
      Buffer<char> ws(cu::cross_entropy_workspace_bytes(4));
      cu::cross_entropy_backward(cu::Dtype::Float32, cu::IndexDtype::Int32, gl.get(), x.get(),
                                 t.get(), nullptr, lse.get(), 4, 3, {reduction, -100, 0.0},
                                 grad.get(), ws.get(), nullptr);
    }, "pymakemore::cross_entropy_backward: target -2 at position 2 is out of range [0, 3)"});
  }
  cases.push_back({"mlp_train_steps", [] {
    const int64_t V = 5, T = 2, D = 2, H = 3, B = 2;
    Buffer<float> C(V * D), W1(H * T * D), b1(H), W2(V * H), b2(V), lrs(std::vector<float>{0.1f}),
        losses(1);
    Buffer<int64_t> X(std::vector<int64_t>{0, 1, 2, 9}), Y(std::vector<int64_t>{0, 1}),
        batches(std::vector<int64_t>{0, 1});
    cu::mlp_train_steps(V, T, D, H, B, C.get(), W1.get(), b1.get(), W2.get(), b2.get(), X.get(),
                        Y.get(), 2, lrs.get(), 1, 0, 0, batches.get(), losses.get(), nullptr);
  }, "pymakemore::mlp_train_steps: character id 9 at position 1 is out of range [0, 5)"});
  return cases;
}

void run_trap_cases(const char* self) {
  for (const TrapCase& c : trap_cases()) {
    const std::string where = std::string("trap ") + c.name;
    const std::string command = std::string(self) + " --trap " + c.name + " 2>&1";
    FILE* pipe = popen(command.c_str(), "r");
    std::string output;
    char chunk[512];
    while (pipe && std::fgets(chunk, sizeof chunk, pipe)) output += chunk;
    const int status = pipe ? pclose(pipe) : -1;
    expect(WIFEXITED(status) && WEXITSTATUS(status) == cuda_on_cpu::kTrapExitCode, where,
           "the kernel did not trap; output: " + output);
    expect(output.find(c.message) != std::string::npos, where,
           "printed \"" + output + "\", not \"" + c.message + "\"");
  }
}

int run_one_trap_case(const char* name) {
  for (const TrapCase& c : trap_cases())
    if (std::strcmp(c.name, name) == 0) {
      c.run();
      std::printf("no trap\n");
      return 0;
    }
  std::printf("no trap case named %s\n", name);
  return 2;
}

template <typename T, typename I>
void indexed_cases(Rng& rng) {
  embedding_cases<T, I>(rng);
  cross_entropy_cases<T, I>(rng);
}

template <typename T>
void typed_cases(Rng& rng) {
  indexed_cases<T, int32_t>(rng);
  indexed_cases<T, int64_t>(rng);
  linear_cases<T>(rng);
  scale_grad_cases<T>(rng);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--trap") == 0) return run_one_trap_case(argv[2]);
  const char* order = std::getenv("HIP_CPU_SIM_REVERSE");
  std::printf("CUDA kernels on the CPU: threads of a block in %s order\n",
              order && *order == '1' ? "reverse" : "forward");
  Rng rng(2024);
  typed_cases<float>(rng);
  typed_cases<double>(rng);
  typed_cases<__half>(rng);
  typed_cases<__nv_bfloat16>(rng);
  batch_norm_cases<float>(rng);
  batch_norm_cases<double>(rng);
  batch_norm_refuses_half_types();
  huge_grid_cases(rng);
  mlp_engine_case(3, true, true, rng);
  mlp_engine_case(2, false, false, rng);
  mlp_engine_limits();
  run_trap_cases(argv[0]);
  const uint64_t early = hip::detail::sim::exited_before_barrier.load();
  if (early) std::printf("note: %llu thread(s) returned before a barrier the rest of their block met\n",
                         (unsigned long long)early);
  std::printf("%ld checks, %ld failed\n", checks, failures);
  return failures ? 1 : 0;
}
