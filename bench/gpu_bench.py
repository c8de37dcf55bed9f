"""GPU benchmarks of the fused ops against PyTorch eager and torch.compile, same process, same
inputs: CUDA-event medians after warm-up; at the makemore shapes also each step replayed from a
CUDA graph. Cross entropy also reports its effective bandwidth (logits read once, gradient
written once) against the card's copy bandwidth measured in the same run.

    python bench/gpu_bench.py [--out results.md] [--no-compile]
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cases  # noqa: E402

GPU_CASES = [
    ("cross_entropy", "16384x50304 fp32", dict(n=16384, c=50304), torch.float32),
    ("cross_entropy", "16384x50304 bf16", dict(n=16384, c=50304), torch.bfloat16),
    ("embedding", "262144x3 V=27 D=10", dict(n=262144 * 3, rows=27, dim=10), torch.float32),
    ("embedding", "16384 V=50304 D=768", dict(n=16384, rows=50304, dim=768), torch.float32),
    ("linear_tanh", "262144x30->200", dict(n=262144, k=30, h=200), torch.float32),
    ("linear", "262144x200->27", dict(n=262144, k=200, h=27), torch.float32),
    ("embedding", "makemore 32x3", dict(n=96, rows=27, dim=10), torch.float32),
    ("linear_tanh", "makemore 32x30->200", dict(n=32, k=30, h=200), torch.float32),
    ("linear", "makemore 32x200->27", dict(n=32, k=200, h=27), torch.float32),
    ("cross_entropy", "makemore 32x27", dict(n=32, c=27), torch.float32),
]


def median_us(fn, iters=50, warmup=10):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return sorted(times)[len(times) // 2]


def copy_bandwidth():
    """Device-to-device copy of 1 GiB: bytes read + written per second."""
    a = torch.empty(2**28, device="cuda")
    b = torch.empty_like(a)
    us = median_us(lambda: b.copy_(a), iters=20)
    return 2 * a.numel() * 4 / (us * 1e-6)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="also write the table (markdown) here")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    args = ap.parse_args()
    name = torch.cuda.get_device_name()
    peak = copy_bandwidth()
    lines = [f"{name}, torch {torch.__version__}, CUDA-event medians (us, forward + backward); "
             f"copy bandwidth measured: {peak / 1e12:.2f} TB/s", "",
             "| op | shape | pymakemore | torch eager | torch.compile | eager / ours | "
             "compile / ours | note |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for op, label, sizes, dtype in GPU_CASES:
        steps = cases.make(op, sizes, "cuda", dtype, compiled=not args.no_compile)
        t = {}
        for impl, step in steps.items():
            try:
                t[impl] = median_us(step)
            except Exception as e:  # a baseline that does not run here: say so, keep going
                t[impl] = float("nan")
                print(f"{op} {label} {impl}: {type(e).__name__}: {e}", file=sys.stderr)
        note = ""
        if op == "cross_entropy" and sizes["n"] > 1000:
            moved = 2 * sizes["n"] * sizes["c"] * torch.finfo(dtype).bits // 8
            bw = moved / (t["pymakemore"] * 1e-6)
            note = f"{bw / 1e12:.2f} TB/s, {bw / peak:.0%} of copy"
        if label.startswith("makemore"):
            ours_g = median_us(cases.cuda_graphed(steps["pymakemore"]))
            torch_g = median_us(cases.cuda_graphed(steps["torch"]))
            note = f"in a CUDA graph: ours {ours_g:.1f}, torch {torch_g:.1f}"
        comp = t.get("torch.compile", float("nan"))
        lines.append(f"| {op} | {label} | {t['pymakemore']:.1f} | {t['torch']:.1f} | "
                     f"{comp:.1f} | {t['torch'] / t['pymakemore']:.2f}x | "
                     f"{comp / t['pymakemore']:.2f}x | {note} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
