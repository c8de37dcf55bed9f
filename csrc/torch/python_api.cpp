// The Python module pymakemore._C. Importing it loads this library, which registers the ops
// (schema.cpp and the kernel files). It also offers direct entry points to the forward ops:
// the same dispatcher call as torch.ops.pymakemore.*, without the generic Python argument
// handling of torch.ops, which costs microseconds at makemore's small shapes. Eager Python
// code uses them; torch.compile traces torch.ops instead (see pymakemore/ops.py).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/extension.h>

#include "pymakemore/kernels.h"

namespace {

template <typename Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

at::Tensor embedding(const at::Tensor& input, const at::Tensor& weight, int64_t padding_idx,
                     bool scale_grad_by_freq) {
  static const auto handle =
      op<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, bool)>("pymakemore::embedding");
  return handle.call(input, weight, padding_idx, scale_grad_by_freq);
}

using LinearSignature = at::Tensor(const at::Tensor&, const at::Tensor&,
                                   const c10::optional<at::Tensor>&);

at::Tensor linear(const at::Tensor& input, const at::Tensor& weight,
                  const c10::optional<at::Tensor>& bias) {
  static const auto handle = op<LinearSignature>("pymakemore::linear");
  return handle.call(input, weight, bias);
}

at::Tensor linear_tanh(const at::Tensor& input, const at::Tensor& weight,
                       const c10::optional<at::Tensor>& bias) {
  static const auto handle = op<LinearSignature>("pymakemore::linear_tanh");
  return handle.call(input, weight, bias);
}

// Only the loss: the log-sum-exp output stays with autograd.
at::Tensor cross_entropy(const at::Tensor& input, const at::Tensor& target,
                         const c10::optional<at::Tensor>& weight, const std::string& reduction,
                         int64_t ignore_index, double label_smoothing) {
  static const auto handle =
      op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                            const c10::optional<at::Tensor>&, c10::string_view,
                                            int64_t, double)>("pymakemore::cross_entropy");
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
