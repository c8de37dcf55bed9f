"""Checkpoints: tensors and plain Python values only, loaded with weights_only=True (opening
someone else's model.pt never runs code), written to a temp file and renamed into place (a
crash or a full disk never leaves a half-written model.pt, and the previous one stays).
Whatever a checkpoint holds is checked before it is used: a bad one is one CheckpointError
line, never a traceback or an allocation its tensors do not justify."""
from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from .data import Vocab
from .models import MODELS, build_model
from .workdir import first_line, new_file_mode, write_cause

FORMAT = "pymakemore-checkpoint"
VERSION = 1
FILENAME = "model.pt"
REQUIRED = ("config", "vocab", "model", "optimizer", "step", "rng", "losses", "train_words")
CHECKSUM = "checksum"  # sha256 of everything else (payload_digest); older files lack it

# Config values that size a model: a positive int each (a bound on what a checkpoint may ask
# for before its tensors are compared with the model it describes).
SIZE_KEYS = ("block_size", "n_embd", "n_hidden", "n_layer", "n_head")
MAX_SIZE = 1 << 20


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line for the user."""


def payload_digest(payload: dict[str, Any]) -> str:
    """sha256 over every value of the payload but its checksum, tensors by dtype, shape and
    bytes, mappings in a fixed key order: a flipped byte anywhere changes it."""
    h = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"tensor {t.dtype} {tuple(t.shape)};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            h.update(f"dict {len(value)};".encode())
            for key in sorted(value, key=repr):
                feed(key)
                feed(value[key])
        elif isinstance(value, (list, tuple)):
            h.update(f"{type(value).__name__} {len(value)};".encode())
            for item in value:
                feed(item)
        else:
            h.update(f"{type(value).__name__} {value!r};".encode())

    feed({k: v for k, v in payload.items() if k != CHECKSUM})
    return h.hexdigest()


def seal(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with its checksum, as save_checkpoint writes it."""
    payload = {"format": FORMAT, "version": VERSION,
               **{k: v for k, v in payload.items() if k != CHECKSUM}}
    payload[CHECKSUM] = payload_digest(payload)
    return payload


def save_checkpoint(work_dir: str | Path, payload: dict[str, Any]) -> Path:
    """Writes model.pt through a temp file; on any failure the temp file is removed, the
    previous model.pt is left as it was, and the error is a CheckpointError naming the cause
    (a full disk included, which torch's writer reports without saying so)."""
    work_dir = Path(work_dir)
    final = work_dir / FILENAME
    tmp = None
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".model.", suffix=".tmp", dir=work_dir)
        os.fchmod(fd, new_file_mode())  # (mkstemp's 0600 would stay after the rename)
        with os.fdopen(fd, "wb") as f:
            torch.save(seal(payload), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except Exception as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {final}: {write_cause(e, work_dir)}"
                              ) from None
    except BaseException:  # interrupted mid-write: no temp file left behind
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return final


def load_checkpoint(work_dir: str | Path) -> dict[str, Any]:
    path = Path(work_dir) / FILENAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():  # (torch's notes on pickle protocols: not for users)
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if refused_pickle(str(e), path):
            raise CheckpointError(f"{path} holds objects other than tensors and plain values: "
                                  f"refused") from None
        raise CheckpointError(f"{path} is truncated or not a checkpoint") from None
    except OSError as e:
        if not path.is_file() or not os.access(path, os.R_OK):
            raise CheckpointError(f"cannot read checkpoint {path}: {first_line(e)}") from None
        raise CheckpointError(f"{path} is truncated or not a checkpoint") from None
    except Exception:  # a truncated, corrupt or foreign file
        raise CheckpointError(f"{path} is truncated or not a checkpoint") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pymakemore checkpoint")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {ckpt.get('version')}, "
                              f"this pymakemore reads version {VERSION}")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}")
    if CHECKSUM in ckpt:
        try:
            intact = ckpt[CHECKSUM] == payload_digest(ckpt)
        except Exception:  # a value that cannot even be read back
            intact = False
        if not intact:
            raise CheckpointError(f"{path} is corrupt: its contents do not match their "
                                  f"checksum")
    problem = structure_problem(ckpt)
    if problem:
        raise CheckpointError(f"{path} is not a usable checkpoint: {problem}")
    return ckpt


