"""Training engines: how the trainer runs a block of SGD steps.

- "auto" (the default): the fastest of the three below that runs the model, device and
  options: "fused" for the makemore MLP on SGD, else "graph" on CUDA where it applies, else
  "ops" (see choose()).
Each is an Engine (ENGINES): whether it runs a model here and why not, and how it runs a block
of steps.
- "ops": step by step from Python, each op through autograd (any model, any device).
- "graph": CUDA only: one whole SGD step (minibatch draw, forward, backward, update) captured
  once in a CUDA graph and replayed, the learning rate in device memory; the same minibatches
  as "ops" (the same generator, advanced by each replay), no Python or launches per op.
- "fused": whole steps in one call per block (minibatch draw, forward, backward, update), no
  Python, autograd or dispatcher between ops, float32. The MLP: C++ on the CPU (two threads),
  one persistent kernel on CUDA (every parameter in one block's shared memory). The BatchNorm
  models (bnmlp, wavenet): C++ on the CPU (two threads), the running statistics updated at
  every step; on CUDA the graph engine runs them. Minibatches come from a counter-based hash of
  (seed, step, row), the same on both devices, so a resumed run continues the same sequence.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from . import _C  # noqa: F401  (registers torch.ops.pymakemore.*)
from . import distributed, manual_backprop
from .checkpoint import CheckpointError
from .devices import has_cuda_kernels
from .models import BNMLP, MLP, WaveNet
from .models.layers import IGNORE_TARGET

WARMUP_STEPS = 2  # eager steps (real ones) before the capture, as CUDA graphs require
_ops = torch.ops.pymakemore

# A block of training steps: (first step, stop step, learning rate) -> the steps' losses,
# left on the device.
Steps = Callable[[int, int, float], torch.Tensor]


@dataclass
class Run:
    """What an engine is given to train: the model (and its DDP wrapper under torchrun), the
    optimizer, the training split and the minibatch generator, the options."""
    model: torch.nn.Module
    optimizer: Any
    x: torch.Tensor
    y: torch.Tensor
    generator: torch.Generator
    config: dict
    device: torch.device
    group: distributed.Group = distributed.SINGLE
    trainer: Optional[torch.nn.Module] = None  # the model as DDP wraps it; else the model
    ratios: Any = None  # a diagnostics.UpdateRatios to feed, when diagnostics are on


class SGD:
    """Plain SGD as in the lectures (p -= lr * grad), without torch.optim's per-step
    bookkeeping, which costs more than the whole makemore forward pass on a CPU. The one SGD
    of the Python engines: the ops engine's (autograd or hand-written gradients in p.grad) and
    the graph engine's (gradients given, lr a 0-d tensor on the device, so that a CUDA graph
    replays whatever rate it holds). The fused engine's SGD is in its kernels."""

    def __init__(self, params, lr):
        self.params = [p for p in params if p.requires_grad]
        self.lr = lr

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, grads=None) -> None:
        for p, g in zip(self.params, grads if grads is not None else
                        [p.grad for p in self.params]):
            if isinstance(self.lr, torch.Tensor):
                p.addcmul_(g, self.lr, value=-1.0)
            else:
                p.add_(g, alpha=-self.lr)

    def state_dict(self) -> dict[str, Any]:
        return {"name": "sgd", "lr": float(self.lr)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != "sgd":
            raise CheckpointError(f"the checkpoint's optimizer is {state.get('name')!r}, not sgd")
        self.lr = state["lr"]


def make_optimizer(config: dict[str, Any], model: torch.nn.Module):
    if config["optimizer"] == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config["lr"],
                                 weight_decay=config["weight_decay"],
                                 betas=(0.9, config["beta2"]))
    return SGD(model.parameters(), lr=config["lr"])


def set_lr(optimizer, lr: float) -> None:
    if isinstance(optimizer, SGD):
        optimizer.lr = lr
    else:
        for group in optimizer.param_groups:
            group["lr"] = lr


