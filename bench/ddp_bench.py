"""Data-parallel scaling on this machine: the same training run in one process and under
torchrun with 2 processes (gloo on CPU, NCCL on GPUs), steps/s from each run's summary.json.

    python bench/ddp_bench.py [--text ../shared/data/tinyshakespeare.txt] [--steps 200]
                              [--device cpu|cuda] [--processes 2]

Cases: gpt-shakespeare-small (4 blocks, n_embd 128, block 64, batch 32) and the lecture MLP.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
from pymakemore import distributed  # noqa: E402


def run(args: list[str], processes: int, threads: int, work: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    launcher = distributed.local_launcher(processes) if processes > 1 else [sys.executable]
    cmd = [*launcher, "-m", "pymakemore.train", *args, "--threads", str(threads), "--quiet",
           "--num-samples", "0", "--eval-every", "0", "-o", str(work)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return json.loads((work / "summary.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--text", default=str(DATA / "tinyshakespeare.txt"))
    p.add_argument("--names", default=str(DATA / "names.txt"))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--device", default="cpu")
    p.add_argument("--processes", type=int, default=2)
    args = p.parse_args()
    cores = os.cpu_count() or 1
    cases = {
        "gpt-shakespeare-small": ["--preset", "gpt-shakespeare-small", "-i", args.text],
        "mlp (lecture)": ["-i", args.names, "--log-every", "100"],
    }
    per_process = max(1, cores // args.processes) if args.device == "cpu" else 1
    print(f"{args.steps} steps each, device {args.device}, {cores} CPU cores\n")
    def threads(n):
        return f"{n} thread{'s' if n > 1 else ''}"
    print(f"| case | 1 process, {threads(cores)} | 1 process, {threads(per_process)} | "
          f"{args.processes} processes x {threads(per_process)} | speed-up vs 1 process, "
          f"{threads(cores)} |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, case in cases.items():
            common = [*case, "--device", args.device, "--max-steps", str(args.steps)]
            rates = []
            for i, (procs, threads) in enumerate([(1, cores), (1, per_process),
                                                  (args.processes, per_process)]):
                summary = run(common, procs, threads, Path(tmp) / f"{name[:3]}{i}")
                rates.append(summary["steps_per_s"])
            print(f"| {name} | {rates[0]:,.1f} steps/s | {rates[1]:,.1f} steps/s | "
                  f"{rates[2]:,.1f} steps/s | {rates[2] / rates[0]:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
