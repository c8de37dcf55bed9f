"""The MLP language model of Bengio et al. 2003, as built in the makemore part-2 lecture:
an embedding table C, one tanh hidden layer, a linear output layer, cross entropy."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .layers import LECTURE_SEED, OPS, check_ops

INITS = ("lecture", "kaiming")


class MLP(torch.nn.Module):
    """idx (B, block_size) of character ids -> logits (B, vocab_size) for the next character.

    ops="fused" runs pymakemore.ops; ops="torch" runs the same maths in plain torch
    (pymakemore.reference). Both start from the same parameters for the same seed.

    init="lecture": every parameter torch.randn from torch.Generator().manual_seed(seed), drawn
    in the lecture's order and shapes (C, W1, b1, W2, b2). init="kaiming": the same draws, then
    W1 scaled by (5/3)/sqrt(fan_in), b1 by 0.01, W2 by 0.01 and b2 zeroed (the part-3 fix).
    """

    CONFIG_KEYS = ("block_size", "n_embd", "n_hidden", "init", "ops", "seed")

    def __init__(self, vocab_size: int, block_size: int = 3, n_embd: int = 10,
                 n_hidden: int = 200, init: str = "lecture", ops: str = "fused",
                 seed: int = LECTURE_SEED):
        super().__init__()
        check_ops(ops)
        if init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")
        self.block_size, self.ops = block_size, ops
        g = torch.Generator().manual_seed(seed)
        fan_in = n_embd * block_size
        C = torch.randn((vocab_size, n_embd), generator=g)
        W1 = torch.randn((fan_in, n_hidden), generator=g)
        b1 = torch.randn(n_hidden, generator=g)
        W2 = torch.randn((n_hidden, vocab_size), generator=g)
        b2 = torch.randn(vocab_size, generator=g)
        if init == "kaiming":
            W1 *= (5 / 3) / math.sqrt(fan_in)
            b1 *= 0.01
            W2 *= 0.01
            b2 *= 0.0
        self.C = torch.nn.Parameter(C)
        # stored as (out_features, in_features), the layout of F.linear and ops.linear_tanh
        self.W1 = torch.nn.Parameter(W1.t().contiguous())
        self.b1 = torch.nn.Parameter(b1)
        self.W2 = torch.nn.Parameter(W2.t().contiguous())
        self.b2 = torch.nn.Parameter(b2)

    def forward(self, idx: Tensor, targets: Optional[Tensor] = None
                ) -> tuple[Tensor, Optional[Tensor]]:
        f = OPS[self.ops]
        emb = f.embedding(idx, self.C)                               # (B, block, n_embd)
        h = f.linear_tanh(emb.view(idx.shape[0], -1), self.W1, self.b1)  # (B, n_hidden)
        logits = f.linear(h, self.W2, self.b2)                        # (B, vocab)
        loss = None if targets is None else f.cross_entropy(logits, targets)
        return logits, loss
