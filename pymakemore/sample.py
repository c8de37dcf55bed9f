"""Sample words from a trained checkpoint.

    python -m pymakemore.sample -o out -n 20 [--temperature T] [--top-k K] [--prefix STR]
                                [--seed S] [--device cpu|cuda|auto] [--num-chars N]

Word models print n words; a model trained on a text (--data text) prints one passage of
--num-chars characters that continues --prefix.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Optional

import torch

from .checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from .data import BOUNDARY, Vocab
from .cli import OneLineParser
from .devices import DeviceError, resolve_device


TEXT_SAMPLE_CHARS = 500


MAX_SAMPLES = 10 ** 6  # words per call (each one a row of the batch being drawn)
MAX_CHARS = 10 ** 7


def _check(temperature: float, top_k: Optional[int]) -> None:
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")


def _next_ids(model: torch.nn.Module, seqs: torch.Tensor, temperature: float,
              top_k: Optional[int], generator: Optional[torch.Generator]) -> torch.Tensor:
    """One draw per row from the model's distribution of the next character after `seqs`:
    fixed-window models see the last block_size ids, autoregressive ones (gpt) up to that."""
    logits, _ = model(seqs[:, -model.block_size:])
    if getattr(model, "autoregressive", False):
        logits = logits[:, -1]
    # max-subtracted before the division, in float64: a tiny temperature then gives 0 for the
    # likeliest character and -inf (or a large negative) for the rest (greedy), never inf - inf
    logits = logits.double()
    logits = (logits - logits.max(dim=1, keepdim=True).values) / temperature
    if top_k is not None and top_k < logits.shape[1]:
        kth = torch.topk(logits, top_k, dim=1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator).squeeze(1)


@torch.no_grad()
def sample_words(model: torch.nn.Module, vocab: Vocab, n: int, *, temperature: float = 1.0,
                 top_k: Optional[int] = None, prefix: str = "",
                 generator: Optional[torch.Generator] = None, max_length: int = 100,
                 device: str | torch.device = "cpu") -> list[str]:
    """n words, each `prefix` + characters drawn until the '.' boundary (or max_length)."""
    _check(temperature, top_k)
    if BOUNDARY in prefix:
        raise ValueError(f"the prefix {prefix!r} contains {BOUNDARY!r}, which marks the end "
                         f"of a word")
    # window models start from a context of '.'s; gpt from the single '.' it was trained on
    pad = 1 if getattr(model, "autoregressive", False) else model.block_size
    seqs = torch.tensor([[0] * pad + vocab.encode(prefix)] * n, dtype=torch.int64,
                        device=device)
    out = [list(prefix) for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool, device=device)
    was_training = model.training
    model.eval()
    for _ in range(max_length):
        nxt = _next_ids(model, seqs, temperature, top_k, generator)
        for i, ix in enumerate(nxt.tolist()):
            if not done[i] and ix != 0:
                out[i].append(vocab.itos[ix])
        done |= nxt == 0
        if bool(done.all()):
            break
        seqs = torch.cat([seqs[:, -model.block_size:], nxt.unsqueeze(1)], dim=1)
    model.train(was_training)
    return ["".join(chars) for chars in out]


@torch.no_grad()
def sample_text(model: torch.nn.Module, vocab: Vocab, length: int, *, temperature: float = 1.0,
                top_k: Optional[int] = None, prefix: str = "",
                generator: Optional[torch.Generator] = None,
                device: str | torch.device = "cpu") -> str:
    """`prefix` followed by `length` characters drawn from a model trained on a text (from a
    newline when the prefix is empty, as the lecture starts)."""
    _check(temperature, top_k)
    start = vocab.encode(prefix) if prefix else [vocab.stoi().get("\n", 0)]
    seqs = torch.tensor([start], dtype=torch.int64, device=device)
    drawn = []
    was_training = model.training
    model.eval()
    for _ in range(length):
        nxt = _next_ids(model, seqs, temperature, top_k, generator)
        drawn.append(int(nxt))
        seqs = torch.cat([seqs[:, -model.block_size:], nxt.unsqueeze(1)], dim=1)
    model.train(was_training)
    return prefix + vocab.decode(drawn)


def print_samples(words: list[str], train_words: set[str], file=None) -> None:
    """Each sample with whether the training set holds it (as makemore marks them)."""
    file = file or sys.stdout
    width = max((len(w) for w in words), default=0)
    for w in words:
        print(f"  {w:<{width}}  {'(in train)' if w in train_words else '(new)'}", file=file)
    new = sum(w not in train_words for w in words)
    print(f"{new} of {len(words)} samples are new (not in the training set)", file=file)


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(prog="python -m pymakemore.sample",
                                description="Sample words from a trained pymakemore model.")
    p.add_argument("-o", "--work-dir", default="out", help="folder holding model.pt (default: out)")
    p.add_argument("-n", "--num-samples", type=int, default=20, help="how many words (default 20)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="divide the logits by T: below 1 safer, above 1 wilder (default 1.0)")
    p.add_argument("--top-k", type=int, default=None,
                   help="draw only from the K most likely characters (default: all)")
    p.add_argument("--prefix", default="",
                   help="start every word (or the passage) with these characters")
    p.add_argument("--num-chars", type=int, default=TEXT_SAMPLE_CHARS,
                   help=f"characters to generate for a text model (default {TEXT_SAMPLE_CHARS})")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                   help="where to run the model (default cpu)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if not 1 <= args.num_samples <= MAX_SAMPLES:
            raise ValueError(f"--num-samples must be >= 1 and <= {MAX_SAMPLES:,}, got "
                             f"{args.num_samples}")
        if not 1 <= args.num_chars <= MAX_CHARS:
            raise ValueError(f"--num-chars must be >= 1 and <= {MAX_CHARS:,}, got "
                             f"{args.num_chars}")
        if not args.work_dir.strip():
            raise ValueError(f"-o must name a folder, got {args.work_dir!r}")
        if args.seed is not None and not -(1 << 63) <= args.seed < 1 << 64:
            raise ValueError(f"--seed must fit in 64 bits, got {args.seed}")
        ckpt = load_checkpoint(args.work_dir)
        device = resolve_device(args.device, ckpt["config"].get("ops", "fused"))
        model, vocab = model_from_checkpoint(ckpt, device)
        bad = next((name for name, p in model.named_parameters()
                    if not bool(torch.isfinite(p).all())), None)
        if bad is not None:
            raise ValueError(f"the checkpoint's parameter {bad} holds NaN or infinite values: "
                             f"the model cannot be sampled (it diverged)")
        generator = torch.Generator(device=device)
        if args.seed is None:
            generator.seed()
        else:
            generator.manual_seed(args.seed)
        options = dict(temperature=args.temperature, top_k=args.top_k, prefix=args.prefix,
                       generator=generator, device=device)
        if ckpt["config"].get("data") == "text":
            print(sample_text(model, vocab, args.num_chars, **options))
            return 0
        words = sample_words(model, vocab, args.num_samples, **options)
    except (CheckpointError, DeviceError, ValueError) as e:
        print(f"pymakemore.sample: error: {e}", file=sys.stderr)
        return 2
    print_samples(words, set(ckpt["train_words"].split("\n")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
