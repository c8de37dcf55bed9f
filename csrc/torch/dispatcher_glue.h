// Calling the ops through the dispatcher: typed handles (for the autograd Functions and the
// Python module's direct entries; each op's C++ signature is written once, in its slice's
// `signatures`), and what every op's autograd Function shares (a saved tensor that was None
// comes back as an argument through outputs.h's optional_of).
//
// Autograd is C++ for every op: a Function in each op's slice (`<op>.cpp`), registered for the
// Autograd key, which covers every device, calling the forward and backward ops through the
// dispatcher. A Python register_autograd would cost 46-107 us more a call at makemore's small
// shapes (bench/autograd_home_bench.py, bench/RESULTS.md).
//
// Higher-order gradients: a backward that runs with grad mode on (create_graph=True: gradient
// penalties, Hessian-vector products) computes its gradient with differentiable ATen ops
// instead of the fused backward op, so that gradients of gradients are exact, not zeros.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>

#include "outputs.h"

namespace pymakemore {

// The op `name` ("pymakemore::linear") called with C++ signature Signature.
template <typename Signature>
c10::TypedOperatorHandle<Signature> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

namespace autograd {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

inline bool requires_grad(const OptionalTensor& t) {
  return t && t->defined() && t->requires_grad();
}

// A tensor of a vmapped backward (is_grads_batched, jacobian(vectorize=True)).
inline bool batched(const at::Tensor& t) {
  if (!t.defined()) return false;
  const c10::DispatchKeySet keys = t.key_set();
  return keys.has(c10::DispatchKey::Batched) || keys.has(c10::DispatchKey::FuncTorchBatched);
}

}  // namespace autograd
}  // namespace pymakemore
