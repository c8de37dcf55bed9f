// The Python module pymakemore._C. Importing it loads this library, which registers the ops
// (schema.cpp and each op's slice). It also offers direct entry points to the forward ops:
// the same dispatcher call as torch.ops.pymakemore.*, without the generic Python argument
// handling of torch.ops, which costs microseconds at makemore's small shapes. Eager Python
// code uses them; torch.compile traces torch.ops instead (see pymakemore/ops.py).
#include <torch/extension.h>

#include <string>
#include <tuple>

#include "cross_entropy.h"
#include "dispatcher_glue.h"
#include "embedding.h"
#include "linear.h"
#include "pymakemore/kernels.h"

namespace {

// Functions calling the op `name` through the dispatcher with the op's C++ signature (from
// its slice), for pybind11 to wrap.
template <typename Signature>
struct Direct;

template <typename Result, typename... Args>
struct Direct<Result(Args...)> {
  static auto entry(const char* name) {
    return [handle = pymakemore::op_handle<Result(Args...)>(name)](Args... args) {
      return handle.call(args...);
    };
  }
  // only the first output of an op that returns a tuple
  static auto first_output(const char* name) {
    return [handle = pymakemore::op_handle<Result(Args...)>(name)](Args... args) {
      return std::get<0>(handle.call(args...));
    };
  }
};

}  // namespace

PYBIND11_MODULE(_C, m) {
  namespace signatures = pymakemore::signatures;
  m.doc() = "pymakemore's compiled ops (see pymakemore.ops)";
  m.def("embedding", Direct<signatures::Embedding>::entry("pymakemore::embedding"));
  m.def("linear", Direct<signatures::Linear>::entry("pymakemore::linear"));
  m.def("linear_tanh", Direct<signatures::Linear>::entry("pymakemore::linear_tanh"));
  // the loss alone: the log-sum-exp output stays with autograd
  m.def("cross_entropy",
        Direct<signatures::CrossEntropy>::first_output("pymakemore::cross_entropy"));
  m.def("cpu_level",
        [] { return std::string(pymakemore::cpu_level_name(pymakemore::cpu_level())); },
        "the instruction-set level the CPU kernels run at (portable, avx2, avx512)");
  m.def("best_cpu_level",
        [] { return std::string(pymakemore::cpu_level_name(pymakemore::best_cpu_level())); },
        "the highest level this CPU and this build can run");
  m.def("set_cpu_level", [](const std::string& name) { pymakemore::set_cpu_level(name.c_str()); },
        "run the CPU kernels at this level from now on (at most best_cpu_level())");
}
