"""Words -> vocabulary -> (X, Y) context windows -> train/dev/test splits.

As in the makemore lectures: one word a line, characters as tokens, index 0 the '.' boundary
token, context windows of `block_size` characters padded with '.', and an 80/10/10 split after
`random.seed(split_seed); random.shuffle(words)`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence

import torch

BOUNDARY = "."
DEFAULT_DATASET = "built-in names (US SSA baby names, 2017)"


class DataError(Exception):
    """A data file that cannot be used; the message is one line for the user."""


def default_words_path() -> Path:
    return Path(str(resources.files("pymakemore") / "data" / "names.txt"))


def read_words(path: Optional[str | Path]) -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped; the built-in names when path is None."""
    path = default_words_path() if path is None else Path(path)
    if not path.exists():
        raise DataError(f"input file not found: {path}")
    if path.is_dir():
        raise DataError(f"input file is a directory: {path}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read input file {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"input file {path} is not UTF-8 text (bad byte at line {line})") from None
    words = []
    for number, line in enumerate(text.splitlines(), start=1):
        word = line.strip()
        if not word:
            continue
        if BOUNDARY in word:
            raise DataError(f"input file {path}, line {number}: {word!r} contains "
                            f"{BOUNDARY!r}, which marks the start and end of words")
        words.append(word)
    if not words:
        raise DataError(f"input file {path} holds no words (it is empty or blank)")
    return words


@dataclass(frozen=True)
class Vocab:
    """Characters of the data, sorted, after the '.' boundary token at index 0."""

    chars: str  # without the boundary token

    @classmethod
    def from_words(cls, words: Sequence[str]) -> "Vocab":
        chars = sorted(set("".join(words)) - {BOUNDARY})
        return cls("".join(chars))

    @property
    def itos(self) -> str:
        return BOUNDARY + self.chars

    @property
    def size(self) -> int:
        return len(self.chars) + 1

    def stoi(self) -> dict[str, int]:
        return {ch: i for i, ch in enumerate(self.itos)}

    def encode(self, word: str) -> list[int]:
        table = self.stoi()
        try:
            return [table[ch] for ch in word]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.itos[i] for i in ids)


def split_words(words: Sequence[str], split_seed: int = 42) -> tuple[list[str], list[str],
                                                                     list[str]]:
    """80/10/10 after random.seed(split_seed); random.shuffle(words), as in the lecture."""
    shuffled = list(words)
    random.seed(split_seed)
    random.shuffle(shuffled)
    n1, n2 = int(0.8 * len(shuffled)), int(0.9 * len(shuffled))
    return shuffled[:n1], shuffled[n1:n2], shuffled[n2:]


def context_windows(words: Sequence[str], vocab: Vocab, block_size: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (previous block_size characters, next character) pair, '.'-padded, as int64."""
    stoi = vocab.stoi()
    xs, ys = [], []
    for word in words:
        context = [0] * block_size
        for ch in word + BOUNDARY:
            ix = stoi[ch]
            xs.append(context)
            ys.append(ix)
            context = context[1:] + [ix]
    x = torch.tensor(xs, dtype=torch.int64).reshape(-1, block_size)
    return x, torch.tensor(ys, dtype=torch.int64)


@dataclass
class Splits:
    vocab: Vocab
    words: dict[str, list[str]]                       # "train" / "dev" / "test"
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]]

    def to(self, device) -> "Splits":
        moved = {k: (x.to(device), y.to(device)) for k, (x, y) in self.tensors.items()}
        return Splits(self.vocab, self.words, moved)


def load_splits(path: Optional[str | Path], block_size: int, split_seed: int = 42,
                vocab: Optional[Vocab] = None) -> Splits:
    words = read_words(path)
    if vocab is None:
        vocab = Vocab.from_words(words)
    else:
        unknown = sorted(set("".join(words)) - set(vocab.itos))
        if unknown:
            raise DataError(f"the data holds characters the model was not trained on: "
                            f"{''.join(unknown)!r}")
    train, dev, test = split_words(words, split_seed)
    parts = {"train": train, "dev": dev, "test": test}
    tensors = {k: context_windows(v, vocab, block_size) for k, v in parts.items()}
    return Splits(vocab, parts, tensors)
