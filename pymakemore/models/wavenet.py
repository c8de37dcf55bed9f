"""The WaveNet-like model of makemore part 5: the context is fused two neighbours at a time,
log2(block_size) times, each level linear (no bias) -> BatchNorm over batch and time -> tanh."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from ..valid import refuse
from .layers import (LECTURE_SEED, OPS, BatchNorm, FlattenConsecutive, check_ops, lecture_linear,
                     lm_loss)


class WaveNet(torch.nn.Module):
    """idx (B, block_size) -> logits (B, vocab_size); block_size a power of two.

    Init as the lecture: weights randn / sqrt(fan_in), the output layer's times 0.1, output bias
    0; BatchNorm momentum 0.1. The lecture's config (block 8, n_embd 24, n_hidden 128, 27
    characters) has 76,579 parameters.
    """

    CONFIG_KEYS = ("block_size", "n_embd", "n_hidden", "ops", "seed")

    @staticmethod
    def problem(values: dict, name: Callable[[str], str] = str) -> Optional[str]:
        """What is wrong with these hyperparameters, in the words of `name` (trainer flags)."""
        b = values["block_size"]
        if b < 2 or b & (b - 1):
            return f"the wavenet model needs {name('block_size')} a power of two >= 2, got {b}"
        return None

    def __init__(self, vocab_size: int, block_size: int = 8, n_embd: int = 24,
                 n_hidden: int = 128, ops: str = "fused", seed: int = LECTURE_SEED):
        super().__init__()
        check_ops(ops)
        refuse(self.problem(dict(block_size=block_size)))
        self.block_size, self.ops = block_size, ops
        g = torch.Generator().manual_seed(seed)
        self.C = torch.nn.Parameter(torch.randn((vocab_size, n_embd), generator=g))
        levels = block_size.bit_length() - 1
        self.flatten = FlattenConsecutive(2)
        self.hidden = torch.nn.ModuleList()
        self.norms = torch.nn.ModuleList()
        fan_in = 2 * n_embd
        for _ in range(levels):
            self.hidden.append(lecture_linear(fan_in, n_hidden, False, g, ops))
            self.norms.append(BatchNorm(n_hidden))
            fan_in = 2 * n_hidden
        self.out = lecture_linear(n_hidden, vocab_size, True, g, ops,
                                  scale=0.1 / n_hidden ** 0.5)

    def forward(self, idx: Tensor, targets: Optional[Tensor] = None,
                record: Optional[list[Tensor]] = None) -> tuple[Tensor, Optional[Tensor]]:
        x = OPS[self.ops].embedding(idx, self.C)              # (B, T, n_embd)
        for linear, norm in zip(self.hidden, self.norms):
            x = norm.tanh(linear(self.flatten(x)), self.ops)  # (B, T / 2, n_hidden)
            if record is not None:
                x.retain_grad()
                record.append(x)
        logits = self.out(x.squeeze(1))
        return logits, lm_loss(self.ops, logits, targets)
