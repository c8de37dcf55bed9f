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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from . import diagnostics, distributed, engines, manual_backprop, plots
from .checkpoint import CheckpointError, model_from_checkpoint, save_checkpoint
from .config import (LR_FIND_STEPS, ConfigError, build_parser, check_distributed,
                     resolve_config)
from .data import DataError, Splits, load_splits
from .devices import DeviceError, resolve_device
from .engines import make_optimizer, run_steps, set_lr
from .models import autoregressive, build_model
from .models.bigram import bigram_counts, counts_log_probs, counts_nll
from .models.layers import IGNORE_TARGET, OPS
from .sample import TEXT_SAMPLE_CHARS, print_samples, sample_text, sample_words
from .workdir import Metrics, RunLock, WorkDirError, check_writable, write_failure

DIAGNOSTIC_ROWS = 1024  # examples of the histograms (one minibatch of 32 is too noisy)


def layout(config: dict[str, Any]) -> str:
    """How the data becomes examples (data.LAYOUTS) for this model."""
    if config["data"] == "text":
        return "text"
    return "sequences" if autoregressive(config["type"]) else "windows"


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


@dataclass
class Hook:
    """A model-specific report around the loop. `at`: "start" (before the first step, every
    rank) or "end" (after the final evaluation, rank 0). make(run, splits, work_dir) returns
    its summary.json entry under `key` (None: no entry); `line(entry)`, when given, is printed
    after the losses."""
    key: Optional[str]
    at: str
    make: Callable[[engines.Run, Splits, Path], Any]
    line: Optional[Callable[[Any], str]] = None


def hooks_for(run: engines.Run) -> list[Hook]:
    config, hooks = run.config, []
    if config["backprop"] == "manual":  # part 4: hand-written gradients against autograd's
        hooks.append(Hook("gradient_check", "start", lambda r, splits, work_dir: gradient_check(
            r.model, r.x, r.y, config["batch_size"], config["seed"] + 3, work_dir)))
    if config["type"] == "bigram":  # part 1: the counts model beside the neural one
        hooks.append(Hook("counts_model", "end", lambda r, splits, work_dir: bigram_report(
            splits, work_dir), line=lambda c: (
                f"counts model: train {c['train_loss']:.4f}  dev {c['dev_loss']:.4f}  "
                f"test {c['test_loss']:.4f}; fitted on all the data {c['all_data_loss']:.4f}")))
    if run.ratios is not None:  # part 3: activations, gradients, update:data ratios
        hooks.append(Hook("saturated", "end", layer_diagnostics))
    if hasattr(run.model, "C"):  # the embedding table's first two dimensions, as in part 2
        hooks.append(Hook(None, "end", lambda r, splits, work_dir: plots.embedding_scatter(
            r.model.C, list(splits.vocab.itos), work_dir / "embedding.png")))
    return hooks


def run_hooks(hooks: list[Hook], at: str, run: engines.Run, splits: Splits, work_dir: Path
              ) -> dict[str, Any]:
    """The hooks of one moment, in order; their summary.json entries."""
    entries = {}
    for hook in hooks:
        if hook.at == at:
            entry = hook.make(run, splits, work_dir)
            if hook.key is not None:
                entries[hook.key] = entry
    return entries


def layer_diagnostics(run: engines.Run, splits: Splits, work_dir: Path) -> list[float]:
    report = diagnostics.layer_report(run.model, *check_batch(run.x, run.y, DIAGNOSTIC_ROWS,
                                                              run.config["seed"] + 3))
    diagnostics.write(report, run.ratios, work_dir)
    return [r["saturated"] for r in report["tanh_layers"]]


def prepare(config: dict[str, Any], ckpt: Optional[dict], splits: Splits, device: torch.device,
            group: distributed.Group) -> tuple[engines.Run, int, torch.Tensor]:
    """The model, optimizer and generators, new or as the checkpoint left them; the step to
    start from and the losses buffer (the checkpoint's losses filled in)."""
    if ckpt is not None:
        model, _ = model_from_checkpoint(ckpt, device)
    else:
        model = build_model(config, splits.vocab.size).to(device)
    x, y = splits.tensors["train"]
    run = engines.Run(model, make_optimizer(config, model), x, y,
                      torch.Generator(device=device).manual_seed(config["seed"] + 1), config,
                      device, group, trainer=distributed.wrap(model, group, device),
                      ratios=diagnostics.UpdateRatios(model) if config["diagnostics"] else None)
    losses = torch.zeros(config["max_steps"], device=device)
    torch.manual_seed(config["seed"] + 3 + group.rank)  # dropout's draws
    if ckpt is None:
        return run, 0, losses
    try:
        run.optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"the checkpoint's optimizer state does not fit: {e}") from None
    try:
        set_rng_state(run.generator, ckpt["rng"], device)
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(f"the checkpoint's rng state does not fit: {e}") from None
    step = ckpt["step"]
    if group.enabled:  # rank 0's dropout state is saved; each rank needs its own draws
        torch.manual_seed(config["seed"] + 3 + group.rank + step * group.world)
    if step > config["max_steps"]:
        raise ConfigError(f"the checkpoint is at step {step}; give --max-steps above it "
                          f"to train on")
    losses[:step] = ckpt["losses"][:step].to(device)
    if run.ratios is not None and "update_ratios" in ckpt:
        run.ratios.load_state_dict(ckpt["update_ratios"])
    return run, step, losses


