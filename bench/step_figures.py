"""One training step's time and peak memory, each measured in a fresh process: what
bench/lce_bench.py and bench/gpt_head_bench.py share.

The caller gives `in_fresh_process` a Python snippet that defines `step()` (one forward +
backward, returning the loss) and, where the libraries should be warmed up before the peak is
read, `warm_up()`; the child measures them with `figures` and hands the numbers back.
"""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def figures(step, device: str, repeat: int, warm_up=None) -> dict:
    """CPU: the growth of the peak resident set over the first step (after warm_up); CUDA:
    torch.cuda.max_memory_allocated above what was allocated, over a step after a first one
    (warm-up, compilation). Then the median time of `repeat` steps."""
    import resource
    import time

    import torch

    def run():
        loss = step()
        if device == "cuda":
            torch.cuda.synchronize()
        return loss

    if device == "cuda":
        run()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        if warm_up is not None:
            warm_up()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        run()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        loss = run()
        times.append(time.perf_counter() - t0)
    return {"seconds": sorted(times)[len(times) // 2], "peak_bytes": peak, "loss": loss.item()}


def in_fresh_process(setup: str, device: str, repeat: int, what: str) -> dict:
    """`setup` run in a new interpreter (pymakemore and this folder importable), then its
    step measured there; a failure ends the benchmark with the child's last line."""
    code = (f"import sys\nsys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'bench')!r}]\n{setup}\n"
            f"import json, step_figures\nprint(json.dumps(step_figures.figures(step, "
            f"{device!r}, {repeat}, globals().get('warm_up'))))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{what}: {proc.stderr.strip().splitlines()[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
