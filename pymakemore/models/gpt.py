"""A decoder-only transformer, as built in the "Let's build GPT" lecture: token and position
embeddings, n_layer pre-LayerNorm blocks of causal self-attention and a ReLU MLP with
residual connections and dropout, a final LayerNorm and a linear head to the vocabulary."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import valid
from ..valid import refuse
from .. import ops as fused_ops
from .layers import IGNORE_TARGET, LECTURE_SEED, OPS, check_ops, lm_loss


class CausalSelfAttention(torch.nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.qkv = torch.nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.proj = torch.nn.Linear(n_embd, n_embd)
        self.proj_drop = torch.nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, c // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(b, t, c)))


class Block(torch.nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.ln1 = torch.nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln2 = torch.nn.LayerNorm(n_embd)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(n_embd, 4 * n_embd), torch.nn.ReLU(),
            torch.nn.Linear(4 * n_embd, n_embd), torch.nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(torch.nn.Module):
    """idx (B, T <= block_size) -> logits (B, T, vocab_size): at each position the next
    character's logits given that position and those before it. Targets (B, T), -1 ignored.
    Weights normal(0, 0.02), biases 0, LayerNorms 1 and 0, drawn from `seed`."""

    CONFIG_KEYS = ("block_size", "n_embd", "n_head", "n_layer", "dropout", "ops", "seed")
    autoregressive = True  # samplers feed it the whole context, not a fixed window

    @staticmethod
    def problem(values: dict, name: Callable[[str], str] = str) -> Optional[str]:
        """What is wrong with these hyperparameters, in the words of `name` (trainer flags)."""
        if values["n_embd"] % values["n_head"]:
            return (f"{name('n_embd')} ({values['n_embd']}) must be a multiple of "
                    f"{name('n_head')} ({values['n_head']})")
        return valid.problem(name("dropout"), values["dropout"], valid.fraction)

    def __init__(self, vocab_size: int, block_size: int = 16, n_embd: int = 64, n_head: int = 4,
                 n_layer: int = 4, dropout: float = 0.0, ops: str = "fused",
                 seed: int = LECTURE_SEED):
        super().__init__()
        check_ops(ops)
        refuse(self.problem(dict(n_embd=n_embd, n_head=n_head, dropout=dropout)))
        self.block_size, self.ops = block_size, ops
        # with targets and the fused ops: head and loss as one ops.linear_cross_entropy (False:
        # the head's logits, then ops.cross_entropy; for comparisons)
        self.fused_head = True
        self.tok = torch.nn.Parameter(torch.empty(vocab_size, n_embd))
        self.pos = torch.nn.Parameter(torch.empty(block_size, n_embd))
        self.drop = torch.nn.Dropout(dropout)
        self.blocks = torch.nn.ModuleList(Block(n_embd, n_head, dropout) for _ in range(n_layer))
        self.ln_f = torch.nn.LayerNorm(n_embd)
        self.head = torch.nn.Linear(n_embd, vocab_size)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("bias") or ".ln" in name or name.startswith("ln_f"):
                    p.copy_(torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p))
                else:
                    p.normal_(0.0, 0.02, generator=g)

    def forward(self, idx: Tensor, targets: Optional[Tensor] = None
                ) -> tuple[Tensor, Optional[Tensor]]:
        t = idx.shape[1]
        if t > self.block_size:
            raise ValueError(f"sequence of {t} tokens is longer than the block size "
                             f"{self.block_size}")
        f = OPS[self.ops]
        positions = torch.arange(t, device=idx.device)
        x = self.drop(f.embedding(idx, self.tok) + f.embedding(positions, self.pos))
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        if targets is not None and self.ops == "fused" and self.fused_head:
            # the head and the loss in one op that never holds the (B*T, vocab) logits;
            # the logits are not computed (None), as nothing in training reads them
            return None, fused_ops.linear_cross_entropy(
                x.reshape(-1, x.shape[-1]), self.head.weight, targets.reshape(-1),
                self.head.bias, ignore_index=IGNORE_TARGET)
        logits = self.head(x)
        return logits, lm_loss(self.ops, logits, targets)
