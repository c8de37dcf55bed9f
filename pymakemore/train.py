"""Train a makemore model.

    python -m pymakemore.train [--type T | --preset P] [-i words.txt] [-o out] [options]

With no -i it trains on the built-in names. With no --type or --preset it trains the makemore
part-2 lecture's MLP: block 3, n_embd 10, n_hidden 200, batch 32, 200,000 SGD steps, lr 0.1
then 0.01 from the halfway step. Each model type starts from its lecture's configuration
(PRESETS); flags override it. `python -m pymakemore.train --help` lists every option.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import torch

from . import diagnostics, distributed, engines, manual_backprop, plots
from .checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from .data import DataError, Splits, load_splits
from .devices import DeviceError, resolve_device
from .models import MODELS, build_model
from .models.bigram import bigram_counts, counts_log_probs, counts_nll
from .models.layers import IGNORE_TARGET, LECTURE_SEED, OPS
from .models.mlp import INITS
from .sample import TEXT_SAMPLE_CHARS, print_samples, sample_text, sample_words
from .workdir import Metrics, RunLock, WorkDirError, check_writable

DEFAULTS: dict[str, Any] = dict(
    type="mlp", preset=None, input_file=None, data="lines", work_dir="out", block_size=3,
    n_embd=10, n_hidden=200, n_layer=1, n_head=4, dropout=0.0, hidden_bias=False,
    init="lecture", batch_size=32, max_steps=200_000, optimizer="sgd", lr=0.1, lr_decay_at=None,
    lr_decay=0.1, weight_decay=0.01, backprop="autograd", diagnostics=False, ops="fused",
    engine="auto", device="auto", seed=LECTURE_SEED, split_seed=42, eval_every=10_000,
    log_every=1_000, num_samples=10, quiet=False, resume=False, lr_find=False, threads=None,
    ddp_timeout=300.0,
)
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
               "gpt": "gpt-names"}
# what a checkpoint fixes: a resumed run keeps these and refuses to change them
RUN_KEYS = ("type", "preset", "input_file", "data", "block_size", "n_embd", "n_hidden", "n_layer",
            "n_head", "dropout", "hidden_bias", "init", "batch_size", "optimizer", "lr",
            "lr_decay_at", "lr_decay", "weight_decay", "backprop", "diagnostics", "ops", "engine",
            "seed", "split_seed")
OPTIMIZERS = ("sgd", "adamw")
LR_FIND_STEPS = 1000
DIAGNOSTIC_ROWS = 1024  # examples of the histograms (one minibatch of 32 is too noisy)


class ConfigError(Exception):
    """Options that do not fit together; the message is one line for the user."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pymakemore.train",
        description="Train a character-level language model (makemore) on a list of words "
                    "(or, the gpt model, on a text).",
        argument_default=None)
    data = p.add_argument_group("data")
    data.add_argument("-i", "--input-file",
                      help="text file, one word a line (default: the built-in names)")
    data.add_argument("--data", choices=["lines", "text"],
                      help="lines: one word a line (default); text: one character stream, "
                           "90/10 split (gpt only)")
    data.add_argument("--block-size", type=int,
                      help="characters of context per prediction (default: the preset's; "
                           "mlp 3)")
    data.add_argument("--split-seed", type=int,
                      help="seed of the 80/10/10 word shuffle (default 42, the lecture's)")
    model = p.add_argument_group("model")
    model.add_argument("--type", choices=sorted(MODELS),
                       help="model family (default mlp, or the preset's)")
    model.add_argument("--preset", choices=sorted(PRESETS),
                       help="a lecture's configuration; --type T alone means preset T "
                            "(gpt: gpt-names)")
    model.add_argument("--n-embd", type=int, help="embedding size per character (default 10)")
    model.add_argument("--n-hidden", type=int, help="hidden units (default 200)")
    model.add_argument("--n-layer", type=int,
                       help="hidden layers (bnmlp) or transformer blocks (gpt)")
    model.add_argument("--n-head", type=int, help="attention heads (gpt)")
    model.add_argument("--dropout", type=float, help="dropout probability (gpt; default 0)")
    model.add_argument("--hidden-bias", action=argparse.BooleanOptionalAction,
                       help="bnmlp: a bias before the BatchNorm, as in part 4")
    model.add_argument("--init", choices=INITS,
                       help="mlp: lecture: plain randn as in part 2 (default); kaiming: "
                            "scaled as in part 3")
    model.add_argument("--ops", choices=sorted(OPS),
                       help="fused: pymakemore's fused ops (default); torch: the same maths "
                            "in plain PyTorch")
    model.add_argument("--engine", choices=engines.ENGINES,
                       help="auto (default): fused where it runs (the mlp on SGD), else "
                            "graph on CUDA where it runs, else ops; ops: step by step through "
                            "autograd; graph: each step one CUDA-graph replay (CUDA, SGD); "
                            "fused: the MLP's whole steps in one call (C++ on the CPU, one "
                            "kernel on CUDA)")
    model.add_argument("--backprop", choices=["autograd", "manual"],
                       help="manual: bnmlp with one hidden layer, updated with gradients "
                            "written by hand (part 4) instead of autograd's")
    model.add_argument("--seed", type=int,
                       help="seed of the initial parameters; minibatches use seed+1, samples "
                            f"seed+2, dropout seed+3 (default {LECTURE_SEED}, the lecture's)")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--batch-size", type=int,
                     help="examples per step (default 32); 0: the whole training set")
    opt.add_argument("--optimizer", choices=OPTIMIZERS,
                     help="sgd (default) or adamw (the gpt presets)")
    opt.add_argument("--weight-decay", type=float, help="adamw's weight decay (default 0.01)")
    opt.add_argument("--max-steps", type=int, help="SGD steps in all (default 200000)")
    opt.add_argument("--lr", type=float, help="learning rate (default 0.1)")
    opt.add_argument("--lr-decay-at", type=int,
                     help="step from which the rate is lr * lr-decay (default: max-steps / 2)")
    opt.add_argument("--lr-decay", type=float, help="factor applied at --lr-decay-at (default 0.1)")
    opt.add_argument("--lr-find", action="store_true", default=None,
                     help=f"instead of training: sweep the rate from 1e-3 to 1 over "
                          f"{LR_FIND_STEPS} steps, plot lr_find.png, print a suggestion")
    run = p.add_argument_group("run")
    run.add_argument("-o", "--work-dir", help="folder for checkpoint, metrics, plots (default out)")
    run.add_argument("--device", choices=["cpu", "cuda", "auto"],
                     help="auto: cuda when available (default)")
    run.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    run.add_argument("--eval-every", type=int,
                     help="full train/dev loss and a checkpoint every N steps; 0: at the end "
                          "only (default 10000)")
    run.add_argument("--log-every", type=int,
                     help="steps between progress/metrics lines (default 1000)")
    run.add_argument("--num-samples", type=int,
                     help="words sampled at the end (default 10); text: a 500-character "
                          "passage unless 0")
    run.add_argument("--diagnostics", action=argparse.BooleanOptionalAction,
                     help="bnmlp/wavenet: activation, gradient and update:data plots "
                          "(on in the bnmlp presets)")
    run.add_argument("--resume", action="store_true", default=None,
                     help="continue from WORK_DIR/model.pt up to --max-steps")
    run.add_argument("--quiet", action="store_true", default=None, help="no progress bar")
    run.add_argument("--ddp-timeout", type=float,
                     help="under torchrun: seconds a collective waits for the other ranks "
                          "before the job fails (default 300)")
    return p