def next_stop(config: dict[str, Any], step: int) -> int:
    """The next step at which the loop must stop: log, eval, lr change or the end."""
    stops = [config["max_steps"], (step // config["log_every"] + 1) * config["log_every"]]
    if config["eval_every"]:
        stops.append((step // config["eval_every"] + 1) * config["eval_every"])
    if step < config["lr_decay_at"]:
        stops.append(config["lr_decay_at"])
    return min(stops)


# metrics.jsonl's keys -> TensorBoard tags (makemore.py writes Loss/train and Loss/test)
BOARD_TAGS = {"loss": "Loss/minibatch", "lr": "LearningRate", "train_loss": "Loss/train",
              "dev_loss": "Loss/dev", "test_loss": "Loss/test"}


def scalar_board(work_dir: Path):
    """A TensorBoard writer into work_dir/tensorboard; a ConfigError (one line) when the
    optional tensorboard package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install "
                          "tensorboard") from None
    return SummaryWriter(log_dir=str(work_dir / "tensorboard"))


class Progress:
    """What rank 0 reports as the loop runs: the progress bar, metrics.jsonl, the clock of the
    training steps alone (evaluations and checkpoints excluded)."""

    def __init__(self, config: dict[str, Any], step: int, resumed: bool, work_dir: Path,
                 main_rank: bool):
        from tqdm import tqdm  # progress bar: rate, ETA and postfix without hand-written code
        self.main_rank, self.first_step, self.window_start = main_rank, step, step
        self.started, self.train_seconds = time.perf_counter(), 0.0
        self.metrics = Metrics(work_dir / "metrics.jsonl", resume_step=step if resumed else None,
                               evaluates_there=bool(config["eval_every"]) and
                               step % config["eval_every"] == 0) if main_rank else None
        self.board = scalar_board(work_dir) if config["tensorboard"] and main_rank else None
        self.bar = tqdm(total=config["max_steps"], initial=step, unit="step",
                        disable=config["quiet"] or not main_rank, file=sys.stderr,
                        dynamic_ncols=True, mininterval=0.5)

    @contextlib.contextmanager
    def timing(self, device: torch.device):
        t0 = time.perf_counter()
        yield
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.train_seconds += time.perf_counter() - t0

    def steps_per_s(self, step: int) -> float:
        return (step - self.first_step) / max(self.train_seconds, 1e-9)

    def log(self, record: dict[str, Any]) -> None:
        if self.main_rank:
            self.metrics.write(record)  # the source of truth; TensorBoard gets a copy
        if self.board is not None:
            for key, tag in BOARD_TAGS.items():
                if key in record:
                    self.board.add_scalar(tag, record[key], record["step"])
            if "train_loss" in record:
                self.board.flush()

    def training(self, step: int, losses: torch.Tensor, lr: float) -> None:
        recent = losses[self.window_start:step].mean().item()  # the one host read
        self.window_start = step
        self.bar.set_postfix(loss=f"{recent:.4f}", lr=f"{lr:g}")
        self.log({"step": step, "loss": recent, "lr": lr, "steps_per_s": self.steps_per_s(step),
                  "elapsed_s": time.perf_counter() - self.started})

    def evaluation(self, step: int, found: dict[str, float]) -> None:
        self.log({"step": step, "train_loss": found["train"], "dev_loss": found["dev"]})
        if self.main_rank:
            self.bar.write(f"step {step}: train {found['train']:.4f}, dev {found['dev']:.4f}",
                           file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
        self.close_files()

    def close_files(self) -> None:
        if self.main_rank:
            self.metrics.close()
        if self.board is not None:
            self.board.close()


def train(config: dict[str, Any], ckpt: Optional[dict], splits: Splits, device: torch.device,
          work_dir: Path, group: distributed.Group = distributed.SINGLE) -> int:
    """The training run; under torchrun every rank runs it, rank 0 alone writes and prints."""
    run, step, losses = prepare(config, ckpt, splits, device, group)
    if ckpt is not None and step == config["max_steps"] and (work_dir / "summary.json").exists():
        raise ConfigError(f"the checkpoint is at step {step} and its run has finished; give "
                          f"--max-steps above it to train on")
    # (at the final step without summary.json: a run killed before its outputs were written;
    # the loop is skipped and they are written now)
    auto = config["engine"] == "auto"
    if auto:  # resolved once: the checkpoint keeps the engine the run took
        config["engine"] = engines.choose(run.model, config, device, group.enabled)
    engine = engines.ENGINES[config["engine"]]
    why = engine.problem(run.model, device, group.enabled)  # (the options: when parsed)
    if why:
        raise ConfigError(why)
    train_steps = engine.start(run)
    hooks = hooks_for(run)
    reports = run_hooks(hooks, "start", run, splits, work_dir)
    progress = Progress(config, step, ckpt is not None, work_dir, group.is_main)

    def evaluate(names) -> dict[str, float]:
        return {name: split_loss(run.model, *splits.evaluation(name), group=group)
                for name in names}

    last_saved = step if ckpt is not None else None

    def save(at: int) -> None:
        nonlocal last_saved
        if group.is_main:
            save_checkpoint(work_dir, checkpoint_payload(run, splits, losses, at))
        last_saved = at

    if group.is_main:
        ranks = f" x {group.world} processes (DDP)" if group.enabled else ""
        print(f"{config['type']} ({config['preset']}) with {n_params(run.model):,} parameters, "
              f"{config['ops']} ops, {config['engine']} engine{' (auto)' if auto else ''}, "
              f"{config['backprop']} backprop, on {device}{ranks}; {len(run.x):,} training "
              f"examples", file=sys.stderr)
    try:
        with StopSignals() as signals:
            while step < config["max_steps"]:
                stop, lr = next_stop(config, step), learning_rate(config, step)
                with progress.timing(device):
                    losses[step:stop] = train_steps(step, stop, lr)
                try:
                    check_finite(losses[:stop], step, last_saved)
                except Diverged:
                    progress.close()
                    raise
                progress.bar.update(stop - step)
                step = stop
                if step % config["log_every"] == 0 or step == config["max_steps"]:
                    progress.training(step, losses, lr)
                if config["eval_every"] and step % config["eval_every"] == 0 \
                        and step < config["max_steps"]:
                    progress.evaluation(step, evaluate(("train", "dev")))
                    save(step)
                if signals.stop_requested(group, device):
                    break
        if signals.received is not None:  # stopped at a step boundary: everything is at `step`
            progress.bar.close()
            terminated = signals.received == signal.SIGTERM
            if group.is_main:
                save(step)
                progress.close_files()
                print(f"\n{'terminated' if terminated else 'interrupted'}: saved step {step} to "
                      f"{work_dir / 'model.pt'}; continue with --resume -o {work_dir}",
                      file=sys.stderr)
            return 128 + signal.SIGTERM if terminated else 130
    except KeyboardInterrupt as stopped:  # a second Ctrl-C or SIGTERM: at once, no checkpoint
        progress.bar.close()
        what = "terminated" if isinstance(stopped, Terminated) else "interrupted"
        if group.is_main:
            progress.close_files()
            print(f"\n{what} at once: no checkpoint written (the last one stands); continue "
                  f"with --resume -o {work_dir}", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(stopped, Terminated) else 130
    progress.bar.close()

    final = evaluate(("train", "dev", "test"))
    if not group.is_main:
        return 0
    progress.log({"step": step, **{f"{k}_loss": v for k, v in final.items()}})
    progress.close()
    save(step)
    reports.update(run_hooks(hooks, "end", run, splits, work_dir))
    finish(run, splits, final, step, progress, losses, reports, work_dir)
    for hook in hooks:
        if hook.line is not None:
            print(hook.line(reports[hook.key]))
    if config["num_samples"]:
        print_final_samples(run, splits)
    return 0


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def checkpoint_payload(run: engines.Run, splits: Splits, losses: torch.Tensor, step: int
                       ) -> dict[str, Any]:
    payload = {
        "config": run.config, "vocab": splits.vocab.chars, "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(), "step": step,
        "rng": rng_state(run.generator, run.device), "losses": losses[:step].cpu(),
        "train_words": "\n".join(splits.words["train"]), "data_fingerprint": splits.fingerprint()}
    if run.ratios is not None:
        payload["update_ratios"] = run.ratios.state_dict()
    return payload


def finish(run: engines.Run, splits: Splits, final: dict[str, float], step: int,
           progress: Progress, losses: torch.Tensor, reports: dict[str, Any], work_dir: Path
           ) -> None:
    """summary.json, the loss plot and the losses line."""
    config, seconds = run.config, progress.train_seconds
    summary = {
        "model": config["type"], "preset": config["preset"], "n_params": n_params(run.model),
        "config": config, "device": str(run.device), "ops": config["ops"],
        "engine": config["engine"], "steps": step, "seconds": seconds,
        "steps_per_s": progress.steps_per_s(step),
        "n_train": len(run.x), "n_dev": len(splits.tensors["dev"][0]),
        "n_test": len(splits.tensors["test"][0]),
        "train_loss": final["train"], "dev_loss": final["dev"], "test_loss": final["test"],
        **reports,
    }
    for name, write in (
            ("summary.json", lambda p: p.write_text(json.dumps(summary, indent=2) + "\n")),
            ("loss.png", lambda p: plots.loss_curve(losses[:step], p))):
        try:
            write(work_dir / name)
        except OSError as e:  # a full disk: the line names the file
            raise write_failure(work_dir / name, e) from None
    print(f"train {final['train']:.4f}  dev {final['dev']:.4f}  test {final['test']:.4f}  "
          f"({step - progress.first_step:,} steps in {seconds:.1f} s, "
          f"{summary['steps_per_s']:,.0f} steps/s; outputs in {work_dir})")


def print_final_samples(run: engines.Run, splits: Splits) -> None:
    config, device = run.config, run.device
    sample_gen = torch.Generator(device=device).manual_seed(config["seed"] + 2)
    if config["data"] == "text":
        print("sample:")
        print(sample_text(run.model, splits.vocab, TEXT_SAMPLE_CHARS, generator=sample_gen,
                          device=device))
    else:
        words = sample_words(run.model, splits.vocab, config["num_samples"],
                             generator=sample_gen, device=device)
        print("samples:")
        print_samples(words, set(splits.words["train"]))


class Diverged(Exception):
    """A training loss that is not finite: the run stops (its last checkpoint kept)."""


def check_finite(losses: torch.Tensor, first: int, last_saved: Optional[int]) -> None:
    """Diverged, naming the first step whose loss is NaN or infinite, if any in
    losses[first:] (one host read per block of steps)."""
    block = losses[first:]
    finite = torch.isfinite(block)
    if bool(finite.all()):
        return
    at = int((~finite).nonzero()[0])
    kept = f"the checkpoint of step {last_saved} is kept" if last_saved else "no checkpoint " \
        "was written"
    raise Diverged(f"the training loss is {float(block[at])} at step {first + at + 1}: training "
                   f"stopped ({kept}); a lower --lr may help")


class Terminated(KeyboardInterrupt):
    """SIGTERM (schedulers, containers, systemd), handled as Ctrl-C is: checkpoint, then exit."""


class StopSignals:
    """Ctrl-C and SIGTERM while the training loop runs. The first one is noted, and the loop
    stops at the end of the block of steps it interrupted: a step boundary, where the
    parameters, the step, the RNG states, the losses and the metrics all describe the same step
    (a stop raised inside a block would leave parameters updated past the step the checkpoint
    names, or halfway through one step). A second one stops at once, without a checkpoint.
    Under torchrun the ranks agree on the block to stop after (one all-reduce per block)."""

    def __init__(self):
        self.received: Optional[int] = None  # the first signal's number
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _note(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum
            return
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the exit finish
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def stop_requested(self, group: distributed.Group, device: torch.device) -> bool:
        if not group.enabled:
            return self.received is not None
        # every rank stops after the same block: any rank's signal stops them all
        flags = torch.tensor([self.received == signal.SIGINT, self.received == signal.SIGTERM],
                             dtype=torch.float32, device=device)
        distributed.sum_(flags, group)
        if self.received is None and flags.any():
            self.received = signal.SIGTERM if flags[1] > 0 else signal.SIGINT
        return self.received is not None


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
        if group.enabled:
            check_distributed(config, group.world)
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
                or not splits.matches(ckpt.get("data_fingerprint", splits.fingerprint()))):
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
    except (DataError, CheckpointError, ConfigError, DeviceError, WorkDirError, Diverged,
            OSError) as e:
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
