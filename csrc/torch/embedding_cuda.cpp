// embedding on CUDA: checks and operands (embedding.h), then the launchers of
// csrc/cuda/embedding.cu on the current stream.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cuda_glue.h"

#include <limits>

#include "embedding.h"

namespace pymakemore {
namespace {

at::Tensor embedding_cuda(const at::Tensor& input, const at::Tensor& weight, int64_t,
                          bool) {
  calls::check_embedding(at::kCUDA, input, weight);
  const c10::cuda::CUDAGuard guard(weight.device());
  const calls::Embedding c = calls::embedding(input, weight, &calls::empty);
  check_launch("embedding",
               cuda::embedding_forward(dtype_of(c.weight), index_dtype_of(c.idx),
                                       c.idx.data_ptr(), c.idx.numel(), c.weight.data_ptr(),
                                       c.rows(), c.dim(), c.out.data_ptr(), stream()));
  return c.out;
}

at::Tensor embedding_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                   int64_t num_weights, int64_t padding_idx,
                                   bool scale_grad_by_freq) {
  calls::check_embedding_backward(at::kCUDA, grad_output, input, num_weights);
  TORCH_CHECK(input.numel() < std::numeric_limits<int32_t>::max() &&
                  num_weights < std::numeric_limits<int32_t>::max(),
              "embedding_backward: on CUDA, indices and rows are limited to 2^31 - 1");
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const calls::EmbeddingBackward c =
      calls::embedding_backward(grad_output, input, num_weights, &calls::empty);
  const cuda::IndexDtype index_dtype = index_dtype_of(c.idx);
  at::Tensor ws = workspace(
      cuda::embedding_backward_workspace_bytes(index_dtype, c.idx.numel(), num_weights), c.grad);
  check_launch("embedding_backward",
               cuda::embedding_backward(dtype_of(c.grad), index_dtype, c.grad.data_ptr(),
                                        c.idx.data_ptr(), c.idx.numel(), num_weights, c.dim(),
                                        padding_idx, scale_grad_by_freq,
                                        c.grad_weight.data_ptr(), ws.data_ptr(), stream()));
  return c.grad_weight;
}

}  // namespace

TORCH_LIBRARY_IMPL(pymakemore, CUDA, m) {
  m.impl("embedding", &embedding_cuda);
  m.impl("embedding_backward", &embedding_backward_cuda);
}

}  // namespace pymakemore
