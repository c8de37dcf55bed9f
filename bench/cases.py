"""Benchmark cases: forward + backward of each fused op and of the PyTorch composite it
replaces, on the same inputs. make() returns {impl: step}; a step runs fwd+bwd once."""
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


def _tanh_linear(x, w, b):
    return torch.tanh(F.linear(x, w, b))


COMPOSITES = {"embedding": F.embedding, "linear_tanh": _tanh_linear, "linear": F.linear,
              "cross_entropy": F.cross_entropy}


def inputs(op: str, sizes: dict, device: str = "cpu", dtype=torch.float32):
    """(args, differentiable args, grad of the output or None) for one case."""
    g = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float32).to(device, dtype)

    if op == "embedding":
        idx = torch.randint(0, sizes["rows"], (sizes["n"],), generator=g).to(device)
        w = randn(sizes["rows"], sizes["dim"]).requires_grad_()
        return (idx, w), [w], randn(sizes["n"], sizes["dim"])
    if op in ("linear_tanh", "linear"):
        x = randn(sizes["n"], sizes["k"]).requires_grad_()
        w = (randn(sizes["h"], sizes["k"]) / sizes["k"] ** 0.5).detach().requires_grad_()
        b = randn(sizes["h"]).requires_grad_()
        return (x, w, b), [x, w, b], randn(sizes["n"], sizes["h"])
    if op == "cross_entropy":
        x = randn(sizes["n"], sizes["c"]).requires_grad_()
        t = torch.randint(0, sizes["c"], (sizes["n"],), generator=g).to(device)
        return (x, t), [x], None
    raise ValueError(f"unknown op {op!r}")


def make(op: str, sizes: dict, device: str = "cpu", dtype=torch.float32,
         compiled: bool = False) -> dict:
    args, leaves, grad = inputs(op, sizes, device, dtype)
    fns = {"pymakemore": getattr(ops, op), "torch": COMPOSITES[op]}
    if compiled:
        fns["torch.compile"] = torch.compile(COMPOSITES[op])

    def step_of(fn):
        def step():  # autograd.grad: no .grad accumulation is timed
            return torch.autograd.grad(fn(*args), leaves, grad)
        return step

    return {name: step_of(fn) for name, fn in fns.items()}


def cuda_graphed(step):
    """step captured in a CUDA graph after a warm-up on a side stream (as CUDA graphs require);
    returns the graph's replay, which is the step."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay
