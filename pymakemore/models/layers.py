"""Building blocks of the makemore part-3 and part-5 models, as the lectures write them
(PyTorch-like modules with the lectures' initialisation), on the fused ops or plain torch."""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import Tensor

from .. import nn as fused_nn
from .. import ops as fused_ops
from .. import reference

OPS = {"fused": fused_ops, "torch": reference}
LINEAR = {"fused": fused_nn.Linear, "torch": torch.nn.Linear}

# The lectures' generator seed (torch.Generator().manual_seed(2147483647)): the models'
# default initialisation seed and the trainer's default --seed.
LECTURE_SEED = 2147483647

# The target of positions with nothing to predict (word padding): cross entropy's
# ignore_index wherever the models and the trainer compute a loss.
IGNORE_TARGET = -1


def check_ops(ops: str) -> None:
    if ops not in OPS:
        raise ValueError(f"ops must be one of {sorted(OPS)}, got {ops!r}")


def lecture_linear(fan_in: int, fan_out: int, bias: bool, generator: torch.Generator,
                   ops: str = "fused", scale: Optional[float] = None,
                   bias_scale: float = 0.0) -> torch.nn.Linear:
    """The lectures' Linear as a public module (pymakemore.nn.Linear on the fused ops, or
    torch.nn.Linear): the weight drawn as randn(fan_in, fan_out) * scale (default
    1 / sqrt(fan_in)) and stored (out, in), the bias randn * bias_scale."""
    check_ops(ops)
    layer = LINEAR[ops](fan_in, fan_out, bias=bias, device="meta")  # shapes only, no draws
    scale = 1.0 / math.sqrt(fan_in) if scale is None else scale
    w = torch.randn((fan_in, fan_out), generator=generator) * scale
    layer.weight = torch.nn.Parameter(w.t().contiguous())
    if bias:
        layer.bias = torch.nn.Parameter(torch.randn(fan_out, generator=generator) * bias_scale)
    return layer


class BatchNorm(torch.nn.Module):
    """The lectures' BatchNorm1d: in training, normalise with the batch's mean and unbiased
    variance over every dimension but the last (batch, or batch and time) and update the
    running statistics; in evaluation, use the running statistics."""

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.gain = torch.nn.Parameter(torch.ones(dim))
        self.bias = torch.nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            dims = tuple(range(x.dim() - 1))
            mean = x.mean(dims)
            var = x.var(dims)
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var, self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return self.gain * ((x - mean) * torch.rsqrt(var + self.eps)) + self.bias

    def tanh(self, x: Tensor, ops: str) -> Tensor:
        """torch.tanh(self(x)); on the fused ops one ops.batch_norm_tanh (statistics,
        normalisation, tanh and the running statistics' update in one op)."""
        if ops == "fused":
            return fused_ops.batch_norm_tanh(x, self.running_mean, self.running_var, self.gain,
                                             self.bias, self.training, self.momentum, self.eps,
                                             unbiased=True)
        return torch.tanh(self(x))


@contextmanager
def running_stats_kept(model: torch.nn.Module) -> Iterator[None]:
    """Inside: a training-mode forward that updates no running statistics for good (they are
    put back on exit), for checks that must not train the model."""
    saved = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    try:
        yield
    finally:
        model.load_state_dict({**model.state_dict(), **saved})


class FlattenConsecutive(torch.nn.Module):
    """(B, T, C) -> (B, T/n, C*n): n consecutive positions side by side (part 5's WaveNet)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        return x.reshape(b, t // self.n, c * self.n)


def lm_loss(ops: str, logits: Tensor, targets: Optional[Tensor]) -> Optional[Tensor]:
    """Mean cross entropy over every position whose target is not IGNORE_TARGET (padding)."""
    if targets is None:
        return None
    return OPS[ops].cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                  ignore_index=IGNORE_TARGET)
