"""The bigram models of makemore part 1: the counts model (add-one smoothed probabilities of
the next character given the previous one) and its neural twin, a (V, V) table of logits
trained by gradient descent, which converges to the same probabilities."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .layers import LECTURE_SEED, OPS, check_ops, lm_loss


class Bigram(torch.nn.Module):
    """idx (B, block_size) -> logits (B, V) of the character after the last one: row idx[:, -1]
    of the table W (one-hot(idx) @ W, done as an embedding lookup)."""

    CONFIG_KEYS = ("ops", "seed")
    block_size = 1

    def __init__(self, vocab_size: int, ops: str = "fused", seed: int = LECTURE_SEED):
        super().__init__()
        check_ops(ops)
        self.ops = ops
        g = torch.Generator().manual_seed(seed)
        self.W = torch.nn.Parameter(torch.randn((vocab_size, vocab_size), generator=g))

    def forward(self, idx: Tensor, targets: Optional[Tensor] = None
                ) -> tuple[Tensor, Optional[Tensor]]:
        logits = OPS[self.ops].embedding(idx[:, -1], self.W)
        return logits, lm_loss(self.ops, logits, targets)


def bigram_counts(x: Tensor, y: Tensor, vocab_size: int) -> Tensor:
    """(V, V) int64 counts N[previous, next] of the (context, next) pairs (last context id)."""
    pairs = x[:, -1].long() * vocab_size + y.long()
    return torch.bincount(pairs, minlength=vocab_size * vocab_size).view(vocab_size, vocab_size)


def counts_log_probs(counts: Tensor, smoothing: float = 1.0) -> Tensor:
    """log P[previous, next] of the counts model with add-`smoothing` smoothing."""
    p = counts.double() + smoothing
    return (p / p.sum(1, keepdim=True)).log()


def counts_nll(log_probs: Tensor, x: Tensor, y: Tensor) -> float:
    """The counts model's average negative log likelihood of the pairs (x[:, -1], y)."""
    return -log_probs[x[:, -1].long(), y.long()].mean().item()
