"""The lectures' BatchNorm models (part 3's bnmlp, part 5's wavenet; their presets' sizes,
batch 32) in one process, at every instruction-set level this CPU runs, the variants
alternated: microseconds per training step with plain PyTorch (--ops torch), with the fused
ops but BatchNorm and tanh as separate torch ops (as before ops.batch_norm_tanh), and with the
fused ops and ops.batch_norm_tanh (the default); then the op alone, forward + backward, against
torch.tanh of the lectures' BatchNorm at those models' shapes.

    .venv/bin/python bench/batch_norm_bench.py [--steps 1000] [--rounds 5] [-i names.txt]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import cpu_name  # noqa: E402
from pymakemore import _C, ops  # noqa: E402
from pymakemore.config import DEFAULTS, PRESETS  # noqa: E402
from pymakemore.data import load_splits  # noqa: E402
from pymakemore.engines import run_steps  # noqa: E402
from pymakemore.models import build_model  # noqa: E402
from pymakemore.models.layers import BatchNorm  # noqa: E402
from pymakemore.engines import SGD  # noqa: E402

LEVELS = ["portable", "avx2", "avx512"]
fused_tanh = BatchNorm.tanh


def separate_tanh(self, x, ops_name):  # BatchNorm then torch.tanh, as before the fused op
    return torch.tanh(self(x))


def step_us(preset, variant, splits, steps, rounds):
    config = {**DEFAULTS, **PRESETS[preset], "ops": "torch" if variant == "torch" else "fused"}
    model = build_model(config, splits.vocab.size)
    opt = SGD(model.parameters(), lr=0.1)
    x, y = splits.tensors["train"]
    gen = torch.Generator().manual_seed(1)
    BatchNorm.tanh = separate_tanh if variant == "separate" else fused_tanh
    try:
        run_steps(model, opt, x, y, 32, gen, 50)  # warm-up
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            run_steps(model, opt, x, y, 32, gen, steps)
            times.append((time.perf_counter() - t0) / steps * 1e6)
    finally:
        BatchNorm.tanh = fused_tanh
    return statistics.median(times)


def op_us(shape, fused, rounds=7, budget=0.3):
    torch.manual_seed(0)
    x = torch.randn(shape, requires_grad=True)
    layer = BatchNorm(shape[-1])
    grad = torch.randn(shape)
    params = [x, layer.gain, layer.bias]

    def step():
        y = layer.tanh(x, "fused") if fused else torch.tanh(layer(x))
        torch.autograd.grad(y, params, grad)

    for _ in range(20):
        step()
    n = max(1, int(budget / max(1e-6, timeit(step, 20) / 20)))
    return statistics.median(timeit(step, n) / n * 1e6 for _ in range(rounds))


def timeit(fn, n):
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-i", "--input-file", default=str(Path(__file__).resolve().parents[2] /
                                                      "shared" / "data" / "names.txt"))
    ap.add_argument("--levels", default=",".join(
        LEVELS[:LEVELS.index(_C.best_cpu_level()) + 1]))
    args = ap.parse_args()
    print(f"{cpu_name()}, best level {_C.best_cpu_level()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; us/step, median of {args.rounds} x {args.steps}")
    print("| model | level | --ops torch | fused, BatchNorm + tanh apart | fused + "
          "batch_norm_tanh | speed-up over apart | over --ops torch |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for preset in ("bnmlp", "wavenet"):
        splits = load_splits(args.input_file, PRESETS[preset].get("block_size", 3))
        for level in args.levels.split(","):
            _C.set_cpu_level(level)
            us = {v: [] for v in ("torch", "separate", "fused")}
            for _ in range(2):  # alternated, twice
                for v in us:
                    us[v].append(step_us(preset, v, splits, args.steps, args.rounds))
            t, s, f = (min(us[v]) for v in ("torch", "separate", "fused"))
            print(f"| {preset} | {level} | {t:,.0f} | {s:,.0f} | {f:,.0f} | {s / f:.2f}x | "
                  f"{t / f:.2f}x |")
    print()
    print("| op, fwd + bwd | level | tanh(BatchNorm) in torch ops | ops.batch_norm_tanh | "
          "ratio |")
    print("|---|---|---:|---:|---:|")
    for shape in ((32, 200), (32, 4, 128), (32, 2, 128), (32, 128)):
        for level in args.levels.split(","):
            _C.set_cpu_level(level)
            apart, fused = op_us(shape, False), op_us(shape, True)
            print(f"| {shape} | {level} | {apart:,.1f} | {fused:,.1f} | {apart / fused:.2f}x |")


if __name__ == "__main__":
    main()
