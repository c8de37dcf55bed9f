"""makemore.py's bag-of-words model, on words: each position sees the mean of its own and the
preceding positions' embeddings, then an MLP, then a linear head."""
from __future__ import annotations

import torch
from torch import Tensor

from .layers import LECTURE_SEED, OPS
from .recurrent import CharModel, uniform_linear


class BoW(CharModel):
    """makemore.py's bag of words: token and position embeddings added, then one block
    x = x + (the mean of x over this position and those before it); x = x + W2 tanh(W1 x + b1)
    + b2 (ops.linear_tanh, ops.linear), a linear head."""

    def __init__(self, vocab_size: int, block_size: int = 16, n_embd: int = 64,
                 n_embd2: int = 64, ops: str = "fused", seed: int = LECTURE_SEED):
        super().__init__(vocab_size, block_size, n_embd, n_embd2, ops)
        g = torch.Generator().manual_seed(seed)
        self.wte = torch.nn.Parameter(torch.randn(vocab_size, n_embd, generator=g))
        self.wpe = torch.nn.Parameter(torch.randn(block_size, n_embd, generator=g))
        self.c_fc_weight, self.c_fc_bias = uniform_linear(n_embd, n_embd2, g)
        self.c_proj_weight, self.c_proj_bias = uniform_linear(n_embd2, n_embd, g)
        self.head_weight, self.head_bias = uniform_linear(n_embd, vocab_size, g)

    def features(self, idx: Tensor) -> Tensor:
        f = OPS[self.ops]
        t = idx.shape[1]
        positions = torch.arange(t, device=idx.device)
        x = f.embedding(idx, self.wte) + f.embedding(positions, self.wpe)
        # the causal average: position i is the mean of positions 0..i (makemore.py's softmax
        # of a masked zero matrix, without its (T, T) weights)
        counts = torch.arange(1, t + 1, device=idx.device, dtype=x.dtype).unsqueeze(1)
        x = x + x.cumsum(dim=1) / counts
        return x + f.linear(f.linear_tanh(x, self.c_fc_weight, self.c_fc_bias),
                            self.c_proj_weight, self.c_proj_bias)
