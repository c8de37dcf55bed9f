// The one place where the ops' schemas live. Each op's slice registers its CPU kernels and its
// autograd (<op>.cpp) and its CUDA kernels (<op>_cuda.cpp); pymakemore/ops.py adds the fake
// (meta) kernels for torch.compile.
#include <torch/library.h>

TORCH_LIBRARY(pymakemore, m) {
  // padding_idx < 0 means none (Python normalises negative values first, as F.embedding does).
  m.def("embedding(Tensor input, Tensor weight, int padding_idx=-1, "
        "bool scale_grad_by_freq=False) -> Tensor");
  m.def("embedding_backward(Tensor grad_output, Tensor input, SymInt num_weights, "
        "int padding_idx=-1, bool scale_grad_by_freq=False) -> Tensor");
  m.def("linear(Tensor input, Tensor weight, Tensor? bias=None) -> Tensor");
  // Returns (grad_input, grad_weight, grad_bias); an entry whose mask is False comes back empty.
  m.def("linear_backward(Tensor grad_output, Tensor input, Tensor weight, bool[3] output_mask) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("linear_tanh(Tensor input, Tensor weight, Tensor? bias=None) -> Tensor");
  // As linear_backward, from the saved output y (the derivative is 1 - y^2).
  m.def("linear_tanh_backward(Tensor grad_output, Tensor output, Tensor input, Tensor weight, "
        "bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // Returns (loss, lse): lse is the per-row log-sum-exp that the backward reuses.
  m.def("cross_entropy(Tensor input, Tensor target, Tensor? weight=None, str reduction=\"mean\", "
        "int ignore_index=-100, float label_smoothing=0.0) -> (Tensor, Tensor)");
  m.def("cross_entropy_backward(Tensor grad_loss, Tensor input, Tensor target, Tensor? weight, "
        "Tensor lse, str reduction, int ignore_index, float label_smoothing) -> Tensor");
  // (loss, lse, grad_input): the loss and, from the same pass over the logits, its gradient for
  // grad_loss = 1 (reduction "mean" or "sum"). The autograd of cross_entropy uses it when the
  // logits need a gradient, then scale_grad_ in the backward.
  m.def("cross_entropy_with_grad(Tensor input, Tensor target, Tensor? weight=None, "
        "str reduction=\"mean\", int ignore_index=-100, float label_smoothing=0.0) "
        "-> (Tensor, Tensor, Tensor)");
  // grad *= grad_loss (one value), in place; nothing is written when grad_loss is 1, and on
  // CUDA that is decided on the device (no host read).
  m.def("scale_grad_(Tensor(a!) grad, Tensor grad_loss) -> ()");
  // F.cross_entropy(F.linear(input, weight, bias), target, ce_weight) with Gemma 2's logit
  // softcap (c * tanh(z / c)) and PaLM's z-loss (z_loss * lse^2 per counted row, weighted as
  // the row), never holding the N x V logits. Returns (loss, lse, grad_input, grad_weight,
  // grad_bias): lse (N,) each row's log-sum-exp of its capped logits; the gradients grad_mask
  // asks for, of a mean or sum loss for a loss gradient of 1, from the same pass (the others
  // empty tensors). The loss and lse are float32 for float16/bfloat16 inputs.
  m.def("linear_cross_entropy(Tensor input, Tensor weight, Tensor target, Tensor? bias, "
        "Tensor? ce_weight, int ignore_index, str reduction, float label_smoothing, "
        "float? softcap, float z_loss, bool[3] grad_mask) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // The gradients for grad_loss ((N,) for "none", 0-d otherwise) and grad_lse ((N,), or None),
  // recomputed chunk by chunk; an entry whose mask is False comes back empty.
  m.def("linear_cross_entropy_backward(Tensor grad_loss, Tensor? grad_lse, Tensor input, "
        "Tensor weight, Tensor target, Tensor? bias, Tensor? ce_weight, int ignore_index, "
        "str reduction, float label_smoothing, float? softcap, float z_loss, "
        "bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // torch.tanh(BatchNorm(input)) with the statistics over every dimension but the last (the
  // features; (N, C) or (N, T, C) as the lectures' BatchNorm1d). training: the batch's
  // statistics, the variance divided by N - 1 when `unbiased` (the lectures) or by N (as
  // F.batch_norm); else the running ones. Functional: returns (output, save_mean, save_invstd,
  // new_running_mean, new_running_var), the last two empty where not given (ops.py copies them
  // into the buffers).
  m.def("batch_norm_tanh(Tensor input, Tensor? weight, Tensor? bias, Tensor? running_mean, "
        "Tensor? running_var, bool training, float momentum, float eps, bool unbiased) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // (grad_input, grad_weight, grad_bias) from the saved output (tanh's derivative 1 - y^2),
  // the input and the saved statistics; an entry whose mask is False comes back empty.
  m.def("batch_norm_tanh_backward(Tensor grad_output, Tensor output, Tensor input, "
        "Tensor? weight, Tensor save_mean, Tensor save_invstd, bool training, bool unbiased, "
        "bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // The makemore MLP's whole SGD steps (engine "fused"): updates C, W1, b1, W2, b2 in place,
  // returns the steps' losses. lrs: one rate per step. batch_indices (steps, batch_size): rows
  // of X to use instead of the counter-based draws of mlp_batch_indices.
  m.def("mlp_train_steps(Tensor(a!) C, Tensor(b!) W1, Tensor(c!) b1, Tensor(d!) W2, "
        "Tensor(e!) b2, Tensor X, Tensor Y, Tensor lrs, int batch_size, int first_step, int seed, "
        "Tensor? batch_indices=None) -> Tensor");
  // The BatchNorm models' whole SGD steps (engine "fused" for bnmlp and wavenet; kernels.h's
  // ChainShape): every parameter and running statistic updated in place, the same minibatch
  // draws as mlp_train_steps; returns the steps' losses and, for each step where `record`
  // (bool, one per step) is true, the update statistics of kernel_functions.inc
  // (recorded steps, layers + 2, 4) float64. biases: one per layer, or none.
  m.def("chain_train_steps(Tensor(a!) C, Tensor(b!)[] weights, Tensor(c!)[] biases, "
        "Tensor(d!)[] gains, Tensor(e!)[] shifts, Tensor(f!)[] running_means, "
        "Tensor(g!)[] running_vars, Tensor(h!) out_weight, Tensor(i!) out_bias, Tensor X, "
        "Tensor Y, Tensor lrs, int[] groups, float momentum, float eps, bool unbiased, "
        "int batch_size, int first_step, int seed, Tensor? batch_indices=None, "
        "Tensor? record=None) -> (Tensor, Tensor)");
  // The minibatch rows mlp_train_steps draws: (steps, batch_size) int64.
  m.def("mlp_batch_indices(int seed, int first_step, int steps, int batch_size, int n_train) "
        "-> Tensor");
}
