"""Training engines: how the trainer runs a block of SGD steps.

- "ops": step by step from Python, each op through autograd (any model, any device).
- "fused": the makemore MLP's whole steps in one call per block (minibatch draw, forward,
  backward, update), no Python, autograd or dispatcher between ops: C++ on the CPU (two
  threads), one persistent kernel on CUDA (every parameter in one block's shared memory).
  float32, MLP only. Minibatches come from a counter-based hash of (seed, step, row), the same
  on both devices, so a resumed run continues the same sequence.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import _C  # noqa: F401  (registers torch.ops.pymakemore.*)
from .devices import has_cuda_kernels
from .models import MLP

ENGINES = ("ops", "fused")
_ops = torch.ops.pymakemore


def fused_supports(model: torch.nn.Module, device: torch.device) -> Optional[str]:
    """None when the fused engine can run this model here, else the reason it cannot."""
    if not isinstance(model, MLP):
        return f"--engine fused runs the mlp model only, not {type(model).__name__}"
    if model.ops != "fused":
        return "--engine fused runs the fused ops; --ops torch needs --engine ops"
    if device.type == "cuda" and not has_cuda_kernels():
        return "--engine fused on CUDA needs the CUDA build of the kernels"
    if device.type not in ("cpu", "cuda"):
        return f"--engine fused runs on the CPU or CUDA, not {device.type}"
    if any(p.dtype != torch.float32 for p in model.parameters()):
        return "--engine fused needs float32 parameters"
    return None


@torch.no_grad()
def fused_steps(model: MLP, x: torch.Tensor, y: torch.Tensor, lrs: torch.Tensor,
                batch_size: int, first_step: int, seed: int,
                batch_indices: Optional[torch.Tensor] = None) -> torch.Tensor:
    """len(lrs) SGD steps of the MLP, parameters updated in place; the steps' losses."""
    params = [p.detach() for p in (model.C, model.W1, model.b1, model.W2, model.b2)]
    return _ops.mlp_train_steps(*params, x.contiguous(), y.contiguous(),
                                lrs.to(x.device, torch.float32).contiguous(), batch_size,
                                first_step, seed, batch_indices)


def batch_indices(seed: int, first_step: int, steps: int, batch_size: int,
                  n_train: int) -> torch.Tensor:
    """The training-set rows the fused engine draws for those steps: (steps, batch_size)."""
    return _ops.mlp_batch_indices(seed, first_step, steps, batch_size, n_train)


@torch.library.register_fake("pymakemore::mlp_train_steps")
def _mlp_train_steps_fake(C, W1, b1, W2, b2, X, Y, lrs, batch_size, first_step, seed,
                          batch_indices=None):
    return lrs.new_empty(lrs.shape)


@torch.library.register_fake("pymakemore::mlp_batch_indices")
def _mlp_batch_indices_fake(seed, first_step, steps, batch_size, n_train):
    return torch.empty((steps, batch_size), dtype=torch.int64)