def preset_for(explicit: dict[str, Any]) -> str:
    if "preset" in explicit:
        return explicit["preset"]
    kind = explicit.get("type", DEFAULTS["type"])
    if kind == "gpt" and explicit.get("data") == "text":
        return "gpt-shakespeare"
    return TYPE_PRESET[kind]


def resolve_config(args: argparse.Namespace) -> tuple[dict[str, Any], Optional[dict]]:
    explicit = {k: v for k, v in vars(args).items() if v is not None}
    ckpt = None
    if explicit.get("resume"):
        if explicit.get("lr_find"):
            raise ConfigError("--lr-find and --resume do not go together")
        ckpt = load_checkpoint(explicit.get("work_dir", DEFAULTS["work_dir"]))
        config = {**DEFAULTS, **ckpt["config"]}
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
        if config["lr_decay_at"] is None:
            config["lr_decay_at"] = config["max_steps"] // 2
        elif "max_steps" in explicit and "lr_decay_at" not in explicit:
            # a preset's decay step, moved with a shorter or longer schedule
            preset_steps = PRESETS[preset].get("max_steps", DEFAULTS["max_steps"])
            config["lr_decay_at"] = config["lr_decay_at"] * config["max_steps"] // preset_steps
    check_config(config)
    if config["input_file"] is not None:
        config["input_file"] = str(Path(config["input_file"]).resolve())
    return config, ckpt


