// CUDA registrations: the same checks as on the CPU, allocation through torch's caching
// allocator (so CUDA-graph capture works), the current stream, then the torch-free launchers
// in csrc/cuda. Nothing here reads device data on the host.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cuda_runtime.h>

#include <limits>

#include "checks.h"
#include "cross_entropy_ops.h"
#include "linear_ops.h"
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

void all_on_cuda(const char* op, std::initializer_list<const at::Tensor*> tensors) {
  checks::all_on(c10::DeviceType::CUDA, op, tensors);
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
  checks::embedding_args(input, weight);
  all_on_cuda("embedding", {&input, &weight});
  const c10::cuda::CUDAGuard guard(weight.device());
  const at::Tensor idx = input.contiguous();
  const at::Tensor w = weight.contiguous();
  at::Tensor out = at::empty(checks::embedding_output_shape(idx, w.size(1)), w.options());
  check_launch("embedding",
               cuda::embedding_forward(dtype_of(w), index_dtype_of(idx), idx.data_ptr(),
                                       idx.numel(), w.data_ptr(), w.size(0), w.size(1),
                                       out.data_ptr(), stream()));
  return out;
}

at::Tensor embedding_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                   int64_t num_weights, int64_t padding_idx,
                                   bool scale_grad_by_freq) {
  checks::embedding_backward_args(grad_output, input, num_weights);
  all_on_cuda("embedding_backward", {&grad_output, &input});
  TORCH_CHECK(input.numel() < std::numeric_limits<int32_t>::max() &&
                  num_weights < std::numeric_limits<int32_t>::max(),
              "embedding_backward: on CUDA, indices and rows are limited to 2^31 - 1");
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const at::Tensor idx = input.contiguous();
  const at::Tensor grad = grad_output.contiguous();
  const int64_t dim = grad.size(-1);
  at::Tensor grad_weight = at::empty({num_weights, dim}, grad.options());
  at::Tensor ws = workspace(
      cuda::embedding_backward_workspace_bytes(index_dtype_of(idx), idx.numel(), num_weights),
      grad);
  check_launch("embedding_backward",
               cuda::embedding_backward(dtype_of(grad), index_dtype_of(idx), grad.data_ptr(),
                                        idx.data_ptr(), idx.numel(), num_weights, dim,
                                        padding_idx, scale_grad_by_freq, grad_weight.data_ptr(),
                                        ws.data_ptr(), stream()));
  return grad_weight;
}

// ---- linear, linear_tanh ---------------------------------------------------------------------
at::Tensor linear_forward_cuda(const char* op, Activation act, const at::Tensor& input,
                               const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  checks::linear_args(op, input, weight, bias);
  all_on_cuda(op, {&input, &weight});
  if (bias) all_on_cuda(op, {&*bias});
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = input.contiguous();
  const at::Tensor w = weight.contiguous();
  const c10::optional<at::Tensor> b = checks::contiguous(bias);
  const int64_t rows = c10::multiply_integers(x.sizes().begin(), x.sizes().end() - 1);
  at::Tensor y = at::empty(checks::linear_output_shape(x, w), x.options());
  check_launch(op, cuda::linear_forward(dtype_of(x), x.data_ptr(), w.data_ptr(), ptr_or_null(b),
                                        rows, w.size(1), w.size(0), act, y.data_ptr(),
                                        stream()));
  return y;
}

LinearGrads linear_backward_cuda(
    const char* op, Activation act, const at::Tensor& grad_output, const at::Tensor& output,
    const at::Tensor& input, const at::Tensor& weight, std::array<bool, 3> output_mask) {
  checks::linear_backward_args(op, grad_output, output, input, weight);
  all_on_cuda(op, {&grad_output, &output, &input, &weight});
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor gy = grad_output.contiguous();
  const at::Tensor y = output.defined() ? output.contiguous() : at::Tensor();
  const at::Tensor x = input.contiguous();
  const at::Tensor w = weight.contiguous();
  const int64_t k = w.size(1), h = w.size(0);
  const int64_t rows = c10::multiply_integers(x.sizes().begin(), x.sizes().end() - 1);
  at::Tensor grad_x = output_mask[0] ? at::empty_like(x) : at::empty({0}, x.options());
  at::Tensor grad_w = output_mask[1] ? at::empty_like(w) : at::empty({0}, x.options());
  at::Tensor grad_b = output_mask[2] ? at::empty({h}, x.options()) : at::empty({0}, x.options());
  at::Tensor ws = workspace(cuda::linear_backward_workspace_bytes(rows, k, h), x);
  check_launch(op, cuda::linear_backward(dtype_of(x), gy.data_ptr(),
                                         y.defined() ? y.data_ptr() : nullptr, x.data_ptr(),
                                         w.data_ptr(), rows, k, h, act,
                                         output_mask[0] ? grad_x.data_ptr() : nullptr,
                                         output_mask[1] ? grad_w.data_ptr() : nullptr,
                                         output_mask[2] ? grad_b.data_ptr() : nullptr,
                                         ws.data_ptr(), stream()));
  return {grad_x, grad_w, grad_b};
}

