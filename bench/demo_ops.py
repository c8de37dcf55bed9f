"""Demo of the fused ops: each one next to the torch.nn.functional composite it replaces, on
the makemore shapes and a large one, with the largest differences and the timings.

    make demo        # or: python bench/demo_ops.py
"""
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pymakemore import ops  # noqa: E402
import cases  # noqa: E402


def fwd_bwd(fn, inputs, grad=None):
    out = fn()
    grads = torch.autograd.grad(out, inputs, grad)
    return out.detach(), grads


def median_us(step, seconds=0.5):
    for _ in range(3):
        step()
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e6


def max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b) if x.numel())


def main():
    torch.manual_seed(0)
    x = torch.randint(0, 27, (32, 3))
    C = torch.randn(27, 10, requires_grad=True)
    W = torch.randn(200, 30, requires_grad=True)
    b = torch.randn(200, requires_grad=True)
    y = torch.randint(0, 27, (32,))
    logits = torch.randn(32, 27, requires_grad=True)
    g_emb, g_h = torch.randn(32, 3, 10), torch.randn(32, 200)
    h_in = torch.randn(32, 30, requires_grad=True)

    checks = [
        ("embedding", lambda: ops.embedding(x, C), lambda: F.embedding(x, C), [C], g_emb),
        ("linear_tanh", lambda: ops.linear_tanh(h_in, W, b),
         lambda: torch.tanh(F.linear(h_in, W, b)), [h_in, W, b], g_h),
        ("cross_entropy", lambda: ops.cross_entropy(logits, y),
         lambda: F.cross_entropy(logits, y), [logits], None),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads\n")
    print("max |pymakemore - torch| at the makemore shapes (forward, then every gradient)")
    for name, ours, theirs, inputs, grad in checks:
        out_a, grads_a = fwd_bwd(ours, inputs, grad)
        out_b, grads_b = fwd_bwd(theirs, inputs, grad)
        print(f"  {name:14s} forward {max_diff([out_a], [out_b]):.2e}   "
              f"gradients {max_diff(grads_a, grads_b):.2e}")

    print("\nforward + backward, median us (torch / pymakemore above 1: fused is faster)")
    for op, case, sizes in cases.CASES:
        if "50304" in case:  # the largest ones belong to `make bench`
            continue
        steps = cases.make(op, sizes)
        ours, theirs = median_us(steps["pymakemore"]), median_us(steps["torch"])
        print(f"  {op:14s} {case:26s} {ours:10.1f} {theirs:10.1f}   {theirs / ours:5.2f}x")


if __name__ == "__main__":
    main()
