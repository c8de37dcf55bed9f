// CUDA registrations: the checks, operands and outputs of op_calls.h (allocated through torch's
// caching allocator, so CUDA-graph capture works), the current stream, then the torch-free
// launchers in csrc/cuda. Nothing here reads device data on the host.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cuda_runtime.h>

#include <limits>

#include "batch_norm_tanh.h"
#include "checks.h"
#include "cross_entropy_ops.h"
#include "linear_ops.h"
#include "op_calls.h"
#include "pymakemore/cuda_kernels.h"

namespace pymakemore {
namespace {

cuda::Dtype dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return cuda::Dtype::Float32;
    case at::kDouble: return cuda::Dtype::Float64;
    case at::kHalf: return cuda::Dtype::Float16;
    case at::kBFloat16: return cuda::Dtype::BFloat16;
    default: TORCH_CHECK(false, "pymakemore: unsupported dtype ", t.scalar_type());
  }
}

cuda::IndexDtype index_dtype_of(const at::Tensor& t) {
  return t.scalar_type() == at::kLong ? cuda::IndexDtype::Int64 : cuda::IndexDtype::Int32;
}

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

const void* ptr_or_null(const c10::optional<at::Tensor>& t) {
  return t && t->defined() ? t->data_ptr() : nullptr;
}

// A launcher's result: a kernel that failed to launch (a bad configuration, too little shared
// memory) is reported here, before anything reads the output it never wrote.
void check_launch(const char* op, cuda::Status status) {
  TORCH_CHECK(status == 0, op, ": a CUDA kernel failed to launch: ",
              cudaGetErrorString(static_cast<cudaError_t>(status)));
}

at::Tensor workspace(size_t bytes, const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(bytes)}, like.options().dtype(at::kByte));
}

// ---- embedding ------------------------------------------------------------------------------
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

// ---- linear, linear_tanh ---------------------------------------------------------------------
at::Tensor linear_forward_cuda(const char* op, Activation act, const at::Tensor& input,
                               const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  calls::check_linear(at::kCUDA, op, input, weight, bias);
  const c10::cuda::CUDAGuard guard(input.device());
  const calls::Linear c = calls::linear(input, weight, bias, &calls::empty);
  check_launch(op, cuda::linear_forward(dtype_of(c.x), c.x.data_ptr(), c.w.data_ptr(),
                                        ptr_or_null(c.b), c.rows, c.in_features,
                                        c.out_features, act, c.y.data_ptr(), stream()));
  return c.y;
}

LinearGrads linear_backward_cuda(
    const char* op, Activation act, const at::Tensor& grad_output, const at::Tensor& output,
    const at::Tensor& input, const at::Tensor& weight, std::array<bool, 3> output_mask) {
  calls::check_linear_backward(at::kCUDA, op, grad_output, output, input, weight);
  const c10::cuda::CUDAGuard guard(input.device());
  const calls::LinearBackward c =
      calls::linear_backward(grad_output, output, input, weight, output_mask, &calls::empty);
  at::Tensor ws = workspace(
      cuda::linear_backward_workspace_bytes(c.rows, c.in_features, c.out_features), c.x);
  check_launch(op, cuda::linear_backward(dtype_of(c.x), c.gy.data_ptr(), c.y_ptr(),
                                         c.x.data_ptr(), c.w.data_ptr(), c.rows, c.in_features,
                                         c.out_features, act, c.grad_x_ptr(), c.grad_w_ptr(),
                                         c.grad_b_ptr(), ws.data_ptr(), stream()));
  return {c.grad_x, c.grad_w, c.grad_b};
}

// ---- cross_entropy --------------------------------------------------------------------------
// (loss, lse) and, with_grad, the gradient for grad_loss = 1 from the same pass.
CrossEntropyOutputs cross_entropy_cuda(
    const char* op, const at::Tensor& input, const at::Tensor& target,
    const c10::optional<at::Tensor>& weight, c10::string_view reduction, int64_t ignore_index,
    double label_smoothing, bool with_grad) {
  const CrossEntropyOptions opt =
      calls::check_cross_entropy(at::kCUDA, op, input, target, weight, reduction, ignore_index,
                                 label_smoothing, with_grad);
  const c10::cuda::CUDAGuard guard(input.device());
  const calls::CrossEntropy c =
      calls::cross_entropy(input, target, weight, opt, with_grad, &calls::empty);
  at::Tensor ws = workspace(cuda::cross_entropy_workspace_bytes(c.n()), c.x);
  check_launch(op, cuda::cross_entropy_forward(
                       dtype_of(c.x), index_dtype_of(c.t), c.x.data_ptr(), c.t.data_ptr(),
                       ptr_or_null(c.w), c.n(), c.classes(), opt, c.loss.data_ptr(),
                       c.lse.data_ptr<double>(), with_grad ? c.grad.data_ptr() : nullptr,
                       ws.data_ptr(), stream()));
  return {c.loss, c.lse, c.grad};
}

// grad *= grad_loss; whether grad_loss is 1 is decided on the device (no host read).
void scale_grad_cuda(at::Tensor& grad, const at::Tensor& grad_loss) {
  calls::check_scale_grad(at::kCUDA, grad, grad_loss);
  const c10::cuda::CUDAGuard guard(grad.device());
  const at::Tensor factor = grad_loss.contiguous();
  check_launch("scale_grad_", cuda::scale_grad(dtype_of(grad), grad.data_ptr(), grad.numel(),
                                               factor.data_ptr(), stream()));
}

