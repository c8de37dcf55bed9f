"""ops.linear_cross_entropy against the unfused composite F.cross_entropy(F.linear(...)) (and,
on CUDA, torch.compile of the composite): time of forward + backward and the peak memory of
the loss, each measured in a fresh process (CPU: growth of the peak resident set; CUDA:
torch.cuda.max_memory_allocated above the inputs).

    .venv/bin/python bench/lce_bench.py [--device cpu] [--n 4096] [--d 768] [--v 50304]
                                        [--dtype float32] [--repeat 3]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_figures import in_fresh_process  # noqa: E402

SETUP = """
import torch, torch.nn.functional as F
from pymakemore import ops
kind, device, n, d, v, dtype = {args!r}
dtype = getattr(torch, dtype)
g = torch.Generator(device=device).manual_seed(0)
x = torch.randn(n, d, device=device, dtype=dtype, generator=g).requires_grad_()
w = (torch.randn(v, d, device=device, dtype=dtype, generator=g) * 0.02).requires_grad_()
t = torch.randint(0, v, (n,), device=device, generator=g)

def composite(x, w, t):
    return F.cross_entropy(F.linear(x, w), t)

fn = {{"fused": ops.linear_cross_entropy, "composite": composite,
       "compiled": torch.compile(composite)}}[kind]

def step():
    x.grad = w.grad = None
    loss = fn(x, w, t)
    loss.backward()
    return loss

def warm_up():  # the libraries, on a 64 x 64 problem: not the full weight's gradient
    xs, ws = x[:64].detach().requires_grad_(), w[:64].detach().requires_grad_()
    fn(xs, ws, t[:64] % 64).backward()
"""


def measure(kind, device, n, d, v, dtype, repeat):
    return in_fresh_process(SETUP.format(args=(kind, device, n, d, v, dtype)), device, repeat,
                            kind)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--v", type=int, default=50304)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    kinds = ["composite", "fused"] + (["compiled"] if a.device == "cuda" else [])
    found = {k: measure(k, a.device, a.n, a.d, a.v, a.dtype, a.repeat) for k in kinds}
    print(f"N={a.n} D={a.d} V={a.v} {a.dtype} on {a.device}, forward + backward, median of "
          f"{a.repeat}")
    print("| path | seconds | peak memory of the loss | loss |")
    print("|---|---:|---:|---:|")
    for k, r in found.items():
        print(f"| {k} | {r['seconds']:.3f} | {r['peak_bytes'] / 2**20:,.0f} MiB | "
              f"{r['loss']:.5f} |")
    c, f = found["composite"], found["fused"]
    print(f"fused: {c['seconds'] / f['seconds']:.2f}x the composite's speed, "
          f"{f['peak_bytes'] / max(c['peak_bytes'], 1):.3f} of its peak memory")


if __name__ == "__main__":
    main()
