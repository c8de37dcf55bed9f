"""Train a makemore model.

    python -m pymakemore.train [-i words.txt] [-o out] [--device cpu|cuda|auto] [options]

With no -i it trains on the built-in names. Defaults are the makemore part-2 lecture's MLP:
block 3, n_embd 10, n_hidden 200, batch 32, 200,000 SGD steps, lr 0.1 then 0.01 from the
halfway step. `python -m pymakemore.train --help` lists every option.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

from . import engines, plots
from .checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from .data import DataError, Splits, load_splits
from .devices import DeviceError, resolve_device
from .models import MODELS
from .models.mlp import INITS, OPS
from .sample import print_samples, sample_words

DEFAULTS: dict[str, Any] = dict(
    type="mlp", input_file=None, work_dir="out", block_size=3, n_embd=10, n_hidden=200,
    batch_size=32, max_steps=200_000, lr=0.1, lr_decay_at=None, lr_decay=0.1, init="lecture",
    ops="fused", engine="ops", device="auto", seed=2147483647, split_seed=42, eval_every=10_000,
    log_every=1_000, num_samples=10, quiet=False, resume=False, lr_find=False, threads=None,
)
# what a checkpoint fixes: a resumed run keeps these and refuses to change them
RUN_KEYS = ("type", "input_file", "block_size", "n_embd", "n_hidden", "batch_size", "lr",
            "lr_decay_at", "lr_decay", "init", "ops", "engine", "seed", "split_seed")
LR_FIND_STEPS = 1000


class ConfigError(Exception):
    """Options that do not fit together; the message is one line for the user."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pymakemore.train",
        description="Train a character-level language model (makemore) on a list of words.",
        argument_default=None)
    data = p.add_argument_group("data")
    data.add_argument("-i", "--input-file",
                      help="text file, one word a line (default: the built-in names)")
    data.add_argument("--block-size", type=int,
                      help="characters of context per prediction (default 3)")
    data.add_argument("--split-seed", type=int,
                      help="seed of the 80/10/10 word shuffle (default 42, the lecture's)")
    model = p.add_argument_group("model")
    model.add_argument("--type", choices=sorted(MODELS), help="model family (default mlp)")
    model.add_argument("--n-embd", type=int, help="embedding size per character (default 10)")
    model.add_argument("--n-hidden", type=int, help="hidden units (default 200)")
    model.add_argument("--init", choices=INITS,
                       help="lecture: plain randn as in part 2 (default); kaiming: scaled "
                            "as in part 3")
    model.add_argument("--ops", choices=sorted(OPS),
                       help="fused: pymakemore's fused ops (default); torch: the same maths "
                            "in plain PyTorch")
    model.add_argument("--engine", choices=engines.ENGINES,
                       help="ops: step by step through autograd (default); fused: the MLP's "
                            "whole steps in one C++ call (CPU, much faster)")
    model.add_argument("--seed", type=int,
                       help="seed of the initial parameters; minibatches use seed+1, samples "
                            "seed+2 (default 2147483647, the lecture's)")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--batch-size", type=int, help="examples per step (default 32)")
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
    run.add_argument("--num-samples", type=int, help="words sampled at the end (default 10)")
    run.add_argument("--resume", action="store_true", default=None,
                     help="continue from WORK_DIR/model.pt up to --max-steps")
    run.add_argument("--quiet", action="store_true", default=None, help="no progress bar")
    return p


def resolve_config(args: argparse.Namespace) -> tuple[dict[str, Any], Optional[dict]]:
    explicit = {k: v for k, v in vars(args).items() if v is not None}
    ckpt = None
    if explicit.get("resume"):
        if explicit.get("lr_find"):
            raise ConfigError("--lr-find and --resume do not go together")
        ckpt = load_checkpoint(explicit.get("work_dir", DEFAULTS["work_dir"]))
        config = {**DEFAULTS, **ckpt["config"]}
        for key in RUN_KEYS:
            if key in explicit and explicit[key] != config[key]:
                flag = "--" + key.replace("_", "-")
                raise ConfigError(f"{flag} cannot change on --resume (the checkpoint has "
                                  f"{config[key]!r})")
        config.update({k: v for k, v in explicit.items() if k not in RUN_KEYS})
    else:
        config = {**DEFAULTS, **explicit}
        if config["lr_decay_at"] is None:
            config["lr_decay_at"] = config["max_steps"] // 2
    for key in ("block_size", "n_embd", "n_hidden", "batch_size", "max_steps", "log_every"):
        if config[key] < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be >= 1, got {config[key]}")
    for key in ("eval_every", "num_samples", "lr_decay_at"):
        if config[key] < 0:
            raise ConfigError(f"--{key.replace('_', '-')} must be >= 0, got {config[key]}")
    if not config["lr"] > 0:
        raise ConfigError(f"--lr must be > 0, got {config['lr']}")
    if config["input_file"] is not None:
        config["input_file"] = str(Path(config["input_file"]).resolve())
    return config, ckpt