at::Tensor cross_entropy_backward_cuda(const at::Tensor& grad_loss, const at::Tensor& input,
                                       const at::Tensor& target,
                                       const c10::optional<at::Tensor>& weight,
                                       const at::Tensor& lse, c10::string_view reduction,
                                       int64_t ignore_index, double label_smoothing) {
  const CrossEntropyOptions opt = calls::check_cross_entropy_backward(
      at::kCUDA, grad_loss, input, target, weight, lse, reduction, ignore_index,
      label_smoothing);
  const c10::cuda::CUDAGuard guard(input.device());
  const calls::CrossEntropyBackward c =
      calls::cross_entropy_backward(grad_loss, input, target, weight, lse, &calls::empty);
  at::Tensor ws = workspace(cuda::cross_entropy_workspace_bytes(c.n()), c.x);
  check_launch("cross_entropy_backward",
               cuda::cross_entropy_backward(dtype_of(c.x), index_dtype_of(c.t), c.g.data_ptr(),
                                            c.x.data_ptr(), c.t.data_ptr(), ptr_or_null(c.w),
                                            c.lse.data_ptr<double>(), c.n(), c.classes(), opt,
                                            c.grad_input.data_ptr(), ws.data_ptr(), stream()));
  return c.grad_input;
}

// ---- the MLP engine ---------------------------------------------------------------------------
at::Tensor mlp_train_steps_cuda(at::Tensor& C, at::Tensor& W1, at::Tensor& b1, at::Tensor& W2,
                                at::Tensor& b2, const at::Tensor& X, const at::Tensor& Y,
                                const at::Tensor& lrs, int64_t batch_size, int64_t first_step,
                                int64_t seed, const c10::optional<at::Tensor>& batch_indices) {
  const MlpShape shape =
      checks::mlp_engine_args(C, W1, b1, W2, b2, X, Y, lrs, batch_size, batch_indices);
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

// ---- batch_norm_tanh (float16 and bfloat16 computed in float32) ------------------------------
void* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

batch_norm::Outputs batch_norm_tanh_cuda(const at::Tensor& input,
                                         const c10::optional<at::Tensor>& weight,
                                         const c10::optional<at::Tensor>& bias,
                                         const c10::optional<at::Tensor>& running_mean,
                                         const c10::optional<at::Tensor>& running_var,
                                         bool training, double momentum, double eps,
                                         bool unbiased) {
  batch_norm::check_args(at::kCUDA, input, weight, bias, running_mean, running_var, training);
  const c10::cuda::CUDAGuard guard(input.device());
  batch_norm::Prepared p = batch_norm::prepare(input, weight, bias, running_mean, running_var,
                                               batch_norm::stats_dtype(input));
  check_launch("batch_norm_tanh",
               cuda::batch_norm_tanh_forward(
                   dtype_of(p.x), p.x.data_ptr(), p.m, p.c, ptr_or_null(p.weight),
                   ptr_or_null(p.bias), ptr_or_null(p.running_mean), ptr_or_null(p.running_var),
                   training, momentum, eps, unbiased, p.y.data_ptr(), p.save_mean.data_ptr(),
                   p.save_invstd.data_ptr(), stream()));
  return batch_norm::outputs(p, input, running_mean, running_var);
}

batch_norm::Grads batch_norm_tanh_backward_cuda(const at::Tensor& grad_output,
                                                const at::Tensor& output,
                                                const at::Tensor& input,
                                                const c10::optional<at::Tensor>& weight,
                                                const at::Tensor& save_mean,
                                                const at::Tensor& save_invstd, bool training,
                                                bool unbiased, std::array<bool, 3> mask) {
  batch_norm::check_backward_args(at::kCUDA, grad_output, output, input, save_mean,
                                  save_invstd);
  const c10::cuda::CUDAGuard guard(input.device());
  batch_norm::PreparedBackward p = batch_norm::prepare_backward(grad_output, output, input,
                                                                weight, save_mean, save_invstd,
                                                                mask);
  check_launch("batch_norm_tanh_backward",
               cuda::batch_norm_tanh_backward(
                   dtype_of(p.x), p.gy.data_ptr(), p.y.data_ptr(), p.x.data_ptr(), p.m, p.c,
                   ptr_or_null(p.weight), p.mean.data_ptr(), p.invstd.data_ptr(), training,
                   unbiased, ptr_or_null(p.gx), ptr_or_null(p.gw), ptr_or_null(p.gb), stream()));
  return batch_norm::grads(p, input, weight);
}

TORCH_LIBRARY_IMPL(pymakemore, CUDA, m) {
  m.impl("batch_norm_tanh", &batch_norm_tanh_cuda);
  m.impl("batch_norm_tanh_backward", &batch_norm_tanh_backward_cuda);
  m.impl("mlp_train_steps", &mlp_train_steps_cuda);
  m.impl("embedding", &embedding_cuda);
  m.impl("embedding_backward", &embedding_backward_cuda);
  LinearOps<linear_forward_cuda, linear_backward_cuda>::register_into(m);
  CrossEntropyOps<cross_entropy_cuda>::register_into(m);
  m.impl("cross_entropy_backward", &cross_entropy_backward_cuda);
  m.impl("scale_grad_", &scale_grad_cuda);
}

}  // namespace pymakemore
