"""Faults a run must survive with nothing lost and one clear line: a crash between
checkpoints, a full disk, SIGTERM, two runs into one work dir, broken or absurd checkpoints."""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, names_path
from pymakemore import checkpoint, sample, train
from pymakemore.checkpoint import load_checkpoint
from pymakemore.workdir import RunLock

FAST = ["--device", "cpu", "--quiet", "--num-samples", "0", "--log-every", "50",
        "--init", "kaiming"]
TIMING = ("steps_per_s", "elapsed_s")


def _train(work, *args):
    return train.main([*FAST, "-i", str(names_path()), "-o", str(work), *map(str, args)])


def _records(work):
    lines = (work / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def test_resumed_metrics_read_as_one_run(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ["--eval-every", 100, "--lr-decay-at", 150]
    assert _train(straight, "--max-steps", 400, *common) == 0
    assert _train(split, "--max-steps", 200, *common) == 0
    # what a run killed after its checkpoint at 200 would have logged past it, the last
    # line cut short by the kill
    with open(split / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 250, "loss": 9.0}) + "\n")
        f.write(json.dumps({"step": 300, "train_loss": 9.0, "dev_loss": 9.0}) + "\n")
        f.write('{"step": 35')
    assert train.main([*FAST, "-o", str(split), "--resume", "--max-steps", "400"]) == 0
    assert _records(split) == _records(straight)
    steps = [r["step"] for r in _records(split)]
    assert steps == sorted(steps)


def test_a_full_disk_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    work = tmp_path / "w"
    real_save = torch.save
    calls = []

    def save_until_the_disk_fills(obj, f):
        calls.append(1)
        if len(calls) == 1:
            return real_save(obj, f)
        f.write(b"PK\x03\x04 half a zip file")  # what torch's writer leaves on a full disk
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(checkpoint.torch, "save", save_until_the_disk_fills)
    monkeypatch.setattr(checkpoint.os, "statvfs", lambda path: os.statvfs_result(
        (4096, 4096, 1000, 0, 0, 100, 0, 0, 0, 255)))  # no block left
    assert _train(work, "--max-steps", 300, "--eval-every", 100) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"pymakemore.train: error: cannot write checkpoint {work / 'model.pt'}: "
                       f"no space left on device")
    assert load_checkpoint(work)["step"] == 100  # the previous one, intact
    assert not list(work.glob(".model.*"))  # the partial temp file removed


