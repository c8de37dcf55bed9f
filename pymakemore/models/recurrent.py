"""makemore.py's recurrent language models, on words: a vanilla RNN and a GRU. A learned start
state, token embeddings, one cell applied position by position (the hidden state carried from
each position to the next), a linear head on every hidden state. CharModel is what they share
with the bag of words (bow.py)."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .. import ops as fused_ops
from .layers import IGNORE_TARGET, LECTURE_SEED, OPS, check_ops, lm_loss


def uniform_linear(fan_in: int, fan_out: int, generator: torch.Generator
                   ) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    """(weight (fan_out, fan_in), bias (fan_out,)) drawn as torch.nn.Linear draws them
    (uniform in +-1/sqrt(fan_in)), from `generator`."""
    bound = 1.0 / math.sqrt(fan_in)
    w = (torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound
    b = (torch.rand(fan_out, generator=generator) * 2 - 1) * bound
    return torch.nn.Parameter(w), torch.nn.Parameter(b)


class CharModel(torch.nn.Module):
    """What makemore.py's word-level models share: idx (B, T <= block_size) -> logits
    (B, T, vocab_size), the next character's logits at each position given it and those
    before; targets (B, T), IGNORE_TARGET ignored. The head and loss as one
    ops.linear_cross_entropy on the fused ops (logits then None)."""

    CONFIG_KEYS = ("block_size", "n_embd", "n_embd2", "ops", "seed")
    autoregressive = True  # samplers feed it the whole context, not a fixed window

    def __init__(self, vocab_size: int, block_size: int, n_embd: int, n_embd2: int, ops: str):
        super().__init__()
        check_ops(ops)
        self.block_size, self.ops = block_size, ops
        self.vocab_size, self.n_embd, self.n_embd2 = vocab_size, n_embd, n_embd2

    def features(self, idx: Tensor) -> Tensor:
        """(B, T, features) for the head."""
        raise NotImplementedError

    def forward(self, idx: Tensor, targets: Optional[Tensor] = None
                ) -> tuple[Optional[Tensor], Optional[Tensor]]:
        t = idx.shape[1]
        if t > self.block_size:
            raise ValueError(f"sequence of {t} tokens is longer than the block size "
                             f"{self.block_size}")
        x = self.features(idx)
        if targets is not None and self.ops == "fused":
            return None, fused_ops.linear_cross_entropy(
                x.reshape(-1, x.shape[-1]), self.head_weight, targets.reshape(-1),
                self.head_bias, ignore_index=IGNORE_TARGET)
        logits = OPS[self.ops].linear(x, self.head_weight, self.head_bias)
        return logits, lm_loss(self.ops, logits, targets)


class RNN(CharModel):
    """makemore.py's RNN: h_t = tanh(W [x_t, h_{t-1}] + b) (one ops.linear_tanh on the fused
    ops), h_0 the learned start state (zeros at first). Parameters as torch.nn's defaults draw
    them (embeddings normal(0, 1), linears uniform in +-1/sqrt(fan_in)), from `seed`."""

    def __init__(self, vocab_size: int, block_size: int = 16, n_embd: int = 64,
                 n_embd2: int = 64, ops: str = "fused", seed: int = LECTURE_SEED):
        super().__init__(vocab_size, block_size, n_embd, n_embd2, ops)
        g = torch.Generator().manual_seed(seed)
        self.start = torch.nn.Parameter(torch.zeros(1, n_embd2))
        self.wte = torch.nn.Parameter(torch.randn(vocab_size, n_embd, generator=g))
        self.make_cell(g)
        self.head_weight, self.head_bias = uniform_linear(n_embd2, vocab_size, g)

    def make_cell(self, g: torch.Generator) -> None:
        self.xh_to_h_weight, self.xh_to_h_bias = uniform_linear(self.n_embd + self.n_embd2,
                                                                self.n_embd2, g)

    def cell(self, xt: Tensor, hprev: Tensor) -> Tensor:
        return OPS[self.ops].linear_tanh(torch.cat([xt, hprev], dim=1), self.xh_to_h_weight,
                                         self.xh_to_h_bias)

    def features(self, idx: Tensor) -> Tensor:
        emb = OPS[self.ops].embedding(idx, self.wte)  # (B, T, n_embd), all positions at once
        h = self.start.expand(idx.shape[0], -1)
        hiddens = []
        for i in range(idx.shape[1]):
            h = self.cell(emb[:, i], h)
            hiddens.append(h)
        if not hiddens:
            return emb.new_zeros(idx.shape[0], 0, self.n_embd2)
        return torch.stack(hiddens, 1)


class GRU(RNN):
    """makemore.py's GRU: r = sigmoid(W_r [x, h]), z = sigmoid(W_z [x, h]),
    hbar = tanh(W_h [x, r * h]) (ops.linear_tanh on the fused ops; the gates' linears fused
    ops, their sigmoids and blends torch's), h' = (1 - z) * h + z * hbar."""

    def make_cell(self, g: torch.Generator) -> None:
        fan_in = self.n_embd + self.n_embd2
        # makemore.py's order of creation: z, r, hbar
        self.xh_to_z_weight, self.xh_to_z_bias = uniform_linear(fan_in, self.n_embd2, g)
        self.xh_to_r_weight, self.xh_to_r_bias = uniform_linear(fan_in, self.n_embd2, g)
        self.xh_to_hbar_weight, self.xh_to_hbar_bias = uniform_linear(fan_in, self.n_embd2, g)

    def cell(self, xt: Tensor, hprev: Tensor) -> Tensor:
        f = OPS[self.ops]
        xh = torch.cat([xt, hprev], dim=1)
        r = torch.sigmoid(f.linear(xh, self.xh_to_r_weight, self.xh_to_r_bias))
        hbar = f.linear_tanh(torch.cat([xt, r * hprev], dim=1), self.xh_to_hbar_weight,
                             self.xh_to_hbar_bias)
        z = torch.sigmoid(f.linear(xh, self.xh_to_z_weight, self.xh_to_z_bias))
        return (1 - z) * hprev + z * hbar
