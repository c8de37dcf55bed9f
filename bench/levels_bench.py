"""The CPU kernels at every instruction-set level this CPU runs, side by side in one process:
each op of bench/cases.py (forward + backward) against its torch composite, and the lecture
MLP's training step (the lecture's eager loop, the trainer with --ops fused, --engine fused).
Same inputs for every level; ratios above 1 mean pymakemore is faster than torch. With
--contention, the fused engine on one and on two threads, alone and beside a busy process.

    .venv/bin/python bench/levels_bench.py [--levels portable,avx2,avx512] [--engine-steps 5000]
        [-i names.txt] [--threads N] [--contention]
"""
import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cases  # noqa: E402
from conftest import cpu_name  # noqa: E402
from pymakemore import _C, engines  # noqa: E402
from pymakemore.config import DEFAULTS  # noqa: E402
from pymakemore.data import load_splits  # noqa: E402
from pymakemore.engines import run_steps  # noqa: E402
from pymakemore.models import build_model  # noqa: E402
from pymakemore.engines import SGD  # noqa: E402
from train_bench import lecture_loop  # noqa: E402

LEVELS = ["portable", "avx2", "avx512"]


def median_us(fn, budget=0.4, rounds=7):
    """Median over `rounds` rounds of the mean time of one call, each round ~budget/rounds s."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    calls = max(1, int(budget / rounds / once))
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times) * 1e6


def op_table(levels):
    head = "| op | shape | torch (us) | " + " | ".join(f"{lv} (us) | torch / {lv}"
                                                       for lv in levels) + " |"
    rows = [head, "|---|---|---:|" + "---:|---:|" * len(levels)]
    for op, case, sizes in cases.CASES:
        steps = cases.make(op, sizes)
        torch_us = median_us(steps["torch"])
        cells = []
        for lv in levels:
            _C.set_cpu_level(lv)
            ours = median_us(steps["pymakemore"])
            cells.append(f"{ours:,.1f} | {torch_us / ours:.2f}x")
        rows.append(f"| {op} | {case} | {torch_us:,.1f} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    return rows


def engine_table(levels, input_file, steps):
    splits = load_splits(input_file, 3)
    x, y = splits.tensors["train"]
    lecture = median_us(lambda: lecture_loop(x, y, steps, torch.device("cpu")), budget=0,
                        rounds=3) / steps
    rows = [f"lecture loop (eager PyTorch): {lecture:.1f} us/step",
            "| level | trainer --ops fused (us/step) | vs lecture | --engine fused (us/step) | "
            "vs lecture |", "|---|---:|---:|---:|---:|"]
    for lv in levels:
        _C.set_cpu_level(lv)
        model = build_model({**DEFAULTS, "ops": "fused"}, splits.vocab.size)
        opt = SGD(model.parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(1)
        ops_us = median_us(lambda: run_steps(model, opt, x, y, 32, gen, steps // 5), budget=0,
                           rounds=3) / (steps // 5)
        fused = build_model({**DEFAULTS, "ops": "fused"}, splits.vocab.size)
        lrs = torch.full((steps,), 0.1)
        eng_us = median_us(lambda: engines.fused_steps(fused, x, y, lrs, 32, 0, 1), budget=0,
                           rounds=3) / steps
        rows.append(f"| {lv} | {ops_us:.1f} | {lecture / ops_us:.2f}x | {eng_us:.1f} | "
                    f"{lecture / eng_us:.2f}x |")
        print(rows[-1], flush=True)
    return rows


def contention_table(input_file, steps):
    splits = load_splits(input_file, 3)
    x, y = splits.tensors["train"]
    lrs = torch.full((steps,), 0.1)

    def engine_us(threads):
        torch.set_num_threads(threads)
        model = build_model({**DEFAULTS, "ops": "fused"}, splits.vocab.size)
        return median_us(lambda: engines.fused_steps(model, x, y, lrs, 32, 0, 1), budget=0,
                         rounds=5) / steps

    rows = [f"--engine fused at level {_C.cpu_level()}, us/step (median of 5 x {steps} steps)",
            "| machine | 1 thread | 2 threads |", "|---|---:|---:|"]
    threads = torch.get_num_threads()
    try:
        rows.append(f"| alone | {engine_us(1):.1f} | {engine_us(2):.1f} |")
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.5)
            rows.append(f"| beside one busy process | {engine_us(1):.1f} | {engine_us(2):.1f} |")
        finally:
            busy.kill()
            busy.wait()
    finally:
        torch.set_num_threads(threads)
    for row in rows[-2:]:
        print(row, flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    runnable = LEVELS[:LEVELS.index(_C.best_cpu_level()) + 1]
    ap.add_argument("--levels", default=",".join(runnable))
    ap.add_argument("--engine-steps", type=int, default=5000,
                    help="steps per timed engine round (0: no engine table)")
    ap.add_argument("-i", "--input-file", default=str(Path(__file__).resolve().parents[2] /
                                                      "shared" / "data" / "names.txt"))
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--contention", action="store_true",
                    help="only the engine on 1 and 2 threads, alone and beside a busy process")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    levels = args.levels.split(",")
    print(f"{cpu_name()}, best level {_C.best_cpu_level()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    if args.contention:
        print("\n".join(contention_table(args.input_file, args.engine_steps or 5000)))
        return
    rows = op_table(levels)
    if args.engine_steps:
        rows += [""] + engine_table(levels, args.input_file, args.engine_steps)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
