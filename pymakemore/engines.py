"""Training engines: how the trainer runs a block of SGD steps.

- "auto" (the default): the fastest of the three below that runs the model, device and
  options: "fused" for the makemore MLP on SGD, else "graph" on CUDA where it applies, else
  "ops" (see choose()).
- "ops": step by step from Python, each op through autograd (any model, any device).
- "graph": CUDA only: one whole SGD step (minibatch draw, forward, backward, update) captured
  once in a CUDA graph and replayed, the learning rate in device memory; the same minibatches
  as "ops" (the same generator, advanced by each replay), no Python or launches per op.
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

ENGINES = ("auto", "ops", "graph", "fused")
WARMUP_STEPS = 2  # eager steps (real ones) before the capture, as CUDA graphs require
_ops = torch.ops.pymakemore


def fused_supports(model: torch.nn.Module, device: torch.device, config: dict
                   ) -> Optional[str]:
    """None when the fused engine can run this model here, else the reason it cannot."""
    if config["optimizer"] != "sgd":  # its update is plain SGD, written in the kernel
        return "--engine fused runs plain SGD (--optimizer sgd)"
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


def choose(model: torch.nn.Module, config: dict, device: torch.device, distributed: bool
           ) -> str:
    """--engine auto: "fused" where it runs, else "graph" on CUDA where it runs, else "ops"
    (always under torchrun, which runs the ops engine only)."""
    if distributed or config["batch_size"] == 0 or config["backprop"] != "autograd":
        return "ops"
    if fused_supports(model, device, config) is None:
        return "fused"
    if graph_supports(config, device) is None:
        return "graph"
    return "ops"


def graph_supports(config: dict, device: torch.device) -> Optional[str]:
    """None when the graph engine can run this configuration, else the reason it cannot."""
    if device.type != "cuda":
        return "--engine graph captures CUDA graphs: it needs --device cuda"
    if config["optimizer"] != "sgd":
        return "--engine graph runs plain SGD (--optimizer sgd)"
    if config["backprop"] != "autograd" or config["diagnostics"]:
        return "--engine graph runs autograd's gradients without --diagnostics"
    if config["batch_size"] < 1:
        return "--engine graph draws minibatches: --batch-size must be >= 1"
    return None


class GraphedSteps:
    """SGD steps of any model, each the replay of one CUDA graph: the minibatch draw from
    `generator`, forward, backward (torch.autograd.grad, so no .grad is left behind) and
    p -= lr * grad with lr read from device memory. The first WARMUP_STEPS steps run eagerly
    on a side stream, then one step is captured; `run` replays it."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                 batch_size: int, generator: torch.Generator):
        self.model, self.x, self.y, self.batch_size, self.gen = model, x, y, batch_size, generator
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.lr = torch.zeros((), device=x.device)
        self.loss = torch.zeros((), device=x.device)
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.warmed = 0

    def _step(self) -> None:
        ix = torch.randint(0, len(self.x), (self.batch_size,), device=self.x.device,
                           generator=self.gen)
        _, loss = self.model(self.x.index_select(0, ix), self.y.index_select(0, ix))
        grads = torch.autograd.grad(loss, self.params)
        with torch.no_grad():
            for p, g in zip(self.params, grads):
                p.addcmul_(g, self.lr, value=-1.0)
            self.loss.copy_(loss)

    def run(self, steps: int, lr: float) -> torch.Tensor:
        """`steps` steps at rate lr; their losses, on the device."""
        self.lr.fill_(lr)
        losses = []
        for _ in range(steps):
            if self.graph is None and self.warmed < WARMUP_STEPS:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    self._step()
                torch.cuda.current_stream().wait_stream(side)
                self.warmed += 1
            else:
                if self.graph is None:
                    self.graph = torch.cuda.CUDAGraph()
                    self.graph.register_generator_state(self.gen)
                    with torch.cuda.graph(self.graph):
                        self._step()  # recorded, not run
                self.graph.replay()
            losses.append(self.loss.clone())
        return torch.stack(losses)