// ---- cross_entropy --------------------------------------------------------------------------
// (loss, lse) and, with_grad, the gradient for grad_loss = 1 from the same pass.
CrossEntropyOutputs cross_entropy_cuda(
    const char* op, const at::Tensor& input, const at::Tensor& target,
    const c10::optional<at::Tensor>& weight, c10::string_view reduction, int64_t ignore_index,
    double label_smoothing, bool with_grad) {
  const CrossEntropyOptions opt = checks::cross_entropy_forward_args(
      input, target, weight, reduction, ignore_index, label_smoothing);
  if (with_grad) checks::reduced_for_gradient(op, opt);
  all_on_cuda(op, {&input, &target});
  if (weight) all_on_cuda(op, {&*weight});
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = input.contiguous();
  const at::Tensor t = target.contiguous();
  const c10::optional<at::Tensor> w = checks::contiguous(weight);
  const int64_t n = x.size(0), c = x.size(1);
  at::Tensor loss = opt.reduction == Reduction::None ? at::empty({n}, x.options())
                                                     : at::empty({}, x.options());
  at::Tensor lse = at::empty({n}, x.options().dtype(checks::kLseDtype));
  at::Tensor grad = with_grad ? at::empty_like(x) : at::Tensor();
  at::Tensor ws = workspace(cuda::cross_entropy_workspace_bytes(n), x);
  check_launch(op, cuda::cross_entropy_forward(dtype_of(x), index_dtype_of(t), x.data_ptr(),
                                               t.data_ptr(), ptr_or_null(w), n, c, opt,
                                               loss.data_ptr(), lse.data_ptr<double>(),
                                               with_grad ? grad.data_ptr() : nullptr,
                                               ws.data_ptr(), stream()));
  return {loss, lse, grad};
}

// grad *= grad_loss; whether grad_loss is 1 is decided on the device (no host read).
void scale_grad_cuda(at::Tensor& grad, const at::Tensor& grad_loss) {
  checks::scale_grad_args(grad, grad_loss);
  all_on_cuda("scale_grad_", {&grad, &grad_loss});
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
  const CrossEntropyOptions opt = checks::cross_entropy_backward_args(
      grad_loss, input, target, weight, lse, reduction, ignore_index, label_smoothing);
  all_on_cuda("cross_entropy_backward", {&grad_loss, &input, &target, &lse});
  const int64_t n = input.size(0), c = input.size(1);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = input.contiguous();
  const at::Tensor t = target.contiguous();
  const at::Tensor g = grad_loss.to(x.scalar_type()).contiguous();
  const at::Tensor l = lse.to(checks::kLseDtype).contiguous();
  const c10::optional<at::Tensor> w = checks::contiguous(weight);
  at::Tensor grad_input = at::empty_like(x);
  at::Tensor ws = workspace(cuda::cross_entropy_workspace_bytes(n), x);
  check_launch("cross_entropy_backward",
               cuda::cross_entropy_backward(dtype_of(x), index_dtype_of(t), g.data_ptr(),
                                            x.data_ptr(), t.data_ptr(), ptr_or_null(w),
                                            l.data_ptr<double>(), n, c, opt,
                                            grad_input.data_ptr(), ws.data_ptr(), stream()));
  return grad_input;
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

TORCH_LIBRARY_IMPL(pymakemore, CUDA, m) {
  m.impl("mlp_train_steps", &mlp_train_steps_cuda);
  m.impl("embedding", &embedding_cuda);
  m.impl("embedding_backward", &embedding_backward_cuda);
  LinearOps<linear_forward_cuda, linear_backward_cuda>::register_into(m);
  CrossEntropyOps<cross_entropy_cuda>::register_into(m);
  m.impl("cross_entropy_backward", &cross_entropy_backward_cuda);
  m.impl("scale_grad_", &scale_grad_cuda);
}

}  // namespace pymakemore
