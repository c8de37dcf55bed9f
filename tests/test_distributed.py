"""Data-parallel training under torchrun (gloo, 2 CPU processes) against one process."""
import json
import os
import subprocess
import textwrap
import time

import torch

from conftest import ROOT, names_path
from pymakemore import distributed, train
from pymakemore.checkpoint import load_checkpoint

COMMON = ["--device", "cpu", "--quiet", "--num-samples", "0", "--log-every", "10",
          "--eval-every", "20", "--init", "kaiming", "--engine", "ops"]


def torchrun(*args, processes=2, target=("-m", "pymakemore.train"), timeout=240):
    cmd = [*distributed.local_launcher(processes), *target, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_two_processes_follow_one_process_step_by_step(tmp_path):
    args = ["-i", names_path(), *COMMON, "--max-steps", 40]
    assert train.main([*map(str, args), "-o", str(tmp_path / "one")]) == 0
    proc = torchrun(*args, "-o", tmp_path / "two")
    assert proc.returncode == 0, proc.stderr
    one, two = load_checkpoint(tmp_path / "one"), load_checkpoint(tmp_path / "two")
    assert len(two["losses"]) == 40
    torch.testing.assert_close(two["losses"], one["losses"], rtol=1e-5, atol=1e-5)
    for name, p in one["model"].items():
        torch.testing.assert_close(two["model"][name], p, rtol=1e-5, atol=1e-5, msg=name)
    # one set of outputs: each metrics line once, one summary, no stray files
    files = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert files == [".lock", "embedding.png", "loss.png", "metrics.jsonl", "model.pt",
                     "summary.json"]
    lines = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [10, 20, 30, 40]
    assert [r["step"] for r in lines if "dev_loss" in r] == [20, 40]
    summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    summary2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert abs(summary["dev_loss"] - summary2["dev_loss"]) < 1e-5  # evaluation reduced over ranks
    assert proc.stderr.count("2 processes (DDP)") == 1 and proc.stdout.count("train ") == 1


def test_resume_under_two_processes_continues_the_run(tmp_path):
    args = ["-i", names_path(), *COMMON, "--type", "gpt", "--n-layer", "1", "--n-embd", "16",
            "--n-head", "2", "--batch-size", "8", "--dropout", "0"]
    # one process, same global batch (no BatchNorm, no dropout: ranks and one process agree)
    assert train.main([*map(str, args), "--max-steps", "40", "-o", str(tmp_path / "straight")]) \
        == 0
    first = torchrun(*args, "--max-steps", 20, "-o", tmp_path / "split")
    assert first.returncode == 0, first.stderr
    resumed = torchrun("--resume", "--max-steps", 40, "--quiet", "-o", tmp_path / "split")
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "split")
    assert a["step"] == b["step"] == 40
    torch.testing.assert_close(b["losses"], a["losses"], rtol=1e-5, atol=1e-5)
    for name, p in a["model"].items():
        torch.testing.assert_close(b["model"][name], p, rtol=1e-5, atol=1e-5, msg=name)


def test_a_stalled_rank_ends_the_job_with_a_clear_error(tmp_path):
    script = tmp_path / "stall.py"
    script.write_text(textwrap.dedent("""
        import os, sys, time
        from pymakemore import engines, train
        if os.environ["RANK"] == "1":  # this rank stops taking part after its first steps
            steps = engines.run_steps
            def stall(*args, **kwargs):
                if kwargs.get("first_step", 0) >= 10:
                    time.sleep(600)
                return steps(*args, **kwargs)
            engines.run_steps = stall
        sys.exit(train.main(sys.argv[1:]))
    """))
    started = time.monotonic()
    proc = torchrun("-i", names_path(), *COMMON, "--max-steps", 40, "--ddp-timeout", 5,
                    "-o", tmp_path / "out", target=(str(script),))
    assert proc.returncode != 0
    assert time.monotonic() - started < 120
    assert "pymakemore.train: error: rank 0 of 2" in proc.stderr, proc.stderr[-3000:]


def test_options_that_need_one_process_are_refused(tmp_path):
    proc = torchrun("-i", names_path(), *COMMON, "--batch-size", 33, "-o", tmp_path / "x")
    assert proc.returncode != 0
    assert "must split evenly over the 2 processes" in proc.stderr
    assert proc.stderr.count("pymakemore.train: error:") == 1  # said once, by rank 0


def test_a_recurrent_model_under_two_processes_follows_one_process(tmp_path):
    # words of unequal lengths (padded targets): each rank's mean weighed by its share
    args = ["-i", names_path(), *COMMON, "--type", "gru", "--n-embd", "8", "--n-embd2", "8",
            "--batch-size", "8", "--max-steps", "20"]
    assert train.main([*map(str, args), "-o", str(tmp_path / "one")]) == 0
    proc = torchrun(*args, "-o", tmp_path / "two")
    assert proc.returncode == 0, proc.stderr
    one, two = load_checkpoint(tmp_path / "one"), load_checkpoint(tmp_path / "two")
    torch.testing.assert_close(two["losses"], one["losses"], rtol=1e-5, atol=1e-5)
    for name, p in one["model"].items():
        torch.testing.assert_close(two["model"][name], p, rtol=1e-5, atol=1e-5, msg=name)
