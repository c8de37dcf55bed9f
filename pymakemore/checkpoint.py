"""Checkpoints: tensors and plain Python values only, loaded with weights_only=True (opening
someone else's model.pt never runs code), written to a temp file and renamed into place (a
crash never leaves a half-written model.pt)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .data import Vocab
from .models import MODELS, build_model

FORMAT = "pymakemore-checkpoint"
VERSION = 1
FILENAME = "model.pt"
REQUIRED = ("config", "vocab", "model", "optimizer", "step", "rng", "losses", "train_words")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line for the user."""


def save_checkpoint(work_dir: str | Path, payload: dict[str, Any]) -> Path:
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    final = work_dir / FILENAME
    fd, tmp = tempfile.mkstemp(prefix=".model.", suffix=".tmp", dir=work_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final


def load_checkpoint(work_dir: str | Path) -> dict[str, Any]:
    path = Path(work_dir) / FILENAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated, corrupt or foreign file: say so in one line
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {reason}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pymakemore checkpoint")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {ckpt.get('version')}, "
                              f"this pymakemore reads version {VERSION}")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}")
    if ckpt["config"].get("type") not in MODELS:
        raise CheckpointError(f"{path} holds an unknown model type {ckpt['config'].get('type')!r}")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], device: str | torch.device = "cpu"
                          ) -> tuple[torch.nn.Module, Vocab]:
    config = ckpt["config"]
    vocab = Vocab(ckpt["vocab"], boundary=config.get("data", "lines") != "text")
    try:
        model = build_model(config, vocab.size)
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint does not match its model config: {first}") from None
    return model.to(device), vocab
