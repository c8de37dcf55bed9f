"""The BatchNorm MLP of makemore part 3 (and the network of part 4's manual backprop):
embedding, n_layer x [linear (no bias) -> BatchNorm -> tanh], linear output, cross entropy."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .. import valid
from ..valid import refuse
from .layers import LECTURE_SEED, OPS, BatchNorm, check_ops, lecture_linear, lm_loss

TANH_GAIN = 5 / 3  # keeps tanh's activations at unit scale (Kaiming init for tanh)


class BNMLP(torch.nn.Module):
    """idx (B, block_size) -> logits (B, vocab_size).

    Init (part 3): hidden weights randn * (5/3) / sqrt(fan_in), output weight randn * 0.01,
    output bias 0, BatchNorm gain 1 and bias 0; hidden_bias adds part 4's (redundant) bias
    before the BatchNorm, randn * 0.1. Running statistics with momentum 0.001, as part 3.
    n_layer=5, n_hidden=100 is the lecture's deeper network for the diagnostics.
    """

    CONFIG_KEYS = ("block_size", "n_embd", "n_hidden", "n_layer", "hidden_bias", "ops", "seed")

    def __init__(self, vocab_size: int, block_size: int = 3, n_embd: int = 10,
                 n_hidden: int = 200, n_layer: int = 1, hidden_bias: bool = False,
                 ops: str = "fused", seed: int = LECTURE_SEED, bn_momentum: float = 0.001):
        super().__init__()
        check_ops(ops)
        refuse(valid.problem("n_layer", n_layer, valid.at_least(1)))
        self.block_size, self.ops = block_size, ops
        g = torch.Generator().manual_seed(seed)
        self.C = torch.nn.Parameter(torch.randn((vocab_size, n_embd), generator=g))
        self.hidden = torch.nn.ModuleList()
        self.norms = torch.nn.ModuleList()
        fan_in = n_embd * block_size
        for _ in range(n_layer):
            self.hidden.append(lecture_linear(fan_in, n_hidden, hidden_bias, g, ops,
                                              scale=TANH_GAIN / math.sqrt(fan_in),
                                              bias_scale=0.1))
            self.norms.append(BatchNorm(n_hidden, momentum=bn_momentum))
            fan_in = n_hidden
        self.out = lecture_linear(n_hidden, vocab_size, True, g, ops, scale=0.01)

    def forward(self, idx: Tensor, targets: Optional[Tensor] = None,
                record: Optional[list[Tensor]] = None) -> tuple[Tensor, Optional[Tensor]]:
        """record: when a list, each tanh layer's output is appended (gradients retained)."""
        x = OPS[self.ops].embedding(idx, self.C).reshape(idx.shape[0], -1)
        for linear, norm in zip(self.hidden, self.norms):
            x = norm.tanh(linear(x), self.ops)
            if record is not None:
                x.retain_grad()
                record.append(x)
        logits = self.out(x)
        return logits, lm_loss(self.ops, logits, targets)