def refused_pickle(message: str, path: Path) -> bool:
    """Whether weights_only refused what the file holds (a class or function it will not
    build, or a plain pickle's instructions), rather than met a file that is not a pickle."""
    text = message.lower()
    if "unsupported global" in text or "unsupported class" in text:
        return True
    try:  # a plain pickle (protocol 2+ starts with PROTO), which weights_only does not read
        with open(path, "rb") as f:
            return "unsupported operand" in text and f.read(1) == b"\x80"
    except OSError:
        return False


def structure_problem(ckpt: dict[str, Any]) -> str | None:
    """What is wrong with the checkpoint's values (types and ranges), or None."""
    config = ckpt["config"]
    if not isinstance(config, dict):
        return "its config is not a mapping"
    if config.get("type") not in MODELS:
        return f"unknown model type {config.get('type')!r}"
    for key in SIZE_KEYS:
        value = config.get(key)
        if key not in config or value is None and key == "block_size":
            continue  # (a model that does not use it; gpt finds its block size in the data)
        if type(value) is not int or not 1 <= value <= MAX_SIZE:
            return f"config {key} is {value!r}, not an integer in [1, {MAX_SIZE}]"
    dropout = config.get("dropout", 0.0)
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        return f"config dropout is {dropout!r}"
    vocab = ckpt["vocab"]
    if isinstance(vocab, str) and len(vocab) >= MAX_SIZE:
        return f"its vocabulary has {len(vocab):,} characters"
    if not isinstance(vocab, str) or not vocab or len(set(vocab)) != len(vocab):
        return "its vocabulary is not a string of distinct characters"
    model = ckpt["model"]
    if not isinstance(model, dict) or not all(isinstance(t, torch.Tensor)
                                              for t in model.values()):
        return "its model state is not a mapping of tensors"
    rng = ckpt["rng"]
    if not isinstance(rng, dict) or not all(
            isinstance(state, torch.Tensor) and state.dtype == torch.uint8
            for state in rng.values()) or "batch" not in rng:
        return "its rng state is not a mapping of generator states"
    step, losses = ckpt["step"], ckpt["losses"]
    if type(step) is not int or step < 0:
        return f"its step is {step!r}"
    if not isinstance(losses, torch.Tensor) or losses.dim() != 1 or len(losses) < step:
        return "its losses do not cover its steps"
    if not isinstance(ckpt["train_words"], str):
        return "its training words are not a string"
    return None


def model_from_checkpoint(ckpt: dict[str, Any], device: str | torch.device = "cpu"
                          ) -> tuple[torch.nn.Module, Vocab]:
    config = ckpt["config"]
    vocab = Vocab(ckpt["vocab"], boundary=config.get("data", "lines") != "text")
    try:
        with torch.device("meta"):  # shapes first: nothing allocated for a config that lies
            skeleton = build_model(config, vocab.size)
        expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
        stored = {k: tuple(v.shape) for k, v in ckpt["model"].items()}
        if expected != stored:
            wrong = sorted(set(expected) ^ set(stored)) or \
                [k for k in expected if expected[k] != stored[k]]
            raise CheckpointError(
                f"checkpoint does not match its model config: {wrong[0]} is "
                f"{stored.get(wrong[0], 'missing')}, the config makes it "
                f"{expected.get(wrong[0], 'absent')}")
        model = build_model(config, vocab.size)
        model.load_state_dict(ckpt["model"])
    except CheckpointError:
        raise
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint does not match its model config: {first_line(e)}"
                              ) from None
    return model.to(device), vocab
