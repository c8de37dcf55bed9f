// The Python module pymakemore._C. Importing it loads this library, which registers the ops
// (schema.cpp and the kernel files). It also offers direct entry points to the forward ops:
// the same dispatcher call as torch.ops.pymakemore.*, without the generic Python argument
// handling of torch.ops, which costs microseconds at makemore's small shapes. Eager Python
// code uses them; torch.compile traces torch.ops instead (see pymakemore/ops.py).
#include <torch/extension.h>

#include "op_handles.h"
#include "pymakemore/kernels.h"

namespace {

namespace handles = pymakemore::handles;
using handles::op;

at::Tensor embedding(const at::Tensor& input, const at::Tensor& weight, int64_t padding_idx,
                     bool scale_grad_by_freq) {
  static const auto handle = op<handles::Embedding>("pymakemore::embedding");
  return handle.call(input, weight, padding_idx, scale_grad_by_freq);
}

at::Tensor linear(const at::Tensor& input, const at::Tensor& weight,
                  const c10::optional<at::Tensor>& bias) {
  static const auto handle = op<handles::Linear>("pymakemore::linear");
  return handle.call(input, weight, bias);
}

at::Tensor linear_tanh(const at::Tensor& input, const at::Tensor& weight,
                       const c10::optional<at::Tensor>& bias) {
  static const auto handle = op<handles::Linear>("pymakemore::linear_tanh");
  return handle.call(input, weight, bias);
}

// Only the loss: the log-sum-exp output stays with autograd.
at::Tensor cross_entropy(const at::Tensor& input, const at::Tensor& target,
                         const c10::optional<at::Tensor>& weight, const std::string& reduction,
                         int64_t ignore_index, double label_smoothing) {
  static const auto handle = op<handles::CrossEntropy>("pymakemore::cross_entropy");
  return std::get<0>(handle.call(input, target, weight, reduction, ignore_index,
                                 label_smoothing));
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "pymakemore's compiled ops (see pymakemore.ops)";
  m.def("embedding", &embedding);
  m.def("linear", &linear);
  m.def("linear_tanh", &linear_tanh);
  m.def("cross_entropy", &cross_entropy);
  m.def("cpu_level",
        [] { return std::string(pymakemore::cpu_level_name(pymakemore::cpu_level())); },
        "the instruction-set level the CPU kernels run at (portable, avx2, avx512)");
  m.def("best_cpu_level",
        [] { return std::string(pymakemore::cpu_level_name(pymakemore::best_cpu_level())); },
        "the highest level this CPU and this build can run");
  m.def("set_cpu_level", [](const std::string& name) { pymakemore::set_cpu_level(name.c_str()); },
        "run the CPU kernels at this level from now on (at most best_cpu_level())");
}
