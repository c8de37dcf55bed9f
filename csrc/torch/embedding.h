// embedding, the part both devices share: its C++ signatures, its checks (the errors
// F.embedding gives for the same mistakes) and the preparation of its operands and output.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <string>
#include <vector>

#include "checks.h"
#include "outputs.h"
#include "pymakemore/kernels.h"

namespace pymakemore {

// schema.cpp's embedding and embedding_backward in C++ types, as the dispatcher calls them
namespace signatures {
using Embedding = at::Tensor(const at::Tensor& input, const at::Tensor& weight,
                             int64_t padding_idx, bool scale_grad_by_freq);
using EmbeddingBackward = at::Tensor(const at::Tensor& grad_output, const at::Tensor& input,
                                     c10::SymInt num_weights, int64_t padding_idx,
                                     bool scale_grad_by_freq);
}  // namespace signatures

namespace checks {

inline void embedding_args(const at::Tensor& input, const at::Tensor& weight) {
  index_dtype("embedding", "indices", input);
  TORCH_CHECK(weight.dim() == 2, "embedding: 'weight' must be 2-D (num_embeddings, "
              "embedding_dim), but got ", weight.dim(), "-D of shape ", weight.sizes());
  float_dtype("embedding", "weight", weight);
  same_device("embedding", {&input, &weight});
}

inline void embedding_backward_args(const at::Tensor& grad, const at::Tensor& input,
                                    int64_t num_weights) {
  index_dtype("embedding_backward", "indices", input);
  float_dtype("embedding_backward", "grad_output", grad);
  TORCH_CHECK(num_weights >= 0, "embedding_backward: num_weights must be >= 0, got ",
              num_weights);
  TORCH_CHECK(grad.dim() == input.dim() + 1 &&
                  grad.sizes().slice(0, input.dim()) == input.sizes(),
              "embedding_backward: grad_output of shape ", grad.sizes(),
              " does not match indices of shape ", input.sizes(), " plus one embedding dim");
  same_device("embedding_backward", {&grad, &input});
}

[[noreturn]] inline void bad_index(const char* op, int64_t value, int64_t pos, int64_t rows) {
  TORCH_CHECK_INDEX(false, op, ": index ", value, " at position ", pos,
                    " is out of range for a weight with ", rows, " rows (valid: 0 to ",
                    rows - 1, ")");
}

inline std::vector<int64_t> embedding_output_shape(const at::Tensor& input, int64_t dim) {
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
  shape.push_back(dim);
  return shape;
}

}  // namespace checks

namespace calls {

inline void check_embedding(c10::DeviceType device, const at::Tensor& input,
                            const at::Tensor& weight) {
  checks::embedding_args(input, weight);
  checks::all_on(device, "embedding", {&input, &weight});
}

struct Embedding {
  at::Tensor idx, weight, out;
  int64_t rows() const { return weight.size(0); }
  int64_t dim() const { return weight.size(1); }
};

inline Embedding embedding(const at::Tensor& input, const at::Tensor& weight, Allocate alloc) {
  Embedding c{input.contiguous(), weight.contiguous(), {}};
  c.out = alloc(checks::embedding_output_shape(c.idx, c.dim()), c.weight.options());
  return c;
}

inline void check_embedding_backward(c10::DeviceType device, const at::Tensor& grad_output,
                                     const at::Tensor& input, int64_t num_weights) {
  checks::embedding_backward_args(grad_output, input, num_weights);
  checks::all_on(device, "embedding_backward", {&grad_output, &input});
}

struct EmbeddingBackward {
  at::Tensor idx, grad, grad_weight;
  int64_t dim() const { return grad.size(-1); }
};

inline EmbeddingBackward embedding_backward(const at::Tensor& grad_output,
                                            const at::Tensor& input, int64_t num_weights,
                                            Allocate alloc) {
  EmbeddingBackward c{input.contiguous(), grad_output.contiguous(), {}};
  c.grad_weight = alloc({num_weights, c.dim()}, c.grad.options());
  return c;
}

}  // namespace calls
}  // namespace pymakemore