def flag(key: str) -> str:
    """The command-line flag of a config key."""
    return "--" + key.replace("_", "-")


def check_config(config: dict[str, Any]) -> None:
    for key in ("n_embd", "n_hidden", "n_layer", "n_head", "max_steps", "log_every"):
        if config[key] < 1:
            raise ConfigError(f"{flag(key)} must be >= 1, got {config[key]}")
    for key in ("eval_every", "num_samples", "lr_decay_at", "batch_size"):
        if config[key] < 0:
            raise ConfigError(f"{flag(key)} must be >= 0, got {config[key]}")
    if config["block_size"] is not None and config["block_size"] < 1:
        raise ConfigError(f"--block-size must be >= 1, got {config['block_size']}")
    if config["block_size"] is None and not (config["type"] == "gpt" and
                                             config["data"] == "lines"):
        raise ConfigError("--block-size is needed (only gpt on word lists finds it from the data)")
    if not config["lr"] > 0:
        raise ConfigError(f"--lr must be > 0, got {config['lr']}")
    if not 0.0 <= config["dropout"] < 1.0:
        raise ConfigError(f"--dropout must be in [0, 1), got {config['dropout']}")
    if config["weight_decay"] < 0:
        raise ConfigError(f"--weight-decay must be >= 0, got {config['weight_decay']}")
    if config["data"] == "text" and config["type"] != "gpt":
        raise ConfigError(f"--data text trains the gpt model only, not {config['type']}")
    if config["type"] == "bigram" and config["block_size"] != 1:
        raise ConfigError(f"the bigram model sees one character: --block-size 1, "
                          f"not {config['block_size']}")
    if config["type"] == "gpt" and config["n_embd"] % config["n_head"]:
        raise ConfigError(f"--n-embd ({config['n_embd']}) must be a multiple of --n-head "
                          f"({config['n_head']})")
    if config["type"] == "wavenet":
        b = config["block_size"]
        if b < 2 or b & (b - 1):
            raise ConfigError(f"the wavenet model needs --block-size a power of two >= 2, "
                              f"got {b}")
    if config["backprop"] == "manual":
        if config["type"] != "bnmlp" or config["n_layer"] != 1:
            raise ConfigError("--backprop manual is written for --type bnmlp --n-layer 1")
        if config["engine"] not in ("ops", "auto"):
            raise ConfigError("--backprop manual runs on --engine ops")
    if config["diagnostics"] and config["type"] not in ("bnmlp", "wavenet"):
        raise ConfigError(f"--diagnostics follows the tanh layers of bnmlp and wavenet, "
                          f"not {config['type']}")
    if config["batch_size"] == 0 and config["engine"] not in ("ops", "auto"):
        raise ConfigError("--batch-size 0 (the whole training set) runs on --engine ops")


def layout(config: dict[str, Any]) -> str:
    """How the data becomes examples (data.LAYOUTS) for this model."""
    if config["data"] == "text":
        return "text"
    return "sequences" if config["type"] == "gpt" else "windows"


