"""The trainer's configuration, declared once.

Each option is one Option: its default, help, group, the checkpoint's hold on it and the check
of its value. The command-line parser, DEFAULTS, the resume rules (RUN_KEYS) and the
validation are all derived from OPTIONS; the rules that tie options together are RULES, and a
model's own rules live with the model (models.model_problem). Adding an option is one entry
here (plus its use).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from . import engines, valid
from .checkpoint import MAX_SIZE, CheckpointError, load_checkpoint
from .cli import OneLineParser
from .models import MODELS, autoregressive, model_problem
from .models.layers import LECTURE_SEED, OPS
from .models.mlp import INITS

OPTIMIZERS = ("sgd", "adamw")
LR_FIND_STEPS = 1000
# Upper bounds of counts and sizes: what can be allocated and represented (each step's loss is
# kept, 4 bytes; torch's seeds are 64-bit and the run uses seed + 3)
MAX_STEPS = 10 ** 9
MAX_BATCH = 1 << 24
SEEDS = valid.in_range(-(1 << 63), (1 << 64) - 4)


class ConfigError(Exception):
    """Options that do not fit together; the message is one line for the user."""


@dataclass(frozen=True)
class Option:
    key: str                       # the config key; the flag is --key-with-dashes
    default: Any
    help: str                      # the default is appended to it, not written in it
    group: str                     # data, model, optimisation, run
    type: Optional[Callable] = None
    choices: Optional[Sequence] = None
    kind: str = "value"            # value; switch (--x, on only); toggle (--x / --no-x)
    run: bool = False              # a checkpoint fixes it: --resume refuses to change it
    check: Optional[valid.Check] = None  # of the value, when not None
    short: Optional[str] = None    # a one-letter flag too
    default_text: Optional[str] = None  # the default in words, where the value does not say it

    @property
    def flag(self) -> str:
        return flag(self.key)


def flag(key: str) -> str:
    """The command-line flag of a config key."""
    return "--" + key.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    # data
    Option("input_file", None, "text file, one word a line", "data", short="-i", run=True,
           default_text="the built-in names"),
    Option("data", "lines", "lines: one word a line; text: one character stream, 90/10 split "
           "(gpt only)", "data", choices=("lines", "text"), run=True),
    Option("block_size", 3, "characters of context per prediction (gpt, rnn, gru, bow on word "
           "lists: the longest word when no preset or flag sets it)", "data", type=int, run=True,
           check=valid.in_range(1, MAX_SIZE)),
    Option("split_seed", 42, "seed of the 80/10/10 word shuffle (the lecture's)", "data",
           type=int, run=True, check=SEEDS),
    # model
    Option("type", "mlp", "model family", "model", choices=tuple(sorted(MODELS)), run=True),
    Option("preset", None, "a lecture's (or makemore.py's) configuration; --type T alone "
           "means preset T (gpt: gpt-names, or gpt-shakespeare with --data text)", "model",
           run=True,
           default_text="the type's"),  # choices: PRESETS, given to the parser
    Option("n_embd", 10, "embedding size per character", "model", type=int, run=True,
           check=valid.in_range(1, MAX_SIZE)),
    Option("n_embd2", 64, "hidden state (rnn, gru) or MLP width (bow), makemore.py's "
           "--n-embd2", "model", type=int, run=True, check=valid.in_range(1, MAX_SIZE)),
    Option("n_hidden", 200, "hidden units", "model", type=int, run=True,
           check=valid.in_range(1, MAX_SIZE)),
    Option("n_layer", 1, "hidden layers (bnmlp) or transformer blocks (gpt)", "model", type=int,
           run=True, check=valid.in_range(1, MAX_SIZE)),
    Option("n_head", 4, "attention heads (gpt)", "model", type=int, run=True,
           check=valid.in_range(1, MAX_SIZE)),
    Option("dropout", 0.0, "dropout probability (gpt)", "model", type=float, run=True,
           check=valid.fraction),
    Option("hidden_bias", False, "bnmlp: a bias before the BatchNorm, as in part 4", "model",
           kind="toggle", run=True),
    Option("init", "lecture", "mlp: lecture: plain randn as in part 2; kaiming: scaled as in "
           "part 3", "model", choices=INITS, run=True),
    Option("ops", "fused", "fused: pymakemore's fused ops; torch: the same maths in plain "
           "PyTorch", "model", choices=tuple(sorted(OPS)), run=True),
    Option("engine", "auto", "auto: the fastest engine that runs the model, device and "
           "options; " + "; ".join(f"{e.name}: {e.summary}" for e in engines.ENGINES.values()),
           "model", choices=("auto", *engines.ENGINES), run=True),
    Option("backprop", "autograd", "manual: bnmlp with one hidden layer, updated with "
           "gradients written by hand (part 4) instead of autograd's", "model",
           choices=("autograd", "manual"), run=True),
    Option("seed", LECTURE_SEED, "seed of the initial parameters; minibatches use seed+1, "
           "samples seed+2, dropout seed+3 (the lecture's)", "model", type=int, run=True,
           check=SEEDS),
    # optimisation
    Option("batch_size", 32, "examples per step; 0: the whole training set", "optimisation",
           type=int, run=True, check=valid.in_range(0, MAX_BATCH)),
    Option("optimizer", "sgd", "sgd, or adamw (the gpt, rnn, gru and bow presets)", "optimisation",
           choices=OPTIMIZERS, run=True),
    Option("weight_decay", 0.01, "adamw's weight decay", "optimisation", type=float, run=True,
           check=valid.finite_at_least(0)),
    Option("beta2", 0.999, "adamw's second-moment decay (makemore.py's: 0.99)", "optimisation",
           type=float, run=True, check=valid.fraction),
    Option("max_steps", 200_000, "optimizer steps in all", "optimisation", type=int,
           check=valid.in_range(1, MAX_STEPS)),
    Option("lr", 0.1, "learning rate", "optimisation", type=float, run=True,
           check=valid.finite_above(0, 1e6)),
    Option("lr_decay_at", None, "step from which the rate is lr * lr-decay", "optimisation",
           type=int, run=True, check=valid.at_least(0),
           default_text="max-steps / 2, or the preset's moved with --max-steps"),
    Option("lr_decay", 0.1, "factor applied at --lr-decay-at", "optimisation", type=float,
           run=True, check=valid.finite_at_least(0)),
    Option("lr_find", False, f"instead of training: sweep the rate from 1e-3 to 1 over "
           f"{LR_FIND_STEPS} steps, plot lr_find.png, print a suggestion", "optimisation",
           kind="switch"),
    # run
    Option("work_dir", "out", "folder for checkpoint, metrics, plots", "run", short="-o",
           check=valid.path),
    Option("device", "auto", "auto: cuda when available", "run", choices=("cpu", "cuda", "auto")),
    Option("threads", None, "CPU threads for torch", "run", type=int,
           check=valid.in_range(1, 1 << 16),
           default_text="torch's"),
    Option("eval_every", 10_000, "full train/dev loss and a checkpoint every N steps; 0: at "
           "the end only", "run", type=int, check=valid.at_least(0)),
    Option("log_every", 1_000, "steps between progress/metrics lines", "run", type=int,
           check=valid.at_least(1)),
    Option("num_samples", 10, "words sampled at the end; text: a 500-character passage "
           "unless 0", "run", type=int, check=valid.in_range(0, 10 ** 6)),
    Option("diagnostics", False, "bnmlp/wavenet: activation, gradient and update:data plots "
           "(on in the bnmlp presets)", "run", kind="toggle", run=True),
    Option("resume", False, "continue from WORK_DIR/model.pt up to --max-steps", "run",
           kind="switch"),
    Option("quiet", False, "no progress bar", "run", kind="switch"),
    Option("tensorboard", False, "also write the training loss, learning rate and train/dev/"
           "test losses as TensorBoard scalars into WORK_DIR/tensorboard (as makemore.py; needs "
           "the tensorboard package)", "run", kind="switch"),
    Option("ddp_timeout", 300.0, "under torchrun: seconds a collective waits for the other "
           "ranks before the job fails", "run", type=float,
           check=valid.finite_above(0, 10 ** 7)),
)
BY_KEY = {o.key: o for o in OPTIONS}
DEFAULTS: dict[str, Any] = {o.key: o.default for o in OPTIONS}
# what a checkpoint fixes: a resumed run keeps these and refuses to change them
RUN_KEYS = tuple(o.key for o in OPTIONS if o.run)
# what a resumed run takes from its checkpoint: RUN_KEYS and the schedule's steps (the command
# line may change these). Never the paths or modes of the run that reads it (the work dir,
# the device, threads, --lr-find, ...): those are the command line's or the defaults.
CHECKPOINT_KEYS = RUN_KEYS + ("max_steps", "eval_every", "log_every")

# The lectures' configurations. --type T alone takes preset T (gpt: gpt-names, or
# gpt-shakespeare with --data text); any flag given overrides its preset's value.
PRESETS: dict[str, dict[str, Any]] = {
    # part 1: the neural bigram, full-batch gradient descent as in the lecture
    "bigram": dict(type="bigram", block_size=1, batch_size=0, max_steps=300, lr=50.0,
                   lr_decay=1.0, eval_every=0, log_every=50),
    # part 2: the MLP (the defaults above)
    "mlp": dict(type="mlp"),
    # part 3: BatchNorm MLP, and its deeper 5-layer variant, with the diagnostics
    "bnmlp": dict(type="bnmlp", lr_decay_at=100_000, diagnostics=True),
    "bnmlp-deep": dict(type="bnmlp", n_layer=5, n_hidden=100, lr_decay_at=100_000,
                       diagnostics=True),
    # part 4 (its exercise 4): the same network, with the bias before BatchNorm, trained on
    # gradients written by hand
    "manual-backprop": dict(type="bnmlp", hidden_bias=True, backprop="manual",
                            lr_decay_at=100_000),
    # part 5: WaveNet
    "wavenet": dict(type="wavenet", block_size=8, n_embd=24, n_hidden=128, lr_decay_at=150_000),
    # makemore's transformer on word lists, plus dropout 0.1: trained on 80% of the names it
    # overfits without (dev 2.019 at 20k steps, against 1.978 with; bench/RESULTS.md)
    "gpt-names": dict(type="gpt", data="lines", block_size=None, n_embd=64, n_head=4, n_layer=4,
                      dropout=0.1, optimizer="adamw", lr=5e-4, lr_decay=1.0, batch_size=32,
                      max_steps=20_000, eval_every=2_000, log_every=100),
    # makemore.py's recurrent and bag-of-words models with its defaults (AdamW 5e-4, weight
    # decay 0.01, betas (0.9, 0.99), batch 32, n_embd = n_embd2 = 64)
    **{kind: dict(type=kind, data="lines", block_size=None, n_embd=64, n_embd2=64,
                  optimizer="adamw", lr=5e-4, beta2=0.99, lr_decay=1.0, batch_size=32,
                  max_steps=20_000, eval_every=2_000, log_every=100)
       for kind in ("rnn", "gru", "bow")},
    # the GPT lecture on a text (tinyshakespeare): a GPU run
    "gpt-shakespeare": dict(type="gpt", data="text", block_size=256, n_embd=384, n_head=6,
                            n_layer=6, dropout=0.2, optimizer="adamw", lr=3e-4, lr_decay=1.0,
                            batch_size=64, max_steps=5_000, eval_every=500, log_every=100),
    # the same model scaled down to train in minutes on a CPU
    "gpt-shakespeare-small": dict(type="gpt", data="text", block_size=64, n_embd=128,
                                  n_head=4, n_layer=4, dropout=0.1, optimizer="adamw", lr=1e-3,
                                  lr_decay=1.0, batch_size=32, max_steps=3_000, eval_every=1_000,
                                  log_every=100),
}
TYPE_PRESET = {"bigram": "bigram", "mlp": "mlp", "bnmlp": "bnmlp", "wavenet": "wavenet",
               "gpt": "gpt-names", "rnn": "rnn", "gru": "gru", "bow": "bow"}
SET_BY_PRESETS = {key for preset in PRESETS.values() for key in preset} - {"type"}


def default_text(option: Option) -> str:
    """The default as --help and the docs say it ("" for a switch)."""
    if option.kind == "switch":
        return ""
    if option.default_text is not None:
        return option.default_text
    default = "on" if option.default is True else "off" if option.default is False \
        else option.default
    return f"{default}, or the preset's" if option.key in SET_BY_PRESETS else str(default)


def help_text(option: Option) -> str:
    default = default_text(option)
    return f"{option.help} (default {default})" if default else option.help


GROUPS = ("data", "model", "optimisation", "run")  # --help's sections, in this order


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m pymakemore.train",
        description="Train a character-level language model (makemore) on a list of words "
                    "(or, the gpt model, on a text).",
        argument_default=None)
    groups = {name: p.add_argument_group(name) for name in GROUPS}
    for o in OPTIONS:
        names = ([o.short] if o.short else []) + [o.flag]
        kw: dict[str, Any] = dict(dest=o.key, help=help_text(o))
        if o.kind == "switch":
            kw.update(action="store_true", default=None)
        elif o.kind == "toggle":
            kw.update(action=argparse.BooleanOptionalAction)
        else:
            kw.update(type=o.type, choices=PRESETS if o.key == "preset" else o.choices)
        groups[o.group].add_argument(*names, **kw)
    return p


def _block_size_from_data(config: dict[str, Any]) -> Optional[str]:
    words = autoregressive(config["type"]) and config["data"] == "lines"
    if config["block_size"] is None and not words:
        return ("--block-size is needed (only gpt, rnn, gru and bow on word lists find it from "
                "the data)")
    return None


def _text_is_gpt(config: dict[str, Any]) -> Optional[str]:
    if config["data"] == "text" and config["type"] != "gpt":
        return f"--data text trains the gpt model only, not {config['type']}"
    return None


def _bigram_sees_one(config: dict[str, Any]) -> Optional[str]:
    if config["type"] == "bigram" and config["block_size"] != 1:
        return f"the bigram model sees one character: --block-size 1, not {config['block_size']}"
    return None


def _manual_backprop(config: dict[str, Any]) -> Optional[str]:
    if config["backprop"] == "manual" and (config["type"] != "bnmlp" or config["n_layer"] != 1):
        return "--backprop manual is written for --type bnmlp --n-layer 1"
    return None


def _diagnostics(config: dict[str, Any]) -> Optional[str]:
    if config["diagnostics"] and config["type"] not in ("bnmlp", "wavenet"):
        return (f"--diagnostics follows the tanh layers of bnmlp and wavenet, not "
                f"{config['type']}")
    return None


BATCHNORM_TYPES = ("bnmlp", "wavenet")  # models that normalise over the minibatch


def _batchnorm_batch(config: dict[str, Any]) -> Optional[str]:
    if config["type"] in BATCHNORM_TYPES and config["batch_size"] == 1:
        return (f"--type {config['type']} normalises over the minibatch (BatchNorm): "
                f"--batch-size must be 0 or >= 2, not 1")
    return None


def _engine_options(config: dict[str, Any]) -> Optional[str]:
    """What the chosen engine refuses in the options alone (the model and device come later)."""
    if config["engine"] == "auto":
        return None
    return engines.ENGINES[config["engine"]].options_problem(config)


# rules that tie options together, in the order they are checked
RULES: tuple[Callable[[dict[str, Any]], Optional[str]], ...] = (
    _block_size_from_data, _text_is_gpt, _bigram_sees_one,
    lambda config: model_problem(config, flag), _manual_backprop, _diagnostics,
    _batchnorm_batch, _engine_options)


def kind_problem(o: Option, value: Any) -> Optional[str]:
    """What is wrong with the kind of a value (one from a checkpoint has not been through the
    parser): a bool for a switch, one of the choices, an int, a number, a path."""
    if value is None:
        return None if o.default is None or o.key == "block_size" else f"{o.flag} is None"
    if o.kind in ("switch", "toggle"):
        ok = type(value) is bool
    elif o.key == "preset":
        ok = isinstance(value, str) and value in PRESETS
    elif o.choices is not None:
        ok = isinstance(value, str) and value in o.choices
    elif o.type is int:
        ok = type(value) is int
    elif o.type is float:
        ok = type(value) in (int, float)
    else:
        ok = isinstance(value, str)
    return None if ok else f"{o.flag} is {value!r}"


# the architecture's options that some model types take and others do not (models'
# CONFIG_KEYS): given to another type, an error rather than silently unused. (--init is left
# out: a script's common flags often carry it for every type.)
MODEL_KEYS = ("n_hidden", "n_layer", "n_head", "dropout", "hidden_bias")


def not_applying(explicit: dict[str, Any], kind: str) -> Optional[str]:
    """A model option given on the command line that the model type does not take."""
    for key in MODEL_KEYS:
        if key in explicit and key not in MODELS[kind].CONFIG_KEYS:
            return f"{flag(key)} does not apply to --type {kind}"
    return None


def check_config(config: dict[str, Any]) -> None:
    """Each value's kind and its option's check, then RULES; ConfigError with the first
    problem."""
    for o in OPTIONS:
        why = kind_problem(o, config[o.key])
        if why:
            raise ConfigError(why)
        if o.check is not None and config[o.key] is not None:
            why = valid.problem(o.flag, config[o.key], o.check)
            if why:
                raise ConfigError(why)
    for rule in RULES:
        why = rule(config)
        if why:
            raise ConfigError(why)


def preset_for(explicit: dict[str, Any]) -> str:
    if "preset" in explicit:
        return explicit["preset"]
    kind = explicit.get("type", DEFAULTS["type"])
    if kind == "gpt" and explicit.get("data") == "text":
        return "gpt-shakespeare"
    return TYPE_PRESET[kind]


def resolve_config(args: argparse.Namespace) -> tuple[dict[str, Any], Optional[dict]]:
    """The run's config from the command line (preset, then flags) or, with --resume, from the
    checkpoint (whose RUN_KEYS the flags may not change); with the checkpoint when resuming."""
    explicit = {k: v for k, v in vars(args).items() if v is not None}
    if "input_file" in explicit:  # one spelling of a file (the checkpoint keeps this one)
        explicit["input_file"] = str(Path(explicit["input_file"]).resolve())
    ckpt = None
    if explicit.get("resume"):
        if explicit.get("lr_find"):
            raise ConfigError("--lr-find and --resume do not go together")
        ckpt = load_checkpoint(explicit.get("work_dir", DEFAULTS["work_dir"]))
        config = {**DEFAULTS, **{k: ckpt["config"][k] for k in CHECKPOINT_KEYS
                                 if k in ckpt["config"]}}
        try:  # the checkpoint's own options, before any of the command line's
            check_config(config)
        except (ConfigError, TypeError, KeyError) as e:
            raise CheckpointError(f"the checkpoint's options are invalid: {e}") from None
        for key in RUN_KEYS:
            if key == "engine" and explicit.get(key) == "auto":
                continue  # whichever engine the checkpoint's run took
            if key in explicit and explicit[key] != config[key]:
                raise ConfigError(f"{flag(key)} cannot change on --resume (the checkpoint has "
                                  f"{config[key]!r})")
        config.update({k: v for k, v in explicit.items() if k not in RUN_KEYS})
    else:
        preset = preset_for(explicit)
        if "type" in explicit and explicit["type"] != PRESETS[preset]["type"]:
            raise ConfigError(f"--preset {preset} is a {PRESETS[preset]['type']} model, not "
                              f"{explicit['type']}")
        config = {**DEFAULTS, **PRESETS[preset], **explicit, "preset": preset}
        if config["type"] in MODELS:  # (an unknown type is check_config's to say)
            why = not_applying(explicit, config["type"])
            if why:
                raise ConfigError(why)
        if config["lr_decay_at"] is None:
            config["lr_decay_at"] = config["max_steps"] // 2
        elif "max_steps" in explicit and "lr_decay_at" not in explicit:
            # a preset's decay step, moved with a shorter or longer schedule
            preset_steps = PRESETS[preset].get("max_steps", DEFAULTS["max_steps"])
            config["lr_decay_at"] = config["lr_decay_at"] * config["max_steps"] // preset_steps
    check_config(config)
    return config, ckpt


def check_distributed(config: dict[str, Any], world: int) -> None:
    """What a run under torchrun (world > 1 processes) refuses."""
    for key, value, why in (("lr_find", True, "--lr-find"),
                            ("backprop", "manual", "--backprop manual (DDP averages "
                                                   "autograd's gradients)"),
                            ("batch_size", 0, "--batch-size 0 (the whole training set)")):
        if config[key] == value:
            raise ConfigError(f"{why} runs in one process, not under torchrun")
    why = config["engine"] != "auto" and engines.ENGINES[config["engine"]].torchrun_problem()
    if why:
        raise ConfigError(why)
    if config["batch_size"] % world:
        raise ConfigError(f"--batch-size {config['batch_size']} is the global batch: it must "
                          f"split evenly over the {world} processes")
    if config["type"] in BATCHNORM_TYPES and config["batch_size"] == world:
        raise ConfigError(f"--type {config['type']} normalises over each process's minibatch "
                          f"(BatchNorm): --batch-size {world} leaves one example a process")


def options_table() -> str:
    """The options as a Markdown table, for docs/training.md (a test keeps the two equal)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    rows = ["| option | default | meaning | on `--resume` |", "|---|---|---|---|"]
    for o in OPTIONS:
        names = ", ".join(f"`{n}`" for n in ([o.short] if o.short else []) + [o.flag])
        if o.kind == "toggle":
            names = f"`--[no-]{o.flag[2:]}`"
        if o.key == "preset":
            names += f" ({cell(' | '.join(PRESETS))})"
        elif o.choices:
            names += f" ({cell(' | '.join(map(str, o.choices)))})"
        rows.append(f"| {names} | {cell(default_text(o))} | {cell(o.help)} | "
                    f"{'fixed' if o.run else ''} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(options_table(), end="")
