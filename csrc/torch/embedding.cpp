// embedding on the CPU: checks and operands (embedding.h), then the torch-free kernels of
// csrc/cpu/kernels/embedding.cpp; float16 and bfloat16 compute in float32. Its autograd, for
// every device.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "cpu_glue.h"
#include "dispatcher_glue.h"
#include "embedding.h"

namespace pymakemore {
namespace {

at::Tensor embedding_cpu(const at::Tensor& input, const at::Tensor& weight, int64_t padding_idx,
                         bool scale_grad_by_freq) {
  calls::check_embedding(at::kCPU, input, weight);
  if (half_precision(weight))
    return embedding_cpu(input, upcast(weight), padding_idx, scale_grad_by_freq)
        .to(weight.scalar_type());
  const calls::Embedding c = calls::embedding(input, weight, &new_output);
  int64_t bad = kAllValid;
  AT_DISPATCH_FLOATING_TYPES(c.weight.scalar_type(), "embedding_cpu", [&] {
    with_index_type(c.idx.scalar_type(), [&](auto index_tag) {
      using Index = decltype(index_tag);
      bad = embedding_forward<scalar_t, Index>(c.idx.data_ptr<Index>(), c.idx.numel(),
                                               c.weight.data_ptr<scalar_t>(), c.rows(), c.dim(),
                                               c.out.data_ptr<scalar_t>(), torch_parallel_for());
    });
  });
  if (bad != kAllValid) checks::bad_index("embedding", checks::index_at(c.idx, bad), bad, c.rows());
  return c.out;
}

at::Tensor embedding_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                  int64_t num_weights, int64_t padding_idx,
                                  bool scale_grad_by_freq) {
  calls::check_embedding_backward(at::kCPU, grad_output, input, num_weights);
  if (half_precision(grad_output))
    return embedding_backward_cpu(upcast(grad_output), input, num_weights, padding_idx,
                                  scale_grad_by_freq)
        .to(grad_output.scalar_type());
  const calls::EmbeddingBackward c =
      calls::embedding_backward(grad_output, input, num_weights, &new_output);
  int64_t bad = kAllValid;
  AT_DISPATCH_FLOATING_TYPES(c.grad.scalar_type(), "embedding_backward_cpu", [&] {
    with_index_type(c.idx.scalar_type(), [&](auto index_tag) {
      using Index = decltype(index_tag);
      bad = embedding_backward<scalar_t, Index>(
          c.grad.data_ptr<scalar_t>(), c.idx.data_ptr<Index>(), c.idx.numel(), num_weights,
          c.dim(), padding_idx, scale_grad_by_freq, c.grad_weight.data_ptr<scalar_t>(),
          torch_parallel_for());
    });
  });
  if (bad != kAllValid)
    checks::bad_index("embedding_backward", checks::index_at(c.idx, bad), bad, num_weights);
  return c.grad_weight;
}

using autograd::AutogradContext;
using autograd::variable_list;

struct EmbeddingFunction : torch::autograd::Function<EmbeddingFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& weight, int64_t padding_idx,
                            bool scale_grad_by_freq) {
    static const auto fwd = op_handle<signatures::Embedding>("pymakemore::embedding");
    at::AutoDispatchBelowADInplaceOrView guard;
    // the op first: it checks the weight's rank before anything here reads its size
    at::Tensor out = fwd.call(input, weight, padding_idx, scale_grad_by_freq);
    ctx->save_for_backward({input});
    ctx->saved_data["num_weights"] = weight.sym_size(0);
    ctx->saved_data["padding_idx"] = padding_idx;
    ctx->saved_data["scale_grad_by_freq"] = scale_grad_by_freq;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd =
        op_handle<signatures::EmbeddingBackward>("pymakemore::embedding_backward");
    const at::Tensor input = ctx->get_saved_variables()[0];
    const c10::SymInt num_weights = ctx->saved_data["num_weights"].toSymInt();
    const int64_t padding_idx = ctx->saved_data["padding_idx"].toInt();
    const bool scale_grad_by_freq = ctx->saved_data["scale_grad_by_freq"].toBool();
    at::Tensor grad_weight =
        at::GradMode::is_enabled()  // differentiable in grad_output (create_graph)
            ? at::embedding_backward_symint(grads[0], input, num_weights, padding_idx,
                                            scale_grad_by_freq, false)
            : bwd.call(grads[0], input, num_weights, padding_idx, scale_grad_by_freq);
    return {at::Tensor(), grad_weight, at::Tensor(), at::Tensor()};
  }
};

at::Tensor embedding_autograd(const at::Tensor& input, const at::Tensor& weight,
                              int64_t padding_idx, bool scale_grad_by_freq) {
  return EmbeddingFunction::apply(input, weight, padding_idx, scale_grad_by_freq);
}

}  // namespace

TORCH_LIBRARY_IMPL(pymakemore, CPU, m) {
  m.impl("embedding", &embedding_cpu);
  m.impl("embedding_backward", &embedding_backward_cpu);
}

TORCH_LIBRARY_IMPL(pymakemore, Autograd, m) { m.impl("embedding", &embedding_autograd); }

}  // namespace pymakemore