@torch.no_grad()
def split_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
               chunk_tokens: int = 65536, group: distributed.Group = distributed.SINGLE
               ) -> float:
    """Mean loss per predicted character over a whole split (padding targets excluded), in
    chunks, with one host read; under torchrun each rank takes its share and the sums are
    reduced."""
    share = group.share(len(x))
    x, y = x[share], y[share]
    was_training = model.training
    model.eval()
    cross_entropy = OPS[getattr(model, "ops", "torch")].cross_entropy
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    count = torch.zeros((), dtype=torch.int64, device=x.device)
    rows = max(1, chunk_tokens // max(1, y[0].numel()))
    for i in range(0, len(x), rows):
        logits, _ = model(x[i:i + rows])
        targets = y[i:i + rows].reshape(-1)
        total += cross_entropy(logits.reshape(-1, logits.shape[-1]), targets,
                               ignore_index=IGNORE_TARGET, reduction="sum").double()
        count += (targets != IGNORE_TARGET).sum()
    model.train(was_training)
    distributed.sum_(total, group)
    distributed.sum_(count, group)
    return (total / count.clamp(min=1)).item()


class SGD:
    """Plain SGD as in the lectures (p -= lr * grad), without torch.optim's per-step
    bookkeeping, which costs more than the whole makemore forward pass on a CPU."""

    def __init__(self, params, lr: float):
        self.params = [p for p in params if p.requires_grad]
        self.lr = lr

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p in self.params:
            p.add_(p.grad, alpha=-self.lr)

    def state_dict(self) -> dict[str, Any]:
        return {"name": "sgd", "lr": self.lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != "sgd":
            raise CheckpointError(f"the checkpoint's optimizer is {state.get('name')!r}, not sgd")
        self.lr = state["lr"]


def make_optimizer(config: dict[str, Any], model: torch.nn.Module):
    if config["optimizer"] == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config["lr"],
                                 weight_decay=config["weight_decay"])
    return SGD(model.parameters(), lr=config["lr"])


def set_lr(optimizer, lr: float) -> None:
    if isinstance(optimizer, SGD):
        optimizer.lr = lr
    else:
        for group in optimizer.param_groups:
            group["lr"] = lr


def run_steps(model: torch.nn.Module, optimizer, x: torch.Tensor, y: torch.Tensor,
              batch_size: int, gen: torch.Generator, steps: int, *, first_step: int = 0,
              lr: float = 0.0, manual: bool = False, ratios=None,
              group: distributed.Group = distributed.SINGLE) -> torch.Tensor:
    """`steps` optimizer steps on minibatches drawn on x's device (batch_size 0: all of x);
    their losses, left on the device (no host read per step). manual: gradients by hand
    (manual_backprop) instead of autograd; ratios: a diagnostics.UpdateRatios to feed.
    Under torchrun every rank draws the same global batch and trains on its share of it."""
    losses = []
    mine = group.share(batch_size)
    # padded targets (gpt on words) make ranks' shares count unequally: weigh each rank's mean
    # by its share of the global batch's targets, so DDP's average is the global mean
    weigh = group.enabled and y.dim() > 1
    for i in range(steps):
        if batch_size:
            every = torch.randint(0, len(x), (batch_size,), device=x.device, generator=gen)
            ix = every[mine]
            xb, yb = x.index_select(0, ix), y.index_select(0, ix)
        else:
            xb, yb = x, y
        if manual:
            loss = manual_backprop.loss_and_grads(model, xb, yb)
        else:
            _, loss = model(xb, yb)
            if weigh:
                counted = (y.index_select(0, every) != IGNORE_TARGET).sum().clamp(min=1)
                loss = loss * ((yb != IGNORE_TARGET).sum() * group.world / counted)
            optimizer.zero_grad()
            loss.backward()
        if ratios is not None and ratios.wanted(first_step + i):
            ratios.record(first_step + i, lr)
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses)


def learning_rate(config: dict[str, Any], step: int) -> float:
    return config["lr"] * (config["lr_decay"] if step >= config["lr_decay_at"] else 1.0)


