"""The BatchNorm models of makemore parts 3 and 5 against the notebooks' own training loops, in
one process (the trainer's runs in child processes): microseconds per step of batch 32 for

- the notebook's loop as written there (part 3's BatchNorm MLP, part 5's WaveNet), eager, and
  the same step with its forward + loss under torch.compile (the update eager, as written);
- pymakemore's --engine fused (chain_train_steps) alone, blocks of steps;
- pymakemore's --ops fused and --ops torch per op (--engine ops);
- the trainer as a learner runs it: `--preset bnmlp` / `--preset wavenet`, --engine auto, the
  whole schedule (default 200,000 steps), steps per second and the dev loss from summary.json;

the pymakemore rows at each instruction-set level asked for (PYMAKEMORE_CPU_LEVEL).

    .venv/bin/python bench/chain_engine_bench.py [--trainer-steps 200000] [--levels avx2]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from batch_norm_bench import step_us  # noqa: E402
from conftest import cpu_name  # noqa: E402
from pymakemore import _C  # noqa: E402
from pymakemore.config import DEFAULTS, PRESETS  # noqa: E402
from pymakemore.data import load_splits  # noqa: E402
from pymakemore.engines import fused_steps  # noqa: E402
from pymakemore.models import build_model  # noqa: E402
from pymakemore.models.layers import LECTURE_SEED  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LEVELS = ["portable", "avx2", "avx512"]


def part3_notebook(vocab):
    """Part 3's BatchNorm MLP as the notebook writes it: its parameters and forward + loss."""
    g = torch.Generator().manual_seed(LECTURE_SEED)
    C = torch.randn((vocab, 10), generator=g)
    W1 = torch.randn((30, 200), generator=g) * (5 / 3) / 30 ** 0.5
    W2 = torch.randn((200, vocab), generator=g) * 0.01
    b2 = torch.randn(vocab, generator=g) * 0
    bngain, bnbias = torch.ones((1, 200)), torch.zeros((1, 200))
    running = {"mean": torch.zeros((1, 200)), "std": torch.ones((1, 200))}
    params = [C, W1, W2, b2, bngain, bnbias]
    for p in params:
        p.requires_grad = True

    def forward(Xb, Yb):
        emb = C[Xb]
        embcat = emb.view(emb.shape[0], -1)
        hpreact = embcat @ W1
        bnmeani = hpreact.mean(0, keepdim=True)
        bnstdi = hpreact.std(0, keepdim=True)
        hpreact = bngain * (hpreact - bnmeani) / bnstdi + bnbias
        with torch.no_grad():
            running["mean"].mul_(0.999).add_(0.001 * bnmeani)
            running["std"].mul_(0.999).add_(0.001 * bnstdi)
        h = torch.tanh(hpreact)
        logits = h @ W2 + b2
        return F.cross_entropy(logits, Yb)
    return params, forward


class Linear:
    def __init__(self, fan_in, fan_out, bias=True):
        self.weight = torch.randn((fan_in, fan_out)) / fan_in ** 0.5
        self.bias = torch.zeros(fan_out) if bias else None

    def __call__(self, x):
        self.out = x @ self.weight
        if self.bias is not None:
            self.out += self.bias
        return self.out

    def parameters(self):
        return [self.weight] + ([] if self.bias is None else [self.bias])


class BatchNorm1d:
    def __init__(self, dim, eps=1e-5, momentum=0.1):
        self.eps, self.momentum, self.training = eps, momentum, True
        self.gamma, self.beta = torch.ones(dim), torch.zeros(dim)
        self.running_mean, self.running_var = torch.zeros(dim), torch.ones(dim)

    def __call__(self, x):
        dim = 0 if x.ndim == 2 else (0, 1)
        xmean = x.mean(dim, keepdim=True)
        xvar = x.var(dim, keepdim=True)
        xhat = (x - xmean) / torch.sqrt(xvar + self.eps)
        self.out = self.gamma * xhat + self.beta
        with torch.no_grad():
            self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * xmean
            self.running_var = (1 - self.momentum) * self.running_var + self.momentum * xvar
        return self.out

    def parameters(self):
        return [self.gamma, self.beta]


class Tanh:
    def __call__(self, x):
        self.out = torch.tanh(x)
        return self.out

    def parameters(self):
        return []


class Embedding:
    def __init__(self, num_embeddings, embedding_dim):
        self.weight = torch.randn((num_embeddings, embedding_dim))

    def __call__(self, ix):
        self.out = self.weight[ix]
        return self.out

    def parameters(self):
        return [self.weight]


