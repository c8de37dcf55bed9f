// Launchers of the CUDA kernels: raw device pointers, sizes, a stream; no torch. Every launcher
// only enqueues work on `stream` (no host synchronisation, no host reads of device data), so
// the ops can be captured in CUDA graphs. Scratch memory comes from the caller (`workspace`,
// sized by the matching *_workspace_bytes function) so it uses the caller's allocator.
//
// Every launcher returns a Status: 0 when all its kernels were enqueued, else the cudaError_t
// (as an int) of the first launch that failed, after which it enqueues nothing more.
//
// An index or target out of range stops the kernel with a message naming the value (printf,
// then a trap): the next CUDA call on that context reports an error. Nothing out of range is
// ever read or written.
#pragma once

#include <cstddef>
#include <cstdint>

#include "pymakemore/kernels.h"

typedef struct CUstream_st* cudaStream_t;

namespace pymakemore::cuda {

enum class Dtype : int { Float32, Float64, Float16, BFloat16 };
enum class IndexDtype : int { Int32, Int64 };
using Status = int;  // a cudaError_t value: 0 is cudaSuccess

// ---- embedding ------------------------------------------------------------------------------
Status embedding_forward(Dtype dtype, IndexDtype index_dtype, const void* indices, int64_t n,
                         const void* weight, int64_t rows, int64_t dim, void* out,
                         cudaStream_t stream);

// Deterministic: the indices are stably sorted (positions within a row keep their order) and
// each row sums its gradient rows in that order, in fixed pieces; no float atomics.
size_t embedding_backward_workspace_bytes(IndexDtype index_dtype, int64_t n, int64_t rows);
Status embedding_backward(Dtype dtype, IndexDtype index_dtype, const void* grad_out,
                          const void* indices, int64_t n, int64_t rows, int64_t dim,
                          int64_t padding_idx, bool scale_by_freq, void* grad_weight,
                          void* workspace, cudaStream_t stream);

// ---- linear, linear_tanh (float accumulation, no TF32) -----------------------------------------
Status linear_forward(Dtype dtype, const void* x, const void* w, const void* bias, int64_t n,
                      int64_t k, int64_t h, Activation act, void* y, cudaStream_t stream);

size_t linear_backward_workspace_bytes(int64_t n, int64_t k, int64_t h);
Status linear_backward(Dtype dtype, const void* gy, const void* y, const void* x, const void* w,
                       int64_t n, int64_t k, int64_t h, Activation act, void* grad_x,
                       void* grad_w, void* grad_b, void* workspace, cudaStream_t stream);

// ---- cross entropy --------------------------------------------------------------------------
size_t cross_entropy_workspace_bytes(int64_t n);
// loss: n values (Reduction::None) or one; lse: n doubles. grad_logits, if not null (Mean or
// Sum only): the gradient for grad_loss = 1, from the same pass over each row.
Status cross_entropy_forward(Dtype dtype, IndexDtype index_dtype, const void* logits,
                             const void* target, const void* class_weight, int64_t n, int64_t c,
                             const CrossEntropyOptions& opt, void* loss, double* lse,
                             void* grad_logits, void* workspace, cudaStream_t stream);
// grad_loss: n values (Reduction::None) or one, on the device.
Status cross_entropy_backward(Dtype dtype, IndexDtype index_dtype, const void* grad_loss,
                              const void* logits, const void* target, const void* class_weight,
                              const double* lse, int64_t n, int64_t c,
                              const CrossEntropyOptions& opt, void* grad_logits, void* workspace,
                              cudaStream_t stream);
// grad (n values) *= factor (one value on the device); nothing is written when it is 1.
Status scale_grad(Dtype dtype, void* grad, int64_t n, const void* factor, cudaStream_t stream);

// ---- batch_norm_tanh over x (m, c): the statistics of each column (float32 and float64; the
// torch layer computes float16 and bfloat16 in float32) ------------------------------------------
// As pymakemore::batch_norm_tanh_forward / _backward on the CPU (kernels.h): weight, bias,
// running_mean, running_var may be null (the last two not in evaluation), as may any of the
// three gradients.
Status batch_norm_tanh_forward(Dtype dtype, const void* x, int64_t m, int64_t c,
                               const void* weight, const void* bias, void* running_mean,
                               void* running_var, bool training, double momentum, double eps,
                               bool unbiased, void* y, void* save_mean, void* save_invstd,
                               cudaStream_t stream);
Status batch_norm_tanh_backward(Dtype dtype, const void* gy, const void* y, const void* x,
                                int64_t m, int64_t c, const void* weight, const void* save_mean,
                                const void* save_invstd, bool training, bool unbiased,
                                void* grad_x, void* grad_weight, void* grad_bias,
                                cudaStream_t stream);

// ---- the MLP's whole training steps (engine "fused"): one persistent block ---------------------
// Same parameters, draws and results contract as pymakemore::mlp_train_steps on the CPU; all
// parameters and activations live in the block's shared memory for the whole launch.
size_t mlp_engine_shared_bytes(int64_t vocab, int64_t block, int64_t n_embd, int64_t n_hidden,
                               int64_t batch);
Status mlp_train_steps(int64_t vocab, int64_t block, int64_t n_embd, int64_t n_hidden,
                       int64_t batch, float* C, float* W1, float* b1, float* W2, float* b2,
                       const int64_t* X, const int64_t* Y, int64_t n_train, const float* lrs,
                       int64_t steps, int64_t first_step, uint64_t seed,
                       const int64_t* batch_indices, float* losses, cudaStream_t stream);

}  // namespace pymakemore::cuda
