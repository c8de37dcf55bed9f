"""Benchmark cases: forward + backward of each fused op and of the PyTorch composite it
replaces, on the same inputs. Each case yields {impl: step}; a step runs fwd+bwd once."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pymakemore import ops

# (op, case name, sizes); the makemore shapes first, then the large ones
CASES = [
    ("embedding", "makemore 32x3 V=27 D=10", dict(n=32 * 3, rows=27, dim=10)),
    ("embedding", "262144x3 V=27 D=10", dict(n=262144 * 3, rows=27, dim=10)),
    ("embedding", "16384 V=50304 D=768", dict(n=16384, rows=50304, dim=768)),
    ("linear_tanh", "makemore 32x30->200", dict(n=32, k=30, h=200)),
    ("linear_tanh", "65536x30->200", dict(n=65536, k=30, h=200)),
    ("linear", "makemore 32x200->27", dict(n=32, k=200, h=27)),
    ("linear", "65536x200->27", dict(n=65536, k=200, h=27)),
    ("cross_entropy", "makemore 32x27", dict(n=32, c=27)),
    ("cross_entropy", "65536x27", dict(n=65536, c=27)),
    ("cross_entropy", "4096x50304", dict(n=4096, c=50304)),
]


def _grad_step(fn, inputs, grad_out=None):
    """fwd + bwd; torch.autograd.grad so no .grad accumulation is timed."""
    def step():
        out = fn()
        return torch.autograd.grad(out, inputs, grad_out)
    return step


def make(op: str, sizes: dict, device: str = "cpu", dtype=torch.float32):
    g = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype).to(device)

    if op == "embedding":
        idx = torch.randint(0, sizes["rows"], (sizes["n"],), generator=g).to(device)
        w = randn(sizes["rows"], sizes["dim"]).requires_grad_()
        grad = randn(sizes["n"], sizes["dim"])
        return {
            "pymakemore": _grad_step(lambda: ops.embedding(idx, w), [w], grad),
            "torch": _grad_step(lambda: F.embedding(idx, w), [w], grad),
        }
    if op in ("linear_tanh", "linear"):
        x = randn(sizes["n"], sizes["k"]).requires_grad_()
        w = (randn(sizes["h"], sizes["k"]) / sizes["k"] ** 0.5).requires_grad_()
        b = randn(sizes["h"]).requires_grad_()
        grad = randn(sizes["n"], sizes["h"])
        if op == "linear":
            fused, composite = ops.linear, F.linear
        else:
            fused, composite = ops.linear_tanh, lambda *a: torch.tanh(F.linear(*a))
        return {
            "pymakemore": _grad_step(lambda: fused(x, w, b), [x, w, b], grad),
            "torch": _grad_step(lambda: composite(x, w, b), [x, w, b], grad),
        }
    if op == "cross_entropy":
        x = randn(sizes["n"], sizes["c"]).requires_grad_()
        t = torch.randint(0, sizes["c"], (sizes["n"],), generator=g).to(device)
        return {
            "pymakemore": _grad_step(lambda: ops.cross_entropy(x, t), [x]),
            "torch": _grad_step(lambda: F.cross_entropy(x, t), [x]),
        }
    raise ValueError(f"unknown op {op!r}")
