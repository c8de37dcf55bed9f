"""Words (or a text) -> vocabulary -> (X, Y) examples -> train/dev/test splits.

Three layouts, as in the lectures:
- "windows" (makemore parts 1-5): one word a line, characters as tokens, index 0 the '.'
  boundary token, context windows of `block_size` characters padded with '.', and an 80/10/10
  split after `random.seed(split_seed); random.shuffle(words)`; Y is the next character.
- "sequences" (makemore's transformer): the same words and split, each word one example:
  X = '.' + word, Y = word + '.', padded to the longest word; padded targets are IGNORE_TARGET.
- "text" (the GPT lecture): one character stream, vocabulary = its sorted characters (no
  boundary token), first 90% train, last 10% dev (also used as test); examples are windows
  of `block_size` characters and the same window shifted by one.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence

import torch

from .models.layers import IGNORE_TARGET

BOUNDARY = "."
LAYOUTS = ("windows", "sequences", "text")
# "sequences" pads every word to the longest: bounds on one word's ids (the model's block size
# is bounded alike) and on all of them (two int64 tensors of that many ids)
MAX_SEQUENCE = 1 << 20
FINGERPRINT_PREFIX = "splits-sha256:"
MAX_PADDED = 1 << 31


class DataError(Exception):
    """A data file that cannot be used; the message is one line for the user."""


def default_words_path() -> Path:
    return Path(str(resources.files("pymakemore") / "data" / "names.txt"))


def read_text(path: str | Path) -> str:
    """A UTF-8 text file's contents, with one-line errors for what cannot be read."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"input file not found: {path}")
    if path.is_dir():
        raise DataError(f"input file is a directory: {path}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read input file {path}: {e.strerror or e}") from None
    nul = raw.find(b"\0")
    if nul >= 0:  # valid UTF-8, but no text file holds it: a binary file
        line = raw[:nul].count(b"\n") + 1
        raise DataError(f"input file {path} is not text (a NUL byte at line {line})")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"input file {path} is not UTF-8 text (bad byte at line {line})") from None


def read_words(path: Optional[str | Path]) -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped; the built-in names when path is None."""
    path = default_words_path() if path is None else Path(path)
    text = read_text(path)
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
    """Characters of the data, sorted, after the '.' boundary token at index 0 (word lists);
    a text's vocabulary (boundary=False) is its sorted characters alone."""

    chars: str  # without the boundary token
    boundary: bool = True

    @classmethod
    def from_words(cls, words: Sequence[str]) -> "Vocab":
        chars = sorted(set("".join(words)) - {BOUNDARY})
        return cls("".join(chars))

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls("".join(sorted(set(text))), boundary=False)

    @property
    def itos(self) -> str:
        return BOUNDARY + self.chars if self.boundary else self.chars

    @property
    def size(self) -> int:
        return len(self.itos)

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


