// mlp_train_steps on CUDA: checks (mlp_train_steps.h), then the persistent kernel of
// csrc/cuda/mlp_engine.cu on the current stream.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cuda_glue.h"
#include "mlp_train_steps.h"

namespace pymakemore {
namespace {

at::Tensor mlp_train_steps_cuda(at::Tensor& C, at::Tensor& W1, at::Tensor& b1, at::Tensor& W2,
                                at::Tensor& b2, const at::Tensor& X, const at::Tensor& Y,
                                const at::Tensor& lrs, int64_t batch_size, int64_t first_step,
                                int64_t seed, const c10::optional<at::Tensor>& batch_indices) {
  const MlpShape shape =
      mlp_train_steps_args(C, W1, b1, W2, b2, X, Y, lrs, batch_size, batch_indices);
  TORCH_CHECK(C.is_cuda(), "mlp_train_steps: expected CUDA tensors");
  const c10::cuda::CUDAGuard guard(C.device());
  const size_t bytes = cuda::mlp_engine_shared_bytes(shape.vocab, shape.block, shape.n_embd,
                                                     shape.n_hidden, shape.batch);
  int limit = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                        C.device().index()));
  TORCH_CHECK(bytes <= static_cast<size_t>(limit), "mlp_train_steps: this model and batch need ",
              bytes, " bytes of shared memory, more than the ", limit,
              " one block has on this GPU; use --engine ops");
  at::Tensor losses = at::empty({lrs.size(0)}, lrs.options());
  check_launch("mlp_train_steps",
               cuda::mlp_train_steps(
                   shape.vocab, shape.block, shape.n_embd, shape.n_hidden, shape.batch,
                   C.data_ptr<float>(), W1.data_ptr<float>(), b1.data_ptr<float>(),
                   W2.data_ptr<float>(), b2.data_ptr<float>(), X.data_ptr<int64_t>(),
                   Y.data_ptr<int64_t>(), X.size(0), lrs.data_ptr<float>(), lrs.size(0),
                   first_step, static_cast<uint64_t>(seed),
                   batch_indices && batch_indices->defined() ? batch_indices->data_ptr<int64_t>()
                                                             : nullptr,
                   losses.data_ptr<float>(), stream()));
  return losses;
}

}  // namespace

TORCH_LIBRARY_IMPL(pymakemore, CUDA, m) {
  m.impl("mlp_train_steps", &mlp_train_steps_cuda);
}

}  // namespace pymakemore
