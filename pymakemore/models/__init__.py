"""The makemore models, one file per family; each maps (idx, targets) to (logits, loss) and
names in CONFIG_KEYS the trainer options its constructor takes."""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from .bigram import Bigram
from .bnmlp import BNMLP
from .bow import BoW
from .gpt import GPT
from .mlp import MLP
from .recurrent import GRU, RNN
from .wavenet import WaveNet

MODELS = {"bigram": Bigram, "mlp": MLP, "bnmlp": BNMLP, "wavenet": WaveNet, "gpt": GPT,
          "rnn": RNN, "gru": GRU, "bow": BoW}


def build_model(config: dict[str, Any], vocab_size: int) -> torch.nn.Module:
    """The model of config["type"], built from the config's values of its CONFIG_KEYS."""
    cls = MODELS[config["type"]]
    return cls(vocab_size, **{k: config[k] for k in cls.CONFIG_KEYS})


def autoregressive(kind: str) -> bool:
    """Whether models of this type read whole words (gpt, rnn, gru, bow: one word per example,
    the block size from the data) rather than a fixed window."""
    return getattr(MODELS[kind], "autoregressive", False)


def model_problem(config: dict[str, Any], name: Callable[[str], str] = str) -> Optional[str]:
    """What is wrong with the config's hyperparameters for its model type (a model's own rules
    beyond each value's range, e.g. gpt's n_embd a multiple of n_head), or None."""
    cls = MODELS[config["type"]]
    rules = getattr(cls, "problem", None)
    return rules({k: config[k] for k in cls.CONFIG_KEYS}, name) if rules else None


__all__ = ["Bigram", "BNMLP", "BoW", "GPT", "GRU", "MLP", "RNN", "WaveNet", "MODELS",
           "autoregressive", "build_model", "model_problem"]
