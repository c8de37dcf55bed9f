"""Modules on the fused ops, mirroring torch.nn: same constructors, parameters, state_dict
keys and initialisation, so they swap in for their torch.nn twins."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import ops

__all__ = ["Embedding", "Linear", "LinearTanh", "CrossEntropyLoss", "LinearCrossEntropyLoss"]


class Embedding(torch.nn.Embedding):
    """torch.nn.Embedding whose forward is ops.embedding."""

    def forward(self, input: Tensor) -> Tensor:
        return ops.embedding(input, self.weight, self.padding_idx, self.max_norm,
                             self.norm_type, self.scale_grad_by_freq, self.sparse)


class Linear(torch.nn.Linear):
    """torch.nn.Linear whose forward is ops.linear."""

    def forward(self, input: Tensor) -> Tensor:
        return ops.linear(input, self.weight, self.bias)


class LinearTanh(torch.nn.Linear):
    """torch.nn.Linear followed by tanh, in one fused op (same parameters as nn.Linear)."""

    def forward(self, input: Tensor) -> Tensor:
        return ops.linear_tanh(input, self.weight, self.bias)


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """torch.nn.CrossEntropyLoss whose forward is ops.cross_entropy."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return ops.cross_entropy(input, target, weight=self.weight,
                                 ignore_index=self.ignore_index, reduction=self.reduction,
                                 label_smoothing=self.label_smoothing)


class LinearCrossEntropyLoss(torch.nn.Module):
    """The loss of a linear head, F.cross_entropy(F.linear(input, weight, bias), target),
    without its logits (ops.linear_cross_entropy): call it with the head's parameters, e.g.
    loss_fn(hidden, model.head.weight, targets, model.head.bias). ce_weight: the class
    weights (a buffer, as CrossEntropyLoss's weight)."""

    def __init__(self, ce_weight: Optional[Tensor] = None, ignore_index: int = -100,
                 reduction: str = "mean", label_smoothing: float = 0.0,
                 softcap: Optional[float] = None, z_loss: float = 0.0):
        super().__init__()
        self.register_buffer("ce_weight", ce_weight)
        self.ignore_index, self.reduction = ignore_index, reduction
        self.label_smoothing, self.softcap, self.z_loss = label_smoothing, softcap, z_loss

    def forward(self, input: Tensor, weight: Tensor, target: Tensor,
                bias: Optional[Tensor] = None) -> Tensor:
        return ops.linear_cross_entropy(input, weight, target, bias, ce_weight=self.ce_weight,
                                        ignore_index=self.ignore_index,
                                        reduction=self.reduction,
                                        label_smoothing=self.label_smoothing,
                                        softcap=self.softcap, z_loss=self.z_loss)
