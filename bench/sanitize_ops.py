"""Every op, forward and backward, on small CUDA tensors of every dtype: the workload that
compute-sanitizer (memcheck, racecheck) watches in bench/gpu_check.sh."""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pymakemore import ops  # noqa: E402


def main():
    dev = "cuda"
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        for index_dtype in (torch.int64, torch.int32):
            idx = torch.randint(0, 27, (7, 3), device=dev, dtype=index_dtype)
            w = torch.randn(27, 10, device=dev, dtype=dtype, requires_grad=True)
            ops.embedding(idx, w, padding_idx=2, scale_grad_by_freq=True).sum().backward()
            big = torch.randn(300, 33, device=dev, dtype=dtype, requires_grad=True)
            ops.embedding(torch.randint(0, 300, (1000,), device=dev, dtype=index_dtype),
                          big).sum().backward()
            x = torch.randn(37, 30, device=dev, dtype=dtype, requires_grad=True)
            W = torch.randn(70, 30, device=dev, dtype=dtype, requires_grad=True)
            b = torch.randn(70, device=dev, dtype=dtype, requires_grad=True)
            ops.linear_tanh(x, W, b).sum().backward()
            ops.linear(x, W).sum().backward()
            for c in (27, 3000):
                logits = torch.randn(19, c, device=dev, dtype=dtype, requires_grad=True)
                t = torch.randint(0, c, (19,), device=dev, dtype=index_dtype)
                t[3] = -100
                cw = torch.rand(c, device=dev, dtype=dtype)
                for reduction in ("mean", "sum", "none"):
                    loss = ops.cross_entropy(logits, t, weight=cw, reduction=reduction,
                                             label_smoothing=0.1)
                    # mean, sum: the forward's gradient, scaled on the device; then the
                    # retained graph again, through the backward op
                    (loss.sum() * 0.5).backward(retain_graph=True)
                    loss.sum().backward()
                F.cross_entropy(logits.float(), t.long())  # a torch op beside ours
            # the head and loss without logits: every reduction, softcap and z-loss, twice
            # (the retained graph's second backward recomputes the chunks)
            t = torch.randint(0, 70, (37,), device=dev, dtype=index_dtype)
            t[5] = -100
            for reduction in ("mean", "none"):
                loss = ops.linear_cross_entropy(x, W, t, b, reduction=reduction,
                                                label_smoothing=0.1, softcap=3.0, z_loss=1e-3)
                loss.sum().backward(retain_graph=True)
                loss.sum().backward()
    from pymakemore import engines
    from pymakemore.models import MLP
    x = torch.randint(0, 27, (300, 3), device=dev)
    y = torch.randint(0, 27, (300,), device=dev)
    engines.fused_steps(MLP(27).to(dev), x, y, torch.full((20,), 0.1), 32, 0, 1)
    torch.cuda.synchronize()
    print("all ops ran")


if __name__ == "__main__":
    main()