def test_an_unwritable_work_dir_fails_before_training(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    work = tmp_path / "ro"
    work.mkdir()
    work.chmod(0o500)
    try:
        assert _train(work, "--max-steps", 10) == 2
    finally:
        work.chmod(0o700)
    assert f"cannot write in {work}" in capsys.readouterr().err


def test_sigterm_checkpoints_the_current_step(tmp_path):
    work = tmp_path / "w"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pymakemore.train", *FAST, "--eval-every", "0",
         "-i", str(names_path()), "-o", str(work), "--max-steps", "200000"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()  # the run's first line: training starts
        assert "parameters" in first, first
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    step = load_checkpoint(work)["step"]
    assert 0 < step < 200000
    assert f"terminated: saved step {step}" in err
    assert len(err.strip().splitlines()) == 1  # that line alone: no traceback


def _interrupted_run(work, delay, sig, *args):
    """A run stopped by `sig` after `delay` seconds of training: (exit status, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pymakemore.train", *FAST, "-i", str(names_path()), "-o",
         str(work), *map(str, args)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()
        assert "parameters" in first, first
        time.sleep(delay)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, err


@pytest.mark.parametrize("engine, sig, delay", [("fused", signal.SIGTERM, 0.7),
                                                ("fused", signal.SIGINT, 1.3),
                                                ("ops", signal.SIGTERM, 1.1)])
def test_a_signal_checkpoints_one_consistent_step(tmp_path, engine, sig, delay):
    """The checkpoint written on a signal holds exactly what an uninterrupted run of the step
    it names holds (parameters, optimizer, RNG states, losses), and resuming from it goes on
    as that run does."""
    schedule = ["--engine", engine, "--eval-every", "0", "--lr-decay-at", "100000"]
    stopped = tmp_path / "stopped"
    status, err = _interrupted_run(stopped, delay, sig, "--max-steps", 200000, *schedule)
    assert status == (128 + signal.SIGTERM if sig == signal.SIGTERM else 130), err
    got = load_checkpoint(stopped)
    step = got["step"]
    assert 0 < step < 200000 and step % 50 == 0  # a block's end (blocks of --log-every)
    straight = tmp_path / "straight"
    assert _train(straight, "--max-steps", step, *schedule) == 0
    want = load_checkpoint(straight)
    torch.testing.assert_close(got["model"], want["model"], rtol=0, atol=0)
    for key in ("optimizer", "rng"):  # bit for bit, whatever the values' kinds
        assert checkpoint.payload_digest({key: got[key]}) == \
            checkpoint.payload_digest({key: want[key]}), key
    assert torch.equal(got["losses"], want["losses"])

    if engine == "fused" and sig == signal.SIGTERM:  # and it goes on as the straight run does
        assert train.main([*FAST, "-o", str(stopped), "--resume", "--max-steps",
                           str(step + 100)]) == 0
        assert _train(straight, "--max-steps", step + 100, *schedule) == 0
        resumed, straight_on = load_checkpoint(stopped), load_checkpoint(straight)
        torch.testing.assert_close(resumed["model"], straight_on["model"], rtol=0, atol=0)


def test_a_second_signal_stops_at_once_without_a_checkpoint(tmp_path, monkeypatch, capsys):
    work = tmp_path / "w"
    signals = []

    def steps_then_two_signals(*args, **kwargs):
        result = real_run_steps(*args, **kwargs)
        if not signals:  # inside the first block: two Ctrl-C, the second one stops at once
            signals.append(1)
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return result

    from pymakemore import engines
    real_run_steps = engines.run_steps
    monkeypatch.setattr(engines, "run_steps", steps_then_two_signals)
    assert _train(work, "--max-steps", 300, "--engine", "ops", "--eval-every", 0) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("interrupted at once: no checkpoint written"), err
    assert not (work / "model.pt").exists()


def test_two_runs_into_one_work_dir(tmp_path, capsys):
    work = tmp_path / "w"
    work.mkdir()
    with RunLock(work):  # a run in progress
        assert _train(work, "--max-steps", 10) == 2
        assert "another run" in capsys.readouterr().err
    # a lock file left by a killed run holds no lock
    (work / ".lock").write_text("12345\n")
    assert _train(work, "--max-steps", 10) == 0


@pytest.fixture
def saved(tmp_path):
    work = tmp_path / "w"
    assert _train(work, "--max-steps", 20, "--eval-every", 0) == 0
    return work, torch.load(work / "model.pt", weights_only=True)


def _refused(work, capsys, match):
    for run in (lambda: train.main([*FAST, "-o", str(work), "--resume", "--max-steps", "40"]),
                lambda: sample.main(["-o", str(work), "-n", "2"])):
        assert run() == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(match, err[0]), err


def test_truncated_checkpoint(saved, capsys):
    work, _ = saved
    data = (work / "model.pt").read_bytes()
    (work / "model.pt").write_bytes(data[:len(data) // 2])
    _refused(work, capsys, "is truncated or not a checkpoint")


def test_checkpoint_with_objects_is_refused(saved, capsys):
    work, ckpt = saved
    ckpt["extra"] = argparse.Namespace(a=1)  # an object weights_only does not load
    torch.save(checkpoint.seal(ckpt), work / "model.pt")
    _refused(work, capsys, "holds objects other than tensors and plain values: refused")


@pytest.mark.parametrize("change,match", [
    (lambda c: c.update(vocab="abca"), "distinct characters"),
    (lambda c: c.update(vocab="ab" * 5 * 10 ** 6), "its vocabulary has 10,000,000 characters"),
    (lambda c: c["config"].update(block_size=-3), "block_size is -3"),
    (lambda c: c["config"].update(n_hidden=10 ** 9), "n_hidden is 1000000000"),
    (lambda c: c["config"].update(n_hidden=100),
     r"W1 is \(200, 30\), the config makes it \(100, 30\)"),
    (lambda c: c["config"].update(type="gpt"),
     "options are invalid|checkpoint does not match its model config"),
    (lambda c: c["config"].update(type="lstm"), "unknown model type 'lstm'"),
    (lambda c: c.update(model={"C": torch.zeros(3)}), "checkpoint does not match"),
    (lambda c: c.pop("optimizer"), "lacks optimizer"),
    (lambda c: c.update(step=-1), "its step is -1"),
    (lambda c: c.update(config="mlp"), "config is not a mapping"),
])
def test_absurd_checkpoints_are_one_clear_line(saved, capsys, change, match):
    work, ckpt = saved
    change(ckpt)
    torch.save(checkpoint.seal(ckpt), work / "model.pt")  # as a crafted file would be
    _refused(work, capsys, match)


def test_a_flipped_byte_in_a_tensor_is_refused(saved, capsys):
    work, ckpt = saved
    data = bytearray((work / "model.pt").read_bytes())
    # a byte inside W1's data (a value no other field shares), flipped on disk
    w1 = ckpt["model"]["W1"].numpy().tobytes()
    at = bytes(data).find(w1[:64])
    assert at > 0
    data[at + 100] ^= 0x10
    (work / "model.pt").write_bytes(bytes(data))
    _refused(work, capsys, "is corrupt: its contents do not match their checksum")


def test_a_checkpoint_without_a_checksum_still_loads(saved):
    # (written before checksums were stored)
    work, ckpt = saved
    del ckpt[checkpoint.CHECKSUM]
    torch.save(ckpt, work / "model.pt")
    assert train.main([*FAST, "-o", str(work), "--resume", "--max-steps", "30"]) == 0


@pytest.mark.parametrize("key, value", [("work_dir", "ELSEWHERE"), ("lr_find", True),
                                        ("device", "tpu"), ("threads", 10 ** 9),
                                        ("num_samples", 10 ** 12), ("quiet", "x"),
                                        ("ddp_timeout", -1.0)])
def test_a_checkpoint_never_chooses_paths_or_modes(saved, key, value, tmp_path):
    """Paths and modes of a run are the command line's (or the defaults): a checkpoint's own
    values for them are ignored, so resuming from ./w writes into ./w."""
    work, ckpt = saved
    elsewhere = tmp_path / "elsewhere"
    ckpt["config"][key] = str(elsewhere) if value == "ELSEWHERE" else value
    torch.save(checkpoint.seal(ckpt), work / "model.pt")
    assert train.main([*FAST, "-o", str(work), "--resume", "--max-steps", "30"]) == 0
    assert load_checkpoint(work)["step"] == 30
    assert not elsewhere.exists()


@pytest.mark.parametrize("key, value, match", [
    ("optimizer", "x", "--optimizer is 'x'"),
    ("max_steps", 10 ** 12, "--max-steps must be"),
    ("batch_size", 10 ** 12, "--batch-size must be"),
    ("lr", "0.1", "--lr is '0.1'"),
    ("init", None, "--init is None"),
    ("hidden_bias", 1, "--hidden-bias is 1"),
])
def test_a_checkpoints_values_are_checked_as_the_command_lines(saved, capsys, key, value,
                                                               match):
    work, ckpt = saved
    ckpt["config"][key] = value
    torch.save(checkpoint.seal(ckpt), work / "model.pt")
    assert train.main([*FAST, "-o", str(work), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the checkpoint's options are invalid" in err[0] and match in err[0], err


def test_a_checkpoints_rng_state_is_checked(saved, capsys):
    work, ckpt = saved
    ckpt["rng"] = {}
    torch.save(checkpoint.seal(ckpt), work / "model.pt")
    _refused_resume = train.main([*FAST, "-o", str(work), "--resume", "--max-steps", "40"])
    assert _refused_resume == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rng" in err[0], err


def test_sigterm_before_training_is_one_line(tmp_path, monkeypatch, capsys):
    # a signal while the data loads: nothing to checkpoint yet, one line, status 143
    def terminated(*args, **kwargs):
        raise train.Terminated()

    monkeypatch.setattr(train, "load_splits", terminated)
    assert _train(tmp_path / "w", "--max-steps", 10) == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip() == "pymakemore.train: terminated"


def test_stale_temp_files_are_removed_when_a_run_starts(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    for name in (".model.abc123.tmp", ".metrics.def456.tmp"):  # what kill -9 mid-write leaves
        (work / name).write_bytes(b"half")
    (work / "notes.tmp").write_text("the user's own")
    assert _train(work, "--max-steps", 10) == 0
    assert not list(work.glob(".model.*.tmp")) and not list(work.glob(".metrics.*.tmp"))
    assert (work / "notes.tmp").exists()


def test_resume_at_the_final_step_writes_the_missing_outputs(tmp_path, capsys):
    work = tmp_path / "w"
    assert _train(work, "--max-steps", 60, "--eval-every", 0) == 0
    records = _records(work)
    # killed after the final checkpoint, before the outputs
    for name in ("summary.json", "loss.png"):
        (work / name).unlink()
    assert train.main([*FAST, "-o", str(work), "--resume"]) == 0
    assert (work / "summary.json").exists() and (work / "loss.png").exists()
    assert [r for r in _records(work) if "test_loss" in r] == \
        [r for r in records if "test_loss" in r]  # the final record once
    # with the outputs there, nothing to do: one line
    capsys.readouterr()
    assert train.main([*FAST, "-o", str(work), "--resume"]) == 2
    assert "its run has finished; give --max-steps above it" in capsys.readouterr().err


def test_a_full_disk_while_logging_names_the_file(tmp_path, monkeypatch, capsys):
    from pymakemore import workdir
    real_write = workdir.Metrics.write
    calls = []

    def write_until_full(self, record):
        calls.append(1)
        if len(calls) > 2:
            self.file.write = lambda text: (_ for _ in ()).throw(
                OSError(28, "No space left on device"))
        return real_write(self, record)

    monkeypatch.setattr(workdir.Metrics, "write", write_until_full)
    work = tmp_path / "w"
    assert _train(work, "--max-steps", 300, "--eval-every", 100) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"pymakemore.train: error: cannot write {work / 'metrics.jsonl'}: "
                       f"No space left on device"), err


def test_a_changed_dev_word_is_refused_on_resume(tmp_path, capsys):
    words = [w for w in names_path().read_text().split() if w][:2000]
    source = tmp_path / "words.txt"
    source.write_text("\n".join(words) + "\n")
    work = tmp_path / "w"
    assert train.main([*FAST, "-i", str(source), "-o", str(work), "--max-steps", "20"]) == 0
    from pymakemore.data import load_splits
    dev_word = load_splits(source, 3).words["dev"][0]
    source.write_text("\n".join(w if w != dev_word else w + "x" for w in words) + "\n")
    assert train.main([*FAST, "-i", str(source), "-o", str(work), "--resume", "--max-steps",
                       "40"]) == 2
    assert "not the one the checkpoint was trained on" in capsys.readouterr().err


@pytest.mark.parametrize("args, match", [
    (["--lr", "fast"], "argument --lr: invalid float value: 'fast' (see --help)"),
    (["--type", "lstm"], "argument --type: invalid choice: 'lstm'"),
    (["--n-head", "2"], "--n-head does not apply to --type mlp"),
    (["--type", "wavenet", "--n-layer", "3"], "--n-layer does not apply to --type wavenet"),
    (["--type", "gpt", "--engine", "fused"],
     "--engine fused runs the mlp, bnmlp, wavenet models only, not gpt"),
    (["-o", ""], "--work-dir must name a folder, got ''"),
])
def test_command_line_mistakes_are_one_line(args, match):
    out = subprocess.run([sys.executable, "-m", "pymakemore.train", "--device", "cpu", *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


@pytest.mark.parametrize("make", [
    lambda f: torch.save({"x": _RunsCode()}, f),
    lambda f: torch.save({"x": argparse.Namespace(a=1)}, f),
    lambda f: f.write(__import__("pickle").dumps(_RunsCode(), protocol=0)),
    lambda f: f.write(__import__("pickle").dumps(_RunsCode(), protocol=2)),
    lambda f: f.write(__import__("pickle").dumps({"config": {}}, protocol=4)),
])
def test_pickle_payloads_are_refused_as_such(tmp_path, make):
    work = tmp_path / "w"
    work.mkdir()
    with open(work / "model.pt", "wb") as f:
        make(f)
    out = subprocess.run([sys.executable, "-m", "pymakemore.sample", "-o", str(work)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "should-never-run" not in out.stdout
    assert out.stderr.strip() == (f"pymakemore.sample: error: {work / 'model.pt'} holds objects "
                                  f"other than tensors and plain values: refused")


def test_files_keep_the_umask_mode_after_a_resume(tmp_path):
    work = tmp_path / "w"
    old = os.umask(0o022)
    try:
        assert _train(work, "--max-steps", 20, "--eval-every", 0) == 0
        assert train.main([*FAST, "-o", str(work), "--resume", "--max-steps", "40"]) == 0
    finally:
        os.umask(old)
    for name in ("model.pt", "metrics.jsonl", "summary.json"):
        assert (work / name).stat().st_mode & 0o777 == 0o644, name