class Engine:
    """How the trainer runs blocks of steps. `options_problem` says why this engine cannot run
    a configuration's options (None: it can), checked once, when they are parsed (and by
    `choose` for --engine auto); `problem` why it cannot run this model on this device (under
    torchrun or not). `start` prepares a run and returns its Steps, which get the learning
    rate of each block as their one channel for it."""
    name: str
    summary: str  # for --help
    distributed = False  # runs under torchrun

    def options_problem(self, config: dict) -> Optional[str]:
        return None

    def torchrun_problem(self) -> Optional[str]:
        """Why this engine cannot run under torchrun (None: it can)."""
        return None if self.distributed else \
            f"--engine {self.name} runs in one process, not under torchrun"

    def problem(self, model: torch.nn.Module, device: torch.device,
                distributed: bool) -> Optional[str]:
        return self.torchrun_problem() if distributed else None

    def start(self, run: Run) -> Steps:
        raise NotImplementedError


class OpsEngine(Engine):
    name = "ops"
    summary = "step by step through autograd (any model, device and options)"
    distributed = True

    def start(self, run: Run) -> Steps:
        manual = run.config["backprop"] == "manual"

        def steps(first: int, stop: int, lr: float) -> torch.Tensor:
            set_lr(run.optimizer, lr)
            block = run_steps(run.trainer if run.trainer is not None else run.model,
                              run.optimizer, run.x, run.y,
                              run.config["batch_size"], run.generator, stop - first,
                              first_step=first, lr=lr, manual=manual, ratios=run.ratios,
                              group=run.group)
            return distributed.mean_(block, run.group)  # the global batch's
        return steps


class GraphEngine(Engine):
    name = "graph"
    summary = "each step one CUDA-graph replay (CUDA, SGD)"

    def options_problem(self, config: dict) -> Optional[str]:
        if config["optimizer"] != "sgd":
            return "--engine graph runs plain SGD (--optimizer sgd)"
        if config["backprop"] != "autograd" or config["diagnostics"]:
            return "--engine graph runs autograd's gradients without --diagnostics"
        if config["batch_size"] < 1:
            return "--engine graph draws minibatches: --batch-size must be >= 1"
        return None

    def problem(self, model, device, distributed) -> Optional[str]:
        if device.type != "cuda":
            return "--engine graph captures CUDA graphs: it needs --device cuda"
        return super().problem(model, device, distributed)

    def start(self, run: Run) -> Steps:
        graphed = GraphedSteps(run.model, run.x, run.y, run.config["batch_size"], run.generator)
        return lambda first, stop, lr: graphed.run(stop - first, lr)


class FusedEngine(Engine):
    name = "fused"
    summary = ("whole steps in one call per block: the mlp (C++ on the CPU, one kernel on "
               "CUDA), bnmlp and wavenet (C++ on the CPU); SGD")

    def options_problem(self, config: dict) -> Optional[str]:
        if config["type"] not in FUSED_TYPES:  # first: the other rules are about those models
            return (f"--engine fused runs the {', '.join(FUSED_TYPES)} models only, not "
                    f"{config['type']}")
        if config["optimizer"] != "sgd":  # its update is plain SGD, written in the kernel
            return "--engine fused runs plain SGD (--optimizer sgd)"
        if config["backprop"] != "autograd":
            return "--backprop manual runs on --engine ops"
        if config["batch_size"] < 1:
            return "--batch-size 0 (the whole training set) runs on --engine ops"
        if config["ops"] != "fused":
            return "--engine fused runs the fused ops; --ops torch needs --engine ops"
        return None

    def problem(self, model, device, distributed) -> Optional[str]:
        # (the model's type and its ops come from the options, checked when parsed)
        if device.type not in ("cpu", "cuda"):
            return f"--engine fused runs on the CPU or CUDA, not {device.type}"
        if not isinstance(model, MLP) and device.type != "cpu":
            return (f"--engine fused runs {type(model).__name__} on the CPU; on CUDA the graph "
                    f"engine runs it")
        if device.type == "cuda" and not has_cuda_kernels():
            return "--engine fused on CUDA needs the CUDA build of the kernels"
        if any(p.dtype != torch.float32 for p in model.parameters()):
            return "--engine fused needs float32 parameters"
        return super().problem(model, device, distributed)

    def start(self, run: Run) -> Steps:
        config = run.config

        def steps(first: int, stop: int, lr: float) -> torch.Tensor:
            # minibatches from (seed + 1, step): a resumed run draws the same ones. Calls of at
            # most FUSED_CALL_STEPS steps (any split gives the same numbers): between them
            # Python runs, so a second Ctrl-C or SIGTERM stops at once even in a long block.
            return torch.cat([torch.empty(0, device=run.x.device)] + [
                fused_steps(run.model, run.x, run.y,
                            torch.full((min(stop, s + FUSED_CALL_STEPS) - s,), lr),
                            config["batch_size"], s, config["seed"] + 1, ratios=run.ratios)
                for s in range(first, stop, FUSED_CALL_STEPS)])
        return steps


