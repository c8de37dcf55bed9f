"""The GPT's training step with its head and loss as one ops.linear_cross_entropy (what
--ops fused runs) and as the head's logits then ops.cross_entropy: time of forward + backward
and the step's peak memory, each measured in a fresh process (CPU: growth of the peak resident
set; CUDA: torch.cuda.max_memory_allocated).

    .venv/bin/python bench/gpt_head_bench.py [--preset gpt-shakespeare-small] [--vocab 65]
                                             [--device cpu] [--repeat 3]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_figures import in_fresh_process  # noqa: E402

SETUP = """
import torch
from pymakemore.config import DEFAULTS, PRESETS
from pymakemore.models import build_model
preset, vocab, device, fused_head = {args!r}
config = {{**DEFAULTS, **PRESETS[preset]}}
torch.manual_seed(0)  # dropout: the same masks for both
model = build_model(config, vocab).to(device)
model.fused_head = fused_head
g = torch.Generator(device=device).manual_seed(0)
shape = (config["batch_size"], config["block_size"])
x = torch.randint(0, vocab, shape, device=device, generator=g)
y = torch.randint(0, vocab, shape, device=device, generator=g)

def step():
    model.zero_grad(set_to_none=True)
    _, loss = model(x, y)
    loss.backward()
    return loss
"""


def measure(preset, vocab, device, fused_head, repeat):
    return in_fresh_process(SETUP.format(args=(preset, vocab, device, fused_head)), device,
                            repeat, preset)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="gpt-shakespeare-small")
    p.add_argument("--vocab", type=int, default=65, help="65: tinyshakespeare's characters")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    rows = {name: measure(a.preset, a.vocab, a.device, fused, a.repeat)
            for name, fused in (("head + ops.cross_entropy", False),
                                ("ops.linear_cross_entropy", True))}
    print(f"{a.preset}, vocabulary {a.vocab}, on {a.device}: one training step (forward + "
          f"backward), median of {a.repeat}")
    print("| head and loss | seconds | peak memory of the step | loss |")
    print("|---|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['seconds']:.4f} | {r['peak_bytes'] / 2**20:,.1f} MiB | "
              f"{r['loss']:.5f} |")


if __name__ == "__main__":
    main()