def lr_find(config: dict[str, Any], splits: Splits, device: torch.device, work_dir: Path
            ) -> int:
    """The lecture's learning-rate search: one step per rate, 10^-3 .. 10^0."""
    model = build_model(config, splits.vocab.size).to(device)
    optimizer = make_optimizer(config, model)
    gen = torch.Generator(device=device).manual_seed(config["seed"] + 1)
    x, y = splits.tensors["train"]
    exponents = torch.linspace(-3, 0, LR_FIND_STEPS)
    losses = []
    for e in exponents.tolist():
        set_lr(optimizer, 10.0 ** e)
        losses.append(run_steps(model, optimizer, x, y, config["batch_size"], gen, 1,
                                manual=config["backprop"] == "manual"))
    losses = torch.cat(losses).cpu()
    window = 50
    smooth = torch.nn.functional.avg_pool1d(losses.view(1, 1, -1), window, 1).view(-1)
    finite = torch.where(torch.isfinite(smooth), smooth, torch.full_like(smooth, float("inf")))
    best = int(finite.argmin()) + window // 2
    suggested = float(exponents[best])
    plots.lr_sweep(exponents, losses, suggested, work_dir / "lr_find.png")
    (work_dir / "lr_find.json").write_text(json.dumps(
        {"exponents": exponents.tolist(), "losses": losses.tolist(),
         "suggested_lr": 10.0 ** suggested}))
    print(f"lowest smoothed loss at lr = 10^{suggested:.2f} = {10.0 ** suggested:.3g}; "
          f"suggested --lr {10.0 ** suggested:.2g} (plot: {work_dir / 'lr_find.png'})")
    return 0


def rng_state(gen: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """The minibatch generator's state and torch's own (dropout draws from it)."""
    state = {"batch": gen.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(gen: torch.Generator, state: dict[str, torch.Tensor],
                  device: torch.device) -> None:
    gen.set_state(state["batch"])
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def check_batch(x: torch.Tensor, y: torch.Tensor, rows: int, seed: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """`rows` training examples drawn from their own generator (`seed`), for the checks and
    diagnostics: the training's minibatch sequence is left alone."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    ix = torch.randint(0, len(x), (rows,), device=x.device, generator=gen)
    return x[ix], y[ix]


def gradient_check(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                   batch_size: int, seed: int, work_dir: Path) -> dict[str, Any]:
    """Part 4's check, on one minibatch: hand-written gradients against autograd's."""
    report = manual_backprop.check_gradients(model, *check_batch(x, y, batch_size or len(x),
                                                                 seed))
    (work_dir / "gradient_check.json").write_text(json.dumps(report, indent=2) + "\n")
    worst = {k: max(v.values()) for k, v in report.items()}
    print("gradients by hand vs autograd, max |difference| over all intermediates: "
          + ", ".join(f"{k} {v:.2e}" for k, v in worst.items())
          + f" ({work_dir / 'gradient_check.json'})", file=sys.stderr)
    return worst


def bigram_report(splits: Splits, work_dir: Path) -> dict[str, float]:
    """The counts model (add-one smoothing) fitted on the training split: its losses, and the
    lecture's figure (fitted and measured on the whole data set); plots the count matrix."""
    v = splits.vocab.size
    x, y = splits.tensors["train"]
    counts = bigram_counts(x, y, v)
    log_probs = counts_log_probs(counts)
    report = {f"{name}_loss": counts_nll(log_probs, *splits.tensors[name])
              for name in ("train", "dev", "test")}
    everything = [torch.cat(t) for t in zip(*(splits.tensors[n] for n in ("train", "dev",
                                                                          "test")))]
    report["all_data_loss"] = counts_nll(counts_log_probs(bigram_counts(*everything, v)),
                                         *everything)
    plots.bigram_counts(counts, list(splits.vocab.itos), work_dir / "bigram_counts.png")
    return report


def train(config: dict[str, Any], ckpt: Optional[dict], splits: Splits, device: torch.device,
          work_dir: Path, group: distributed.Group = distributed.SINGLE) -> int:
    """The training run; under torchrun every rank runs it, rank 0 alone writes and prints."""
    started = time.perf_counter()
    main_rank = group.is_main
    if ckpt is not None:
        model, _ = model_from_checkpoint(ckpt, device)
    else:
        model = build_model(config, splits.vocab.size).to(device)
    optimizer = make_optimizer(config, model)
    gen = torch.Generator(device=device).manual_seed(config["seed"] + 1)
    ratios = diagnostics.UpdateRatios(model) if config["diagnostics"] else None
    manual = config["backprop"] == "manual"
    max_steps = config["max_steps"]
    losses = torch.zeros(max_steps, device=device)
    step = 0
    torch.manual_seed(config["seed"] + 3 + group.rank)  # dropout's draws
    if ckpt is not None:
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"the checkpoint's optimizer state does not fit: {e}") from None
        set_rng_state(gen, ckpt["rng"], device)
        step = ckpt["step"]
        if group.enabled:  # rank 0's dropout state is saved; each rank needs its own draws
            torch.manual_seed(config["seed"] + 3 + group.rank + step * group.world)
        if step >= max_steps:
            raise ConfigError(f"the checkpoint is at step {step}; give --max-steps above it "
                              f"to train on")
        losses[:step] = ckpt["losses"][:step].to(device)
        if ratios is not None and "update_ratios" in ckpt:
            ratios.load_state_dict(ckpt["update_ratios"])
    x, y = splits.tensors["train"]
    auto = config["engine"] == "auto"
    if auto:  # resolved once: the checkpoint keeps the engine the run took
        config["engine"] = engines.choose(model, config, device, group.enabled)
    if config["engine"] == "fused":
        reason = engines.fused_supports(model, device, config)
        if reason:
            raise ConfigError(reason)
    graphed = None
    if config["engine"] == "graph":
        reason = engines.graph_supports(config, device)
        if reason:
            raise ConfigError(reason)
        graphed = engines.GraphedSteps(model, x, y, config["batch_size"], gen)
    n_params = sum(p.numel() for p in model.parameters())
    trainer = distributed.wrap(model, group, device)
    metrics = Metrics(work_dir / "metrics.jsonl", resume_step=step if ckpt is not None else None,
                      evaluates_there=bool(config["eval_every"]) and
                      step % config["eval_every"] == 0) if main_rank else None
    extra: dict[str, Any] = {}
    if manual:
        extra["gradient_check"] = gradient_check(model, x, y, config["batch_size"],
                                                 config["seed"] + 3, work_dir)

    def checkpoint(at: int) -> None:
        if not main_rank:
            return
        payload = {
            "config": config, "vocab": splits.vocab.chars, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "step": at, "rng": rng_state(gen, device),
            "losses": losses[:at].cpu(), "train_words": "\n".join(splits.words["train"]),
            "data_fingerprint": splits.fingerprint()}
        if ratios is not None:
            payload["update_ratios"] = ratios.state_dict()
        save_checkpoint(work_dir, payload)

    def boundaries(start: int) -> int:
        """The next step at which the loop must stop: log, eval, lr change or the end."""
        stops = [max_steps, (start // config["log_every"] + 1) * config["log_every"]]
        if config["eval_every"]:
            stops.append((start // config["eval_every"] + 1) * config["eval_every"])
        if start < config["lr_decay_at"]:
            stops.append(config["lr_decay_at"])
        return min(stops)

    def evaluate(names) -> dict[str, float]:
        return {name: split_loss(model, *splits.evaluation(name), group=group)
                for name in names}

    def log(record: dict[str, Any]) -> None:
        if main_rank:
            metrics.write(record)

    from tqdm import tqdm  # progress bar: rate, ETA and postfix without hand-written code
    bar = tqdm(total=max_steps, initial=step, unit="step",
               disable=config["quiet"] or not main_rank, file=sys.stderr, dynamic_ncols=True,
               mininterval=0.5)
    train_seconds, window_start, first_step = 0.0, step, step
    if main_rank:
        ranks = f" x {group.world} processes (DDP)" if group.enabled else ""
        print(f"{config['type']} ({config['preset']}) with {n_params:,} parameters, "
              f"{config['ops']} ops, {config['engine']} engine{' (auto)' if auto else ''}, "
              f"{config['backprop']} backprop, "
              f"on {device}{ranks}; {len(x):,} training examples", file=sys.stderr)
    try:
        while step < max_steps:
            stop = boundaries(step)
            lr = learning_rate(config, step)
            set_lr(optimizer, lr)
            t0 = time.perf_counter()
            if config["engine"] == "fused":  # minibatches from (seed + 1, step): resumable
                lrs = torch.full((stop - step,), lr)
                losses[step:stop] = engines.fused_steps(model, x, y, lrs, config["batch_size"],
                                                        step, config["seed"] + 1)
            elif graphed is not None:
                losses[step:stop] = graphed.run(stop - step, lr)
            else:
                block = run_steps(trainer, optimizer, x, y, config["batch_size"], gen,
                                  stop - step, first_step=step, lr=lr, manual=manual,
                                  ratios=ratios, group=group)
                losses[step:stop] = distributed.mean_(block, group)  # the global batch's
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_seconds += time.perf_counter() - t0
            bar.update(stop - step)
            step = stop
            if step % config["log_every"] == 0 or step == max_steps:
                recent = losses[window_start:step].mean().item()  # the one host read
                window_start = step
                bar.set_postfix(loss=f"{recent:.4f}", lr=f"{lr:g}")
                log({"step": step, "loss": recent, "lr": lr,
                     "steps_per_s": (step - first_step) / max(train_seconds, 1e-9),
                     "elapsed_s": time.perf_counter() - started})
            if config["eval_every"] and step % config["eval_every"] == 0 and step < max_steps:
                found = evaluate(("train", "dev"))
                record = {"step": step, "train_loss": found["train"], "dev_loss": found["dev"]}
                log(record)
                if main_rank:
                    bar.write(f"step {step}: train {record['train_loss']:.4f}, "
                              f"dev {record['dev_loss']:.4f}", file=sys.stderr)
                checkpoint(step)
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (Terminated)
        bar.close()
        what = "terminated" if isinstance(stop, Terminated) else "interrupted"
        if main_rank:
            checkpoint(step)
            metrics.close()
            print(f"\n{what}: saved step {step} to {work_dir / 'model.pt'}; continue with "
                  f"--resume -o {work_dir}", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(stop, Terminated) else 130
    bar.close()

    final = evaluate(("train", "dev", "test"))
    if not main_rank:
        return 0
    log({"step": step, **{f"{k}_loss": v for k, v in final.items()}})
    metrics.close()
    checkpoint(step)
    steps_run = step - first_step
    if config["type"] == "bigram":
        extra["counts_model"] = bigram_report(splits, work_dir)
    if ratios is not None:
        report = diagnostics.layer_report(model, *check_batch(x, y, DIAGNOSTIC_ROWS,
                                                              config["seed"] + 3))
        diagnostics.write(report, ratios, work_dir)
        extra["saturated"] = [r["saturated"] for r in report["tanh_layers"]]
    summary = {
        "model": config["type"], "preset": config["preset"], "n_params": n_params,
        "config": config, "device": str(device), "ops": config["ops"],
        "engine": config["engine"], "steps": step, "seconds": train_seconds,
        "steps_per_s": steps_run / max(train_seconds, 1e-9),
        "n_train": len(x), "n_dev": len(splits.tensors["dev"][0]),
        "n_test": len(splits.tensors["test"][0]),
        "train_loss": final["train"], "dev_loss": final["dev"], "test_loss": final["test"],
        **extra,
    }
    (work_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plots.loss_curve(losses[:step], work_dir / "loss.png")
    if hasattr(model, "C"):
        plots.embedding_scatter(model.C, list(splits.vocab.itos), work_dir / "embedding.png")
    print(f"train {final['train']:.4f}  dev {final['dev']:.4f}  test {final['test']:.4f}  "
          f"({steps_run:,} steps in {train_seconds:.1f} s, "
          f"{summary['steps_per_s']:,.0f} steps/s; outputs in {work_dir})")
    if "counts_model" in extra:
        c = extra["counts_model"]
        print(f"counts model: train {c['train_loss']:.4f}  dev {c['dev_loss']:.4f}  "
              f"test {c['test_loss']:.4f}; fitted on all the data {c['all_data_loss']:.4f}")
    if config["num_samples"]:
        sample_gen = torch.Generator(device=device).manual_seed(config["seed"] + 2)
        if config["data"] == "text":
            print("sample:")
            print(sample_text(model, splits.vocab, TEXT_SAMPLE_CHARS, generator=sample_gen,
                              device=device))
        else:
            words = sample_words(model, splits.vocab, config["num_samples"],
                                 generator=sample_gen, device=device)
            print("samples:")
            print_samples(words, set(splits.words["train"]))
    return 0


def check_distributed(config: dict[str, Any], group: distributed.Group) -> None:
    if not group.enabled:
        return
    for key, value, why in (("lr_find", True, "--lr-find"), ("engine", "fused", "--engine fused"),
                            ("engine", "graph", "--engine graph"),
                            ("backprop", "manual", "--backprop manual (DDP averages "
                                                   "autograd's gradients)"),
                            ("batch_size", 0, "--batch-size 0 (the whole training set)")):
        if config[key] == value:
            raise ConfigError(f"{why} runs in one process, not under torchrun")
    if config["batch_size"] % group.world:
        raise ConfigError(f"--batch-size {config['batch_size']} is the global batch: it must "
                          f"split evenly over the {group.world} processes")


class Terminated(KeyboardInterrupt):
    """SIGTERM (schedulers, containers, systemd), handled as Ctrl-C is: checkpoint, then exit."""


def _terminate(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: let the checkpoint finish
    raise Terminated()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    try:
        return _main(args)
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace) -> int:
    group = distributed.from_env()
    started = False
    try:
        config, ckpt = resolve_config(args)
        check_distributed(config, group)
        device = resolve_device(config["device"], config["ops"])
        if config["threads"]:
            torch.set_num_threads(config["threads"])
        splits = load_splits(config["input_file"], config["block_size"], config["split_seed"],
                             layout=layout(config))
        if config["block_size"] is None:  # gpt on words: the longest word decides
            config["block_size"] = splits.tensors["train"][0].shape[1]
        if ckpt is not None and (
                splits.vocab.chars != ckpt["vocab"]
                or "\n".join(splits.words["train"]) != ckpt["train_words"]
                or ckpt.get("data_fingerprint", splits.fingerprint()) != splits.fingerprint()):
            raise CheckpointError("the input file is not the one the checkpoint was trained on")
        if group.enabled:
            device = distributed.start(group, device, config["ddp_timeout"])
            started = True
        splits = splits.to(device)
        work_dir = Path(config["work_dir"])
        lock = RunLock(work_dir) if group.is_main else contextlib.nullcontext()
        if group.is_main:
            work_dir.mkdir(parents=True, exist_ok=True)
            check_writable(work_dir)
        with lock:
            if config["lr_find"]:
                return lr_find(config, splits, device, work_dir)
            return train(config, ckpt, splits, device, work_dir, group)
    except (DataError, CheckpointError, ConfigError, DeviceError, WorkDirError, OSError) as e:
        # the same on every rank (same options and data): rank 0 says it
        if group.is_main:
            print(f"pymakemore.train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM outside the training loop (which
        # checkpoints): before training starts or while its outputs are written
        what = "terminated" if isinstance(stop, Terminated) else "interrupted"
        print(f"\npymakemore.train: {what} (rank {group.rank})" if group.enabled else
              f"\npymakemore.train: {what}", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(stop, Terminated) else 130
    except RuntimeError as e:
        if not group.enabled:
            raise
        # under torchrun: a collective that failed (a rank died) or timed out (a rank stalled)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"pymakemore.train: error: rank {group.rank} of {group.world}: {first} (a "
              f"failed or stalled rank ends the job; collectives wait --ddp-timeout)",
              file=sys.stderr)
        return 1
    finally:
        if started:
            distributed.stop(group)


if __name__ == "__main__":
    sys.exit(main())