FUSED_TYPES = ("mlp", "bnmlp", "wavenet")
FUSED_CALL_STEPS = 1000  # wavenet's 1,000 steps: about a quarter of a second on 2 cores

ENGINES: dict[str, Engine] = {e.name: e for e in (OpsEngine(), GraphEngine(), FusedEngine())}
FASTEST_FIRST = ("fused", "graph", "ops")


def choose(model: torch.nn.Module, config: dict, device: torch.device, distributed: bool
           ) -> str:
    """--engine auto: the first of FASTEST_FIRST that runs this model, device and options
    (under torchrun, the ops engine)."""
    return next(name for name in FASTEST_FIRST
                if ENGINES[name].options_problem(config) is None
                and ENGINES[name].problem(model, device, distributed) is None)


def run_steps(model: torch.nn.Module, optimizer, x: torch.Tensor, y: torch.Tensor,
              batch_size: int, gen: torch.Generator, steps: int, *, first_step: int = 0,
              lr: float = 0.0, manual: bool = False, ratios=None,
              group: distributed.Group = distributed.SINGLE) -> torch.Tensor:
    """The ops engine's loop: `steps` optimizer steps on minibatches drawn on x's device
    (batch_size 0: all of x); their losses, left on the device (no host read per step).
    manual: gradients by hand (manual_backprop) instead of autograd; ratios: a
    diagnostics.UpdateRatios to feed. Under torchrun every rank draws the same global batch and
    trains on its share of it."""
    losses = []
    mine = group.share(batch_size)
    # padded targets (gpt on words) make ranks' shares count unequally: weigh each rank's mean
    # by its share of the global batch's targets, so DDP's average is the global mean
    weigh = group.enabled and y.dim() > 1
    for i in range(steps):
        if batch_size:
            every = torch.randint(0, len(x), (batch_size,), device=x.device, generator=gen)
            ix = every[mine]
            xb, yb = x.index_select(0, ix), y.index_select(0, ix)
        else:
            xb, yb = x, y
        if manual:
            loss = manual_backprop.loss_and_grads(model, xb, yb)
        else:
            _, loss = model(xb, yb)
            if weigh:
                counted = (y.index_select(0, every) != IGNORE_TARGET).sum().clamp(min=1)
                loss = loss * ((yb != IGNORE_TARGET).sum() * group.world / counted)
            optimizer.zero_grad()
            loss.backward()
        if ratios is not None and ratios.wanted(first_step + i):
            ratios.record(first_step + i, lr)
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses)

