"""makemore.py against pymakemore, type by type: the same split (makemore.py's: test = the last
min(1000, 10%) words of torch.randperm after torch.manual_seed(seed)), sizes, optimizer (AdamW
5e-4, weight decay 0.01, betas (0.9, 0.99), eps 1e-8), batch 32 and number of steps, on the
CPU. makemore.py runs as itself (a subprocess); its saved model is then scored beside
pymakemore's by one function: the mean loss per predicted character over its test words.

makemore.py is not part of this repository: fetch it (karpathy/makemore) and give its path.

    .venv/bin/python bench/makemore_py_fidelity.py --makemore /path/to/makemore.py \\
        -i names.txt [--steps 5000] [--types rnn gru bow]
"""
import argparse
import importlib.util
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pymakemore import data  # noqa: E402
from pymakemore.engines import make_optimizer, run_steps  # noqa: E402
from pymakemore.models import MODELS  # noqa: E402


def makemore_split(path: Path, seed: int):
    """makemore.py's create_datasets: (train words, test words, chars, longest word)."""
    words = [w.strip() for w in path.read_text().splitlines()]
    words = [w for w in words if w]
    chars = sorted(set("".join(words)))
    torch.manual_seed(seed)  # as makemore.py, just before its randperm
    test_size = min(1000, int(len(words) * 0.1))
    rp = torch.randperm(len(words)).tolist()
    return ([words[i] for i in rp[:-test_size]], [words[i] for i in rp[-test_size:]], chars,
            max(len(w) for w in words))


def encode(words, chars, longest):
    """makemore.py's CharDataset rows, which are pymakemore's word sequences: x = '.' + word
    padded with 0, y = word + '.' then -1."""
    return data.sequences(words, data.Vocab("".join(chars)), longest + 1)


@torch.no_grad()
def test_loss(model, x, y) -> float:
    """Mean cross entropy per predicted character (padding excluded), whole test set."""
    model.eval()
    logits, _ = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1),
                           ignore_index=-1).item()


def run_makemore(script: Path, data: Path, kind: str, steps: int, seed: int, work: Path):
    """makemore.py itself for `steps` steps (it evaluates, and saves its model when its test
    estimate improves, at every 500th step); (its model, the step it saved it at, its median
    step time in s)."""
    out = subprocess.run([sys.executable, str(script), "-i", str(data), "-o", str(work),
                          "--type", kind, "--max-steps", str(steps), "--num-workers", "0",
                          "--device", "cpu", "--seed", str(seed)],
                         capture_output=True, text=True, check=True).stdout
    step_ms = [float(m) for m in re.findall(r"step time ([0-9.]+)ms", out)]
    evaluated = re.findall(
        r"step (\d+) train loss: \S+ test loss: \S+\n(test loss \S+ is the best)?", out)
    saved_at = max(int(s) for s, best in evaluated if best)
    spec = importlib.util.spec_from_file_location("makemore_py", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    train_words, _, chars, longest = makemore_split(data, seed)
    config = module.ModelConfig(vocab_size=len(chars) + 1, block_size=longest + 1,
                                n_layer=4, n_head=4, n_embd=64, n_embd2=64)
    model = module.BoW(config) if kind == "bow" else module.RNN(config, cell_type=kind)
    # its best checkpoint by its own test estimate (every 500 steps); the last one when the
    # test loss only falls
    model.load_state_dict(torch.load(work / "model.pt"))
    return model, saved_at, statistics.median(step_ms[1:]) / 1000


def run_pymakemore(data: Path, kind: str, steps: int, seed: int):
    """pymakemore's model and ops engine loop on the same split; (model, seconds a step)."""
    train_words, _, chars, longest = makemore_split(data, seed)
    x, y = encode(train_words, chars, longest)
    model = MODELS[kind](len(chars) + 1, block_size=longest + 1, n_embd=64, n_embd2=64,
                         seed=seed)
    optimizer = make_optimizer(dict(optimizer="adamw", lr=5e-4, weight_decay=0.01, beta2=0.99),
                               model)
    gen = torch.Generator().manual_seed(seed + 1)
    start = time.perf_counter()
    run_steps(model, optimizer, x, y, 32, gen, steps).sum().item()
    return model, (time.perf_counter() - start) / steps


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--makemore", type=Path, required=True, help="path of makemore.py")
    p.add_argument("-i", "--input-file", type=Path, required=True)
    p.add_argument("--steps", type=int, default=5001, help="makemore.py evaluates at every "
                   "500th step before it stops: 5001 steps end on an evaluation")
    p.add_argument("--seed", type=int, default=3407)
    p.add_argument("--types", nargs="+", default=["rnn", "gru", "bow"])
    a = p.parse_args()
    torch.set_num_threads(2)
    _, test_words, chars, longest = makemore_split(a.input_file, a.seed)
    xt, yt = encode(test_words, chars, longest)
    print(f"{a.steps} steps, batch 32, AdamW 5e-4, n_embd = n_embd2 = 64, test = "
          f"{len(test_words)} words (makemore.py's split, seed {a.seed}); torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    print("| type | makemore.py test loss (its model saved at step) | pymakemore test loss | "
          "difference | makemore.py steps/s | pymakemore steps/s | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in a.types:
            theirs, saved_at, their_step = run_makemore(a.makemore, a.input_file, kind,
                                                        a.steps, a.seed, Path(tmp) / kind)
            ours, our_step = run_pymakemore(a.input_file, kind, a.steps, a.seed)
            lt, lo = test_loss(theirs, xt, yt), test_loss(ours, xt, yt)
            print(f"| {kind} | {lt:.4f} ({saved_at}) | {lo:.4f} | {lo - lt:+.4f} | "
                  f"{1 / their_step:.0f} | "
                  f"{1 / our_step:.0f} | {their_step / our_step:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