def sequences(words: Sequence[str], vocab: Vocab, length: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each word as one example: X = '.' + word, Y = word + '.', padded to `length` (X with '.',
    Y with IGNORE_TARGET)."""
    x = torch.zeros((len(words), length), dtype=torch.int64)
    y = torch.full((len(words), length), IGNORE_TARGET, dtype=torch.int64)
    for i, word in enumerate(words):
        ids = vocab.encode(word)
        x[i, 1:len(ids) + 1] = torch.tensor(ids, dtype=torch.int64)
        y[i, :len(ids) + 1] = torch.tensor(ids + [0], dtype=torch.int64)
    return x, y


def text_windows(stream: torch.Tensor, block_size: int, stride: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of `block_size` ids and the same windows shifted by one, every `stride` ids:
    stride 1 gives every window (views, no copy), stride block_size tiles the stream."""
    x = stream[:-1].unfold(0, block_size, stride)
    y = stream[1:].unfold(0, block_size, stride)
    return x, y


@dataclass
class Splits:
    vocab: Vocab
    words: dict[str, list[str]]                       # "train" / "dev" / "test"
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]]   # what minibatches are drawn from
    # text layout: the id streams the windows are views of, and the block size
    streams: Optional[dict[str, torch.Tensor]] = None
    block_size: Optional[int] = None
    _fingerprint: Optional[str] = field(default=None, repr=False)  # computed once, kept by to()

    def evaluation(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """What losses are measured on: the examples, or for a text the windows that tile it
        (each character predicted once)."""
        if self.streams is None:
            return self.tensors[name]
        return text_windows(self.streams[name], self.block_size, self.block_size)

    def fingerprint(self) -> str:
        """sha256 of the examples of all three splits: whether a checkpoint was trained (and
        evaluated) on this data. Prefixed, as checkpoints written before it hold the training
        split's alone (train_fingerprint)."""
        if self._fingerprint is None:
            self._fingerprint = FINGERPRINT_PREFIX + self._digest(("train", "dev", "test"))
        return self._fingerprint

    def train_fingerprint(self) -> str:
        """sha256 of the training split's examples (what older checkpoints hold)."""
        return self._digest(("train",))

    def matches(self, fingerprint: str) -> bool:
        """Whether a checkpoint's data fingerprint is this data's."""
        if fingerprint.startswith(FINGERPRINT_PREFIX):
            return fingerprint == self.fingerprint()
        return fingerprint == self.train_fingerprint()

    def _digest(self, names: tuple[str, ...]) -> str:
        h = hashlib.sha256()
        for name in names:
            parts = [self.streams[name]] if self.streams is not None else self.tensors[name]
            for t in parts:
                h.update(t.cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def to(self, device) -> "Splits":
        if self.streams is not None:  # move the streams, not the (much larger) windows
            streams = {k: v.to(device) for k, v in self.streams.items()}
            moved = _text_splits(self.vocab, streams, self.block_size)
        else:
            moved = Splits(self.vocab, self.words,
                           {k: (x.to(device), y.to(device)) for k, (x, y) in self.tensors.items()})
        moved._fingerprint = self._fingerprint
        return moved


def _check_vocab(vocab: Vocab, chars: set[str]) -> None:
    unknown = sorted(chars - set(vocab.itos))
    if unknown:
        raise DataError(f"the data holds characters the model was not trained on: "
                        f"{''.join(unknown)!r}")


def load_splits(path: Optional[str | Path], block_size: Optional[int], split_seed: int = 42,
                vocab: Optional[Vocab] = None, layout: str = "windows") -> Splits:
    """block_size: context length; for "sequences" None means the longest word + 1."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "text":
        return _load_text(path, block_size, vocab)
    words = read_words(path)
    if vocab is None:
        vocab = Vocab.from_words(words)
    else:
        _check_vocab(vocab, set("".join(words)))
    train, dev, test = split_words(words, split_seed)
    parts = {"train": train, "dev": dev, "test": test}
    empty = [name for name, part in parts.items() if not part]
    if empty:  # said at once, before any example is built
        raise DataError(f"input file {path or default_words_path()} holds {len(words)} "
                        f"word{'s' if len(words) != 1 else ''}: too few for the 80/10/10 split "
                        f"(its {' and '.join(empty)} part{'s' if len(empty) > 1 else ''} would "
                        f"be empty; 6 words at least)")
    if layout == "windows":
        tensors = {k: context_windows(v, vocab, block_size) for k, v in parts.items()}
    else:
        needed = max(len(w) for w in words) + 1
        if block_size is not None and block_size < needed:
            raise DataError(f"the longest word needs a block size of {needed} (its characters "
                            f"and the end mark); got {block_size}")
        length = block_size or needed
        if length > MAX_SEQUENCE or len(words) * length > MAX_PADDED:
            raise DataError(f"every word is padded to the longest ({needed - 1:,} characters): "
                            f"{len(words):,} words of {length:,} ids is too large (at most "
                            f"{MAX_SEQUENCE:,} ids a word and {MAX_PADDED:,} in all)")
        tensors = {k: sequences(v, vocab, length) for k, v in parts.items()}
    return Splits(vocab, parts, tensors)


def _load_text(path: Optional[str | Path], block_size: Optional[int],
               vocab: Optional[Vocab]) -> Splits:
    if path is None:
        raise DataError("the text layout needs an input file (-i FILE); the built-in data "
                        "is a word list")
    if block_size is None:
        raise ValueError("the text layout needs a block size")
    text = read_text(path)
    if not text.strip():
        raise DataError(f"input file {path} holds no text (it is empty or blank)")
    if vocab is None:
        vocab = Vocab.from_text(text)
    else:
        _check_vocab(vocab, set(text))
    table = vocab.stoi()
    stream = torch.tensor([table[ch] for ch in text], dtype=torch.int64)
    n = int(0.9 * len(stream))
    parts = {"train": stream[:n], "dev": stream[n:], "test": stream[n:]}
    for name, part in parts.items():
        if len(part) <= block_size:
            raise DataError(f"input file {path}: its {name} part ({len(part)} characters) is "
                            f"not longer than the block size {block_size}")
    return _text_splits(vocab, parts, block_size)


def _text_splits(vocab: Vocab, streams: dict[str, torch.Tensor], block_size: int) -> Splits:
    tensors = {k: text_windows(v, block_size, 1) for k, v in streams.items()}
    return Splits(vocab, {k: [] for k in streams}, tensors, streams, block_size)
