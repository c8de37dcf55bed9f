"""Steps per second of the makemore MLP (the lecture's config) on one machine, in one process:
the lecture's plain-PyTorch loop, the trainer with --ops torch, with --ops fused, with
--engine fused, and on CUDA the lecture loop in a CUDA graph and --engine graph.

    .venv/bin/python bench/train_bench.py [--steps 20000] [--device cpu]
"""
import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import cases  # noqa: E402
from pymakemore import engines  # noqa: E402
from pymakemore.config import DEFAULTS  # noqa: E402
from pymakemore.data import load_splits  # noqa: E402
from pymakemore.devices import resolve_device  # noqa: E402
from pymakemore.engines import SGD, run_steps  # noqa: E402
from pymakemore.models import build_model  # noqa: E402
from pymakemore.models.layers import LECTURE_SEED  # noqa: E402


def lecture_loop(x, y, steps, device):
    """The makemore part-2 notebook's training step, as written there (tensor ops + F.*)."""
    g = torch.Generator().manual_seed(LECTURE_SEED)
    params = [torch.randn(s, generator=g).to(device)
              for s in ((27, 10), (30, 200), (200,), (200, 27), (27,))]
    for p in params:
        p.requires_grad = True
    C, W1, b1, W2, b2 = params
    gen = torch.Generator(device=device).manual_seed(1)
    for _ in range(steps):
        ix = torch.randint(0, x.shape[0], (32,), device=device, generator=gen)
        emb = C[x[ix]]
        h = torch.tanh(emb.view(-1, 30) @ W1 + b1)
        logits = h @ W2 + b2
        loss = F.cross_entropy(logits, y[ix])
        for p in params:
            p.grad = None
        loss.backward()
        for p in params:
            p.data += -0.1 * p.grad
    return loss


def graphed_lecture_loop(x, y, device):
    """The lecture's step captured once in a CUDA graph (the minibatch drawn inside it), then
    replayed: PyTorch's own way to remove launch overhead, the GPU baseline to beat."""
    g = torch.Generator().manual_seed(LECTURE_SEED)
    params = [torch.randn(s, generator=g).to(device).requires_grad_()
              for s in ((27, 10), (30, 200), (200,), (200, 27), (27,))]
    C, W1, b1, W2, b2 = params
    loss_out = torch.zeros((), device=device)

    def step():
        ix = torch.randint(0, x.shape[0], (32,), device=device)
        emb = C[x[ix]]
        h = torch.tanh(emb.view(-1, 30) @ W1 + b1)
        loss = F.cross_entropy(h @ W2 + b2, y[ix])
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, gr in zip(params, grads):
                p.sub_(0.1 * gr)
            loss_out.copy_(loss)

    replay = cases.cuda_graphed(step)

    def run(steps):
        for _ in range(steps):
            replay()
        return loss_out
    return run


def timed(fn, steps, device):
    fn(max(steps // 10, 100))  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn(steps)
    out.sum().item()  # one host read at the end
    return (time.perf_counter() - start) / steps * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("-i", "--input-file", default=str(Path(__file__).resolve().parents[2] /
                                                      "shared" / "data" / "names.txt"))
    args = ap.parse_args()
    device = resolve_device(args.device, "torch")
    splits = load_splits(args.input_file, 3).to(device)
    x, y = splits.tensors["train"]
    results = {"lecture loop (plain PyTorch)": timed(lambda n: lecture_loop(x, y, n, device),
                                                     args.steps, device)}
    if device.type == "cuda":
        results["lecture loop in a CUDA graph"] = timed(graphed_lecture_loop(x, y, device),
                                                        args.steps, device)
    for ops in ("torch", "fused"):
        config = {**DEFAULTS, "ops": ops}
        model = build_model(config, splits.vocab.size).to(device)
        opt = SGD(model.parameters(), lr=0.1)
        gen = torch.Generator(device=device).manual_seed(1)
        results[f"trainer --ops {ops}"] = timed(
            lambda n, model=model, opt=opt, gen=gen: run_steps(model, opt, x, y, 32, gen, n),
            args.steps, device)
    if device.type == "cuda":
        for ops in ("torch", "fused"):
            model = build_model({**DEFAULTS, "ops": ops}, splits.vocab.size).to(device)
            graphed = engines.GraphedSteps(model, x, y, 32,
                                           torch.Generator(device=device).manual_seed(1))
            results[f"trainer --engine graph --ops {ops}"] = timed(
                lambda n, graphed=graphed: graphed.run(n, 0.1), args.steps, device)
    if device.type == "cpu" or engines.has_cuda_kernels():
        model = build_model({**DEFAULTS, "ops": "fused"}, splits.vocab.size).to(device)
        results["trainer --engine fused"] = timed(
            lambda n: engines.fused_steps(model, x, y, torch.full((n,), 0.1), 32, 0, 1),
            args.steps, device)
    base = results["lecture loop (plain PyTorch)"]
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, "
          f"{args.steps} steps each")
    print("| path | us/step | speed-up vs lecture loop |")
    print("|---|---:|---:|")
    for name, us in results.items():
        print(f"| {name} | {us:.1f} | {base / us:.2f}x |")


if __name__ == "__main__":
    main()