class FlattenConsecutive:
    def __init__(self, n):
        self.n = n

    def __call__(self, x):
        B, T, C = x.shape
        x = x.view(B, T // self.n, C * self.n)
        if x.shape[1] == 1:
            x = x.squeeze(1)
        self.out = x
        return self.out

    def parameters(self):
        return []


def part5_notebook(vocab):
    """Part 5's WaveNet as the notebook writes it (its layer classes, n_embd 24, n_hidden 128)."""
    torch.manual_seed(42)
    n_embd, n_hidden = 24, 128
    layers = [Embedding(vocab, n_embd), FlattenConsecutive(2),
              Linear(n_embd * 2, n_hidden, bias=False), BatchNorm1d(n_hidden), Tanh(),
              FlattenConsecutive(2), Linear(n_hidden * 2, n_hidden, bias=False),
              BatchNorm1d(n_hidden), Tanh(),
              FlattenConsecutive(2), Linear(n_hidden * 2, n_hidden, bias=False),
              BatchNorm1d(n_hidden), Tanh(), Linear(n_hidden, vocab)]
    with torch.no_grad():
        layers[-1].weight *= 0.1
    params = [p for layer in layers for p in layer.parameters()]
    for p in params:
        p.requires_grad = True

    def forward(Xb, Yb):
        x = Xb
        for layer in layers:
            x = layer(x)
        return F.cross_entropy(x, Yb)
    return params, forward


def notebook_us(make, x, y, steps, rounds, compiled):
    """The notebook's loop (minibatch draw, forward, backward, update, loss.log10().item())."""
    params, forward = make(27)
    if compiled:
        forward = torch.compile(forward)
    gen = torch.Generator().manual_seed(1)

    def run(n):
        for i in range(n):
            ix = torch.randint(0, x.shape[0], (32,), generator=gen)
            loss = forward(x[ix], y[ix])
            for p in params:
                p.grad = None
            loss.backward()
            lr = 0.1
            for p in params:
                p.data += -lr * p.grad
            loss.log10().item()

    run(50)  # warm-up (and compilation)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        run(steps)
        times.append((time.perf_counter() - t0) / steps * 1e6)
    return statistics.median(times)


def engine_us(preset, splits, steps, rounds):
    config = {**DEFAULTS, **PRESETS[preset]}
    model = build_model(config, splits.vocab.size)
    x, y = splits.tensors["train"]
    lrs = torch.full((steps,), 0.01)
    fused_steps(model, x, y, lrs[:50], 32, 0, 1)
    times = []
    for r in range(rounds):
        t0 = time.perf_counter()
        fused_steps(model, x, y, lrs, 32, 50 + r * steps, 1)
        times.append((time.perf_counter() - t0) / steps * 1e6)
    return statistics.median(times)


def trainer_run(preset, level, steps, input_file):
    with tempfile.TemporaryDirectory() as work:
        cmd = [sys.executable, "-m", "pymakemore.train", "--preset", preset, "-i", input_file,
               "-o", work, "--max-steps", str(steps), "--quiet", "--num-samples", "0"]
        env = {**os.environ, "PYMAKEMORE_CPU_LEVEL": level}
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, env=env, capture_output=True)
        wall = time.perf_counter() - t0
        summary = json.loads((Path(work) / "summary.json").read_text())
    return summary, wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--trainer-steps", type=int, default=200_000)
    ap.add_argument("-i", "--input-file", default=str(ROOT.parent / "shared" / "data" /
                                                      "names.txt"))
    ap.add_argument("--levels", default=",".join(
        LEVELS[:LEVELS.index(_C.best_cpu_level()) + 1][-2:]))
    args = ap.parse_args()
    print(f"{cpu_name()}, best level {_C.best_cpu_level()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; us/step of batch 32, median of {args.rounds} x "
          f"{args.steps} steps")
    notebooks = {"bnmlp": part3_notebook, "wavenet": part5_notebook}
    rows = []
    for preset, make in notebooks.items():
        splits = load_splits(args.input_file, PRESETS[preset].get("block_size", 3))
        x, y = splits.tensors["train"]
        eager = notebook_us(make, x, y, args.steps, args.rounds, compiled=False)
        compiled = notebook_us(make, x, y, args.steps, args.rounds, compiled=True)
        for level in args.levels.split(","):
            _C.set_cpu_level(level)
            engine = engine_us(preset, splits, args.steps, args.rounds)
            ops_fused = step_us(preset, "fused", splits, args.steps, args.rounds)
            ops_torch = step_us(preset, "torch", splits, args.steps, args.rounds)
            summary, wall = trainer_run(preset, level, args.trainer_steps, args.input_file)
            trainer = 1e6 / summary["steps_per_s"]
            rows.append((preset, level, eager, compiled, engine, trainer, ops_fused, ops_torch,
                         summary, wall))
    print("| model | level | notebook eager | notebook torch.compile | engine alone | trainer "
          "(preset, auto) | vs eager | vs compile | --ops fused (engine ops) | --ops torch | "
          "fused vs torch |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for preset, level, eager, compiled, engine, trainer, of, ot, _, _ in rows:
        print(f"| {preset} | {level} | {eager:,.0f} | {compiled:,.0f} | {engine:,.0f} | "
              f"{trainer:,.0f} | {eager / trainer:.1f}x | {compiled / trainer:.1f}x | {of:,.0f} | "
              f"{ot:,.0f} | {ot / of:.2f}x |")
    print()
    print(f"| model | level | steps | engine | train | dev | test | seconds (summary) | "
          f"wall (process) |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|")
    for preset, level, *_, summary, wall in rows:
        print(f"| {preset} | {level} | {summary['steps']:,} | {summary['engine']} | "
              f"{summary['train_loss']:.4f} | {summary['dev_loss']:.4f} | "
              f"{summary['test_loss']:.4f} | {summary['seconds']:.1f} | {wall:.1f} |")


if __name__ == "__main__":
    main()