@torch.no_grad()
def fused_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lrs: torch.Tensor,
                batch_size: int, first_step: int, seed: int,
                batch_indices: Optional[torch.Tensor] = None, ratios=None) -> torch.Tensor:
    """len(lrs) SGD steps of an MLP, BNMLP or WaveNet, parameters (and running statistics)
    updated in place; the steps' losses. batch_indices (steps, batch_size): the training rows
    of each step instead of the engine's own draws. ratios: a diagnostics.UpdateRatios (BNMLP,
    WaveNet) fed at the steps it wants, from sums the engine takes as it updates."""
    x, y = x.contiguous(), y.contiguous()
    lrs = lrs.to(x.device, torch.float32).contiguous()
    if isinstance(model, MLP):
        if ratios is not None:
            raise ValueError("the MLP's fused engine records no update:data ratios")
        params = [p.detach() for p in (model.C, model.W1, model.b1, model.W2, model.b2)]
        return _ops.mlp_train_steps(*params, x, y, lrs, batch_size, first_step, seed,
                                    batch_indices)
    if isinstance(model, BNMLP):
        groups = [model.block_size] + [1] * (len(model.hidden) - 1)
    elif isinstance(model, WaveNet):
        groups = [model.flatten.n] * len(model.hidden)
    else:
        raise TypeError(f"fused_steps runs MLP, BNMLP and WaveNet models, not "
                        f"{type(model).__name__}")
    norms = list(model.norms)
    if any((n.momentum, n.eps) != (norms[0].momentum, norms[0].eps) for n in norms):
        raise ValueError("fused_steps needs one BatchNorm momentum and eps for every layer")
    biases = [layer.bias.detach() for layer in model.hidden if layer.bias is not None]
    wanted = None
    if ratios is not None:
        wanted = [s for s in range(first_step, first_step + len(lrs)) if ratios.wanted(s)]
        record = torch.zeros(len(lrs), dtype=torch.bool)
        record[torch.tensor(wanted, dtype=torch.long) - first_step] = True
    losses, sums = _ops.chain_train_steps(
        model.C.detach(), [layer.weight.detach() for layer in model.hidden], biases,
        [n.gain.detach() for n in norms], [n.bias.detach() for n in norms],
        [n.running_mean for n in norms], [n.running_var for n in norms],
        model.out.weight.detach(), model.out.bias.detach(), x, y, lrs, groups,
        norms[0].momentum, norms[0].eps, True, batch_size, first_step, seed, batch_indices,
        record if wanted is not None else None)
    if wanted is not None:
        ratios.record_sums(wanted, sums)
    return losses


def batch_indices(seed: int, first_step: int, steps: int, batch_size: int,
                  n_train: int) -> torch.Tensor:
    """The training-set rows the fused engine draws for those steps: (steps, batch_size)."""
    return _ops.mlp_batch_indices(seed, first_step, steps, batch_size, n_train)


@torch.library.register_fake("pymakemore::mlp_train_steps")
def _mlp_train_steps_fake(C, W1, b1, W2, b2, X, Y, lrs, batch_size, first_step, seed,
                          batch_indices=None):
    return lrs.new_empty(lrs.shape)


@torch.library.register_fake("pymakemore::chain_train_steps")
def _chain_train_steps_fake(C, weights, biases, gains, shifts, running_means, running_vars,
                            out_weight, out_bias, X, Y, lrs, groups, momentum, eps, unbiased,
                            batch_size, first_step, seed, batch_indices=None, record=None):
    recorded = 0 if record is None else torch.library.get_ctx().new_dynamic_size()
    return (lrs.new_empty(lrs.shape),
            lrs.new_empty((recorded, len(weights) + 2, 4), dtype=torch.float64))


@torch.library.register_fake("pymakemore::mlp_batch_indices")
def _mlp_batch_indices_fake(seed, first_step, steps, batch_size, n_train):
    return torch.empty((steps, batch_size), dtype=torch.int64)


class GraphedSteps:
    """SGD steps of any model, each the replay of one CUDA graph: the minibatch draw from
    `generator`, forward, backward (torch.autograd.grad, so no .grad is left behind) and
    p -= lr * grad with lr read from device memory. The first WARMUP_STEPS steps run eagerly
    on a side stream, then one step is captured; `run` replays it."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                 batch_size: int, generator: torch.Generator):
        self.model, self.x, self.y, self.batch_size, self.gen = model, x, y, batch_size, generator
        self.sgd = SGD(model.parameters(), torch.zeros((), device=x.device))
        self.loss = torch.zeros((), device=x.device)
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.warmed = 0

    def _step(self) -> None:
        ix = torch.randint(0, len(self.x), (self.batch_size,), device=self.x.device,
                           generator=self.gen)
        _, loss = self.model(self.x.index_select(0, ix), self.y.index_select(0, ix))
        self.sgd.step(torch.autograd.grad(loss, self.sgd.params))
        with torch.no_grad():
            self.loss.copy_(loss)

    def run(self, steps: int, lr: float) -> torch.Tensor:
        """`steps` steps at rate lr; their losses, on the device."""
        self.sgd.lr.fill_(lr)
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
