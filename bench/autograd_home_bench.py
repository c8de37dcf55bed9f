"""Where should the ops' autograd live? The cost of one forward + backward at makemore's
shapes with the autograd in C++ (each op's Function in its slice, csrc/torch/<op>.cpp)
against the same op with its autograd in Python (torch.library.register_autograd), same
process, alternated.

The Python twin of each op is a probe op (`pmprobe::<name>`) whose CPU kernel calls the
pymakemore op below autograd and whose autograd is registered in Python, calling the same
pymakemore backward op. The probe's own kernel hop (measured without autograd and subtracted)
is not part of what a move would cost.

    .venv/bin/python bench/autograd_home_bench.py [--calls 2000] [--repeat 7]
"""
import argparse
import statistics
import time

import torch

import pymakemore.ops  # noqa: F401  (loads the extension and its fakes)

pm = torch.ops.pymakemore
LIB = torch.library.Library("pmprobe", "DEF")


def _below_autograd(op):
    def kernel(*args):
        with torch._C._AutoDispatchBelowAutograd():
            return op(*args)
    return kernel


def _probe(name, schema, op, setup_context, backward):
    LIB.define(schema)
    LIB.impl(name, _below_autograd(op), "CPU")
    torch.library.register_autograd(f"pmprobe::{name}", backward, setup_context=setup_context)
    return getattr(torch.ops.pmprobe, name).default


def _embedding_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.num_weights = inputs[1].shape[0]


def _embedding_backward(ctx, grad):
    (index,) = ctx.saved_tensors
    return None, pm.embedding_backward(grad, index, ctx.num_weights, -1, False)


def _linear_tanh_setup(ctx, inputs, output):
    ctx.save_for_backward(output, inputs[0], inputs[1])


def _linear_tanh_backward(ctx, grad):
    out, x, w = ctx.saved_tensors
    gx, gw, gb = pm.linear_tanh_backward(grad, out, x, w, list(ctx.needs_input_grad))
    return gx, gw, gb


def _cross_entropy_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], inputs[1], output[1])


def _cross_entropy_backward(ctx, grad, _lse_grad):
    x, t, lse = ctx.saved_tensors
    return pm.cross_entropy_backward(grad, x, t, None, lse, "mean", -100, 0.0), None


def cases():
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 27, (32, 3), generator=g)
    table = torch.randn(27, 10, generator=g, requires_grad=True)
    x = torch.randn(32, 30, generator=g, requires_grad=True)
    w = torch.randn(200, 30, generator=g, requires_grad=True)
    b = torch.randn(200, generator=g, requires_grad=True)
    logits = torch.randn(32, 27, generator=g, requires_grad=True)
    t = torch.randint(0, 27, (32,), generator=g)
    emb_probe = _probe("embedding", "embedding(Tensor input, Tensor weight) -> Tensor",
                       lambda i, wt: pm.embedding(i, wt, -1, False),
                       _embedding_setup, _embedding_backward)
    lt_probe = _probe("linear_tanh",
                      "linear_tanh(Tensor input, Tensor weight, Tensor? bias) -> Tensor",
                      pm.linear_tanh.default, _linear_tanh_setup, _linear_tanh_backward)
    ce_probe = _probe("cross_entropy", "cross_entropy(Tensor input, Tensor target) "
                      "-> (Tensor, Tensor)",
                      lambda z, tt: pm.cross_entropy(z, tt, None, "mean", -100, 0.0),
                      _cross_entropy_setup, _cross_entropy_backward)
    # (name, C++ autograd call, Python autograd call, the probe's kernel hop without autograd)
    return [
        ("embedding (32, 3) in 27 x 10",
         lambda: pm.embedding(idx, table, -1, False),
         lambda: emb_probe(idx, table),
         (lambda: pm.embedding(idx, table, -1, False), lambda: emb_probe(idx, table))),
        ("linear_tanh (32, 30) -> 200",
         lambda: pm.linear_tanh(x, w, b),
         lambda: lt_probe(x, w, b),
         (lambda: pm.linear_tanh(x, w, b), lambda: lt_probe(x, w, b))),
        ("cross_entropy (32, 27)",
         lambda: pm.cross_entropy(logits, t, None, "mean", -100, 0.0)[0],
         lambda: ce_probe(logits, t)[0],
         (lambda: pm.cross_entropy(logits, t, None, "mean", -100, 0.0)[0],
          lambda: ce_probe(logits, t)[0])),
    ]


def per_call_us(fn, calls, backward=True):
    start = time.perf_counter()
    for _ in range(calls):
        out = fn()
        if backward:
            out.sum().backward()
    return (time.perf_counter() - start) / calls * 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=7)
    a = p.parse_args()
    torch.set_num_threads(1)  # (both paths alike; the overhead is what differs)
    print(f"forward + backward per call, us, median of {a.repeat} x {a.calls} calls "
          f"(alternated), 1 thread")
    print("| op | C++ autograd | Python autograd | probe hop (no grad) | Python - C++ - hop |")
    print("|---|---:|---:|---:|---:|")
    for name, cpp, python, (plain, probe) in cases():
        for fn in (cpp, python):
            per_call_us(fn, 200)  # warm up
        times = {"cpp": [], "python": [], "plain": [], "probe": []}
        for _ in range(a.repeat):
            times["cpp"].append(per_call_us(cpp, a.calls))
            times["python"].append(per_call_us(python, a.calls))
            with torch.no_grad():
                times["plain"].append(per_call_us(plain, a.calls, backward=False))
                times["probe"].append(per_call_us(probe, a.calls, backward=False))
        m = {k: statistics.median(v) for k, v in times.items()}
        hop = m["probe"] - m["plain"]
        print(f"| {name} | {m['cpp']:.1f} | {m['python']:.1f} | {hop:.1f} | "
              f"{m['python'] - m['cpp'] - hop:.1f} |")


if __name__ == "__main__":
    main()