def build_model(config: dict[str, Any], vocab_size: int) -> torch.nn.Module:
    return MODELS[config["type"]](vocab_size, block_size=config["block_size"],
                                  n_embd=config["n_embd"], n_hidden=config["n_hidden"],
                                  init=config["init"], ops=config["ops"], seed=config["seed"])


@torch.no_grad()
def split_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
               chunk: int = 65536) -> float:
    """Mean loss over a whole split, in chunks (one host read)."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for i in range(0, len(x), chunk):
        _, loss = model(x[i:i + chunk], y[i:i + chunk])
        total += loss.double() * len(x[i:i + chunk])
    model.train(was_training)
    return (total / max(len(x), 1)).item()


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


def run_steps(model: torch.nn.Module, optimizer: SGD, x: torch.Tensor, y: torch.Tensor,
              batch_size: int, gen: torch.Generator, steps: int) -> torch.Tensor:
    """`steps` SGD steps on minibatches drawn on x's device; their losses, left on the device
    (no host read per step)."""
    losses = []
    for _ in range(steps):
        ix = torch.randint(0, len(x), (batch_size,), device=x.device, generator=gen)
        _, loss = model(x.index_select(0, ix), y.index_select(0, ix))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses)


def learning_rate(config: dict[str, Any], step: int) -> float:
    return config["lr"] * (config["lr_decay"] if step >= config["lr_decay_at"] else 1.0)


class JsonLines:
    def __init__(self, path: Path, append: bool):
        self.file = open(path, "a" if append else "w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def lr_find(config: dict[str, Any], splits: Splits, device: torch.device, work_dir: Path
            ) -> int:
    """The lecture's learning-rate search: one step per rate, 10^-3 .. 10^0."""
    model = build_model(config, splits.vocab.size).to(device)
    optimizer = SGD(model.parameters(), lr=1e-3)
    gen = torch.Generator(device=device).manual_seed(config["seed"] + 1)
    x, y = splits.tensors["train"]
    exponents = torch.linspace(-3, 0, LR_FIND_STEPS)
    losses = []
    for e in exponents.tolist():
        optimizer.lr = 10.0 ** e
        losses.append(run_steps(model, optimizer, x, y, config["batch_size"], gen, 1))
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


def train(config: dict[str, Any], ckpt: Optional[dict], splits: Splits, device: torch.device,
          work_dir: Path) -> int:
    started = time.perf_counter()
    if ckpt is not None:
        model, _ = model_from_checkpoint(ckpt, device)
    else:
        model = build_model(config, splits.vocab.size).to(device)
    optimizer = SGD(model.parameters(), lr=config["lr"])
    gen = torch.Generator(device=device).manual_seed(config["seed"] + 1)
    max_steps = config["max_steps"]
    losses = torch.zeros(max_steps, device=device)
    step = 0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["rng"]["batch"])
        step = ckpt["step"]
        if step >= max_steps:
            raise ConfigError(f"the checkpoint is at step {step}; give --max-steps above it "
                              f"to train on")
        losses[:step] = ckpt["losses"][:step].to(device)
    x, y = splits.tensors["train"]
    if config["engine"] == "fused":
        reason = engines.fused_supports(model, device)
        if reason:
            raise ConfigError(reason)
    n_params = sum(p.numel() for p in model.parameters())
    metrics = JsonLines(work_dir / "metrics.jsonl", append=ckpt is not None)

    def checkpoint(at: int) -> None:
        save_checkpoint(work_dir, {
            "config": config, "vocab": splits.vocab.chars, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "step": at, "rng": {"batch": gen.get_state()},
            "losses": losses[:at].cpu(), "train_words": "\n".join(splits.words["train"])})

    def boundaries(start: int) -> int:
        """The next step at which the loop must stop: log, eval, lr change or the end."""
        stops = [max_steps, (start // config["log_every"] + 1) * config["log_every"]]
        if config["eval_every"]:
            stops.append((start // config["eval_every"] + 1) * config["eval_every"])
        if start < config["lr_decay_at"]:
            stops.append(config["lr_decay_at"])
        return min(stops)

    from tqdm import tqdm  # progress bar: rate, ETA and postfix without hand-written code
    bar = tqdm(total=max_steps, initial=step, unit="step", disable=config["quiet"],
               file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
    train_seconds, window_start, first_step = 0.0, step, step
    print(f"{config['type']} with {n_params:,} parameters, {config['ops']} ops, "
          f"{config['engine']} engine, on {device}; {len(x):,} training examples",
          file=sys.stderr)
    try:
        while step < max_steps:
            stop = boundaries(step)
            lr = optimizer.lr = learning_rate(config, step)
            t0 = time.perf_counter()
            if config["engine"] == "fused":  # minibatches from (seed + 1, step): resumable
                lrs = torch.full((stop - step,), lr)
                losses[step:stop] = engines.fused_steps(model, x, y, lrs, config["batch_size"],
                                                        step, config["seed"] + 1)
            else:
                losses[step:stop] = run_steps(model, optimizer, x, y, config["batch_size"], gen,
                                              stop - step)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_seconds += time.perf_counter() - t0
            bar.update(stop - step)
            step = stop
            if step % config["log_every"] == 0 or step == max_steps:
                recent = losses[window_start:step].mean().item()  # the one host read
                window_start = step
                bar.set_postfix(loss=f"{recent:.4f}", lr=f"{lr:g}")
                metrics.write({"step": step, "loss": recent, "lr": lr,
                               "steps_per_s": (step - first_step) / max(train_seconds, 1e-9),
                               "elapsed_s": time.perf_counter() - started})
            if config["eval_every"] and step % config["eval_every"] == 0 and step < max_steps:
                record = {"step": step, "train_loss": split_loss(model, x, y),
                          "dev_loss": split_loss(model, *splits.tensors["dev"])}
                metrics.write(record)
                bar.write(f"step {step}: train {record['train_loss']:.4f}, "
                          f"dev {record['dev_loss']:.4f}", file=sys.stderr)
                checkpoint(step)
    except KeyboardInterrupt:
        bar.close()
        checkpoint(step)
        metrics.close()
        print(f"\ninterrupted: saved step {step} to {work_dir / 'model.pt'}; continue with "
              f"--resume -o {work_dir}", file=sys.stderr)
        return 130
    bar.close()

    final = {name: split_loss(model, *splits.tensors[name]) for name in ("train", "dev", "test")}
    metrics.write({"step": step, **{f"{k}_loss": v for k, v in final.items()}})
    metrics.close()
    checkpoint(step)
    steps_run = step - first_step
    summary = {
        "model": config["type"], "n_params": n_params, "config": config, "device": str(device),
        "ops": config["ops"], "engine": config["engine"], "steps": step, "seconds": train_seconds,
        "steps_per_s": steps_run / max(train_seconds, 1e-9),
        "n_train": len(x), "n_dev": len(splits.tensors["dev"][0]),
        "n_test": len(splits.tensors["test"][0]),
        "train_loss": final["train"], "dev_loss": final["dev"], "test_loss": final["test"],
    }
    (work_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plots.loss_curve(losses[:step], work_dir / "loss.png")
    if hasattr(model, "C"):
        plots.embedding_scatter(model.C, list(splits.vocab.itos), work_dir / "embedding.png")
    print(f"train {final['train']:.4f}  dev {final['dev']:.4f}  test {final['test']:.4f}  "
          f"({steps_run:,} steps in {train_seconds:.1f} s, "
          f"{summary['steps_per_s']:,.0f} steps/s; outputs in {work_dir})")
    if config["num_samples"]:
        sample_gen = torch.Generator(device=device).manual_seed(config["seed"] + 2)
        words = sample_words(model, splits.vocab, config["num_samples"], generator=sample_gen,
                             device=device)
        print("samples:")
        print_samples(words, set(splits.words["train"]))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config, ckpt = resolve_config(args)
        device = resolve_device(config["device"], config["ops"])
        if config["threads"]:
            torch.set_num_threads(config["threads"])
        splits = load_splits(config["input_file"], config["block_size"], config["split_seed"])
        if ckpt is not None and (splits.vocab.chars != ckpt["vocab"] or
                                 "\n".join(splits.words["train"]) != ckpt["train_words"]):
            raise CheckpointError("the input file is not the one the checkpoint was trained on")
        splits = splits.to(device)
        work_dir = Path(config["work_dir"])
        work_dir.mkdir(parents=True, exist_ok=True)
        if config["lr_find"]:
            return lr_find(config, splits, device, work_dir)
        return train(config, ckpt, splits, device, work_dir)
    except (DataError, CheckpointError, ConfigError, DeviceError) as e:
        print(f"pymakemore.train: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an unwritable work dir and the like
        print(f"pymakemore.train: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
