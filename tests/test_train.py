"""The makemore pipeline: data, trainer, checkpoints, sampler, command line."""
import json
import math
import re
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, names_path
from pymakemore import checkpoint, data, sample, train
from pymakemore.checkpoint import load_checkpoint

FAST = ["--device", "cpu", "--quiet", "--num-samples", "0", "--eval-every", "0",
        "--log-every", "50"]


def run_train(tmp_path, *args, name="run"):
    work = tmp_path / name
    code = train.main([*FAST, "-o", str(work), *map(str, args)])
    return code, work


# ---- data -------------------------------------------------------------------------------------
def test_lecture_split_sizes():
    splits = data.load_splits(names_path(), block_size=3, split_seed=42)
    sizes = {k: len(x) for k, (x, _) in splits.tensors.items()}
    assert sizes == {"train": 182_625, "dev": 22_655, "test": 22_866}
    assert splits.vocab.itos == ".abcdefghijklmnopqrstuvwxyz"


def test_context_windows_and_vocab(tmp_path):
    words_file = tmp_path / "w.txt"
    words_file.write_text("  emma \n\nzoë\n日本\n", encoding="utf-8")
    words = data.read_words(words_file)
    assert words == ["emma", "zoë", "日本"]
    vocab = data.Vocab.from_words(words)
    assert vocab.itos[0] == "." and list(vocab.chars) == sorted(vocab.chars)
    x, y = data.context_windows(["em"], vocab, block_size=3)
    a, b = vocab.stoi()["e"], vocab.stoi()["m"]
    assert x.tolist() == [[0, 0, 0], [0, 0, a], [0, a, b]] and y.tolist() == [a, b, 0]
    assert vocab.decode(vocab.encode("zoë")) == "zoë"


def test_built_in_names_ship_with_the_package():
    words = data.read_words(None)
    assert len(words) > 29_000 and words[:3] == ["emma", "liam", "olivia"]
    assert set("".join(words)) <= set("abcdefghijklmnopqrstuvwxyz")


@pytest.mark.parametrize("content,match", [
    (b"", "holds no words"),
    (b"\n  \n\t\n", "holds no words"),
    (b"anna\n\xff\xfebob\n", "not UTF-8 text.*line 2"),
    (b"anna\nst. louis\n", "line 2.*'.'"),
    (b"anna\n" + b"\0" * 1000 + b"\n", "is not text \\(a NUL byte at line 2\\)"),
])
def test_bad_input_files(tmp_path, content, match):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    with pytest.raises(data.DataError, match=match):
        data.read_words(bad)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(data.DataError, match="not found"):
        data.read_words(tmp_path / "nope.txt")
    with pytest.raises(data.DataError, match="is a directory"):
        data.read_words(tmp_path)


@pytest.mark.parametrize("make_bad", ["missing", "directory", "binary", "empty"])
def test_command_line_reports_bad_input_in_one_line(tmp_path, make_bad):
    bad = tmp_path / "input"
    if make_bad == "directory":
        bad.mkdir()
    elif make_bad == "binary":
        bad.write_bytes(b"\x80\x81\x82\n")
    elif make_bad == "empty":
        bad.write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "pymakemore.train", "-i", str(bad), "-o",
                           str(tmp_path / "out"), "--device", "cpu"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pymakemore.train: error:"), proc.stderr
    assert "Traceback" not in proc.stderr


# ---- training -------------------------------------------------------------------------------
def test_a_few_hundred_steps_beat_the_uniform_guess(tmp_path):
    code, work = run_train(tmp_path, "-i", names_path(), "--max-steps", 300, "--init",
                           "kaiming")
    assert code == 0
    summary = json.loads((work / "summary.json").read_text())
    assert summary["train_loss"] < math.log(27) - 0.3
    assert summary["dev_loss"] < math.log(27) - 0.3
    for key in ("model", "n_params", "config", "device", "ops", "steps", "seconds",
                "steps_per_s", "n_train", "n_dev", "n_test", "train_loss", "dev_loss",
                "test_loss"):
        assert key in summary
    assert summary["n_params"] == 11_897 and summary["steps"] == 300
    assert (summary["n_train"], summary["n_dev"], summary["n_test"]) == (182_625, 22_655, 22_866)
    lines = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [50, 100, 150, 200, 250, 300]
    assert "test_loss" in lines[-1]
    for png in ("loss.png", "embedding.png"):
        assert (work / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fused_and_torch_ops_follow_the_same_trajectory(tmp_path):
    runs = {}
    for ops_name in ("fused", "torch"):
        code, work = run_train(tmp_path, "-i", names_path(), "--max-steps", 200, "--ops",
                               ops_name, "--engine", "ops", name=ops_name)
        assert code == 0
        runs[ops_name] = load_checkpoint(work)
    fused, plain = runs["fused"], runs["torch"]
    torch.testing.assert_close(fused["losses"], plain["losses"], rtol=1e-4, atol=1e-4)
    # the lecture init's large early gradients amplify float32 rounding a little over the
    # steps: parameters agree to 1e-3
    for name, p in fused["model"].items():
        torch.testing.assert_close(p, plain["model"][name], rtol=1e-3, atol=1e-3)


def test_resume_is_bit_exact(tmp_path):
    common = ["-i", names_path(), "--lr-decay-at", 150, "--init", "kaiming"]
    code, straight = run_train(tmp_path, *common, "--max-steps", 400, name="straight")
    assert code == 0
    code, split = run_train(tmp_path, *common, "--max-steps", 200, name="split")
    assert code == 0
    code = train.main([*FAST, "-o", str(split), "--resume", "--max-steps", "400"])
    assert code == 0
    a, b = load_checkpoint(straight), load_checkpoint(split)
    assert a["step"] == b["step"] == 400
    for name, p in a["model"].items():
        assert torch.equal(p, b["model"][name]), name
    assert torch.equal(a["losses"], b["losses"])
    assert torch.equal(a["rng"]["batch"], b["rng"]["batch"])


def test_resume_refuses_changed_model_options_and_finished_runs(tmp_path, capsys):
    code, work = run_train(tmp_path, "-i", names_path(), "--max-steps", 20)
    assert code == 0
    assert train.main([*FAST, "-o", str(work), "--resume", "--n-hidden", "100"]) == 2
    assert "--n-hidden cannot change on --resume" in capsys.readouterr().err
    assert train.main([*FAST, "-o", str(work), "--resume", "--max-steps", "20"]) == 2
    assert "at step 20" in capsys.readouterr().err


def test_corrupt_or_foreign_checkpoint_is_a_clear_error(tmp_path, capsys):
    work = tmp_path / "w"
    work.mkdir()
    (work / "model.pt").write_bytes(b"not a checkpoint at all")
    assert train.main([*FAST, "-o", str(work), "--resume"]) == 2
    assert "is truncated or not a checkpoint" in capsys.readouterr().err
    torch.save({"weights": torch.zeros(3)}, work / "model.pt")
    assert sample.main(["-o", str(work)]) == 2
    assert "not a pymakemore checkpoint" in capsys.readouterr().err
    assert sample.main(["-o", str(tmp_path / "nowhere")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_checkpoint_loads_with_weights_only(tmp_path):
    code, work = run_train(tmp_path, "-i", names_path(), "--max-steps", 10)
    assert code == 0
    ckpt = torch.load(work / "model.pt", weights_only=True)
    assert ckpt["step"] == 10 and ckpt["vocab"] == "abcdefghijklmnopqrstuvwxyz"
    assert not list(work.glob(".model.*.tmp"))  # nothing half-written left behind


def test_lr_find_writes_its_plot_and_suggests_a_rate(tmp_path, capsys):
    work = tmp_path / "lr"
    assert train.main(["--device", "cpu", "-i", str(names_path()), "-o", str(work),
                       "--lr-find"]) == 0
    out = capsys.readouterr().out
    assert "suggested --lr" in out
    sweep = json.loads((work / "lr_find.json").read_text())
    assert len(sweep["losses"]) == 1000 and 1e-3 <= sweep["suggested_lr"] <= 1.0
    assert (work / "lr_find.png").exists()


@pytest.mark.parametrize("args,match", [
    (["--max-steps", "0"], "--max-steps must be >= 1"),
    (["--lr", "-1"], "--lr must be > 0"),
    (["--block-size", "0"], "--block-size must be >= 1"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--lr-decay", "nan"], "--lr-decay must be a finite number >= 0"),
    (["--weight-decay", "inf"], "--weight-decay must be a finite number >= 0"),
    (["--ddp-timeout", "0"], "--ddp-timeout must be > 0"),
    (["--ddp-timeout", "inf"], "--ddp-timeout must be > 0 and <= 1e+07, got inf"),
    (["--lr", "inf"], "--lr must be > 0 and <= 1e+06, got inf"),
    (["--lr", "1e308"], "--lr must be > 0 and <= 1e+06"),
    (["--max-steps", str(10 ** 12)], "--max-steps must be >= 1 and <= 1,000,000,000"),
    (["--batch-size", str(1 << 62)], "--batch-size must be >= 0 and <= 16,777,216"),
    (["--n-embd", str(10 ** 12)], "--n-embd must be >= 1 and <= 1,048,576"),
    (["--n-hidden", str(1 << 62)], "--n-hidden must be >= 1 and <= 1,048,576"),
    (["--block-size", str(10 ** 12)], "--block-size must be >= 1 and <= 1,048,576"),
    (["--threads", str(10 ** 12)], "--threads must be >= 1 and <= 65,536"),
    (["--num-samples", str(10 ** 12)], "--num-samples must be >= 0 and <= 1,000,000"),
    (["--seed", str(1 << 64)], "--seed must be >= "),
    (["--type", "bnmlp", "--batch-size", "1"], "--batch-size must be 0 or >= 2, not 1"),
    (["--type", "wavenet", "--batch-size", "1"], "normalises over the minibatch"),
])
def test_bad_options(tmp_path, capsys, args, match):
    assert train.main([*FAST, "-o", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert not (tmp_path / "x").exists()  # refused before anything is written


@pytest.mark.parametrize("words", [["anna"], ["anna", "bob"], ["anna", "bob", "eve"],
                                   ["anna", "bob", "eve", "ada", "max"]])
def test_too_few_words_to_split_is_one_line(tmp_path, capsys, words):
    source = tmp_path / "few.txt"
    source.write_text("\n".join(words) + "\n")
    assert train.main([*FAST, "-i", str(source), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"holds {len(words)} word" in err[0] and \
        "too few for the 80/10/10 split" in err[0], err


def test_one_huge_line_is_refused_at_once(tmp_path, capsys):
    source = tmp_path / "line.txt"
    source.write_text("ab" * 5_000_000 + "\n")  # 10 MB, one word
    started = time.perf_counter()
    assert train.main([*FAST, "-i", str(source), "-o", str(tmp_path / "x")]) == 2
    assert time.perf_counter() - started < 10
    assert "holds 1 word: too few" in capsys.readouterr().err


def test_a_word_too_long_to_pad_is_refused(tmp_path, capsys):
    source = tmp_path / "long.txt"
    source.write_text("\n".join(["anna", "bob", "eve", "ada", "max", "ab" * 1_100_000]) + "\n")
    assert train.main([*FAST, "-i", str(source), "-o", str(tmp_path / "x"), "--type",
                       "gpt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "every word is padded to the longest (2,200,000 characters)" \
        in err[0], err


def test_a_non_finite_loss_stops_the_run_naming_the_step(tmp_path, capsys, monkeypatch):
    from pymakemore import engines
    real_run_steps = engines.run_steps

    def diverging(*args, **kwargs):  # the loss of step 158 is NaN (as a too-high rate gives)
        losses = real_run_steps(*args, **kwargs)
        if kwargs.get("first_step", 0) == 150:
            losses = losses.clone()
            losses[7] = float("nan")
        return losses

    monkeypatch.setattr(engines, "run_steps", diverging)
    work = tmp_path / "w"
    assert train.main([*FAST, "-i", str(names_path()), "-o", str(work), "--max-steps", "400",
                       "--eval-every", "100", "--engine", "ops"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("pymakemore.train: error: the training loss is nan at step 158: "
                       "training stopped (the checkpoint of step 100 is kept); a lower --lr "
                       "may help"), err
    assert not any("Traceback" in line for line in err)
    assert load_checkpoint(work)["step"] == 100
    assert not (work / "loss.png").exists() and not (work / "summary.json").exists()


def test_resume_takes_the_input_file_however_it_is_spelled(tmp_path, monkeypatch):
    # the checkpoint keeps the resolved path; a relative path or a link to the same file is
    # the same file
    words = tmp_path / "words.txt"
    words.write_text("\n".join(["emma", "olivia", "ava", "isabella", "sophia"] * 20) + "\n")
    link = tmp_path / "link.txt"
    link.symlink_to(words)
    code, work = run_train(tmp_path, "-i", words, "--max-steps", "20")
    assert code == 0
    monkeypatch.chdir(tmp_path)
    for spelling, steps in (("words.txt", 40), (str(link), 60)):
        assert train.main([*FAST, "-o", str(work), "-i", spelling, "--resume",
                           "--max-steps", str(steps)]) == 0
        assert load_checkpoint(work)["step"] == steps
    other = tmp_path / "other.txt"
    other.write_text(words.read_text())
    assert train.main([*FAST, "-o", str(work), "-i", str(other), "--resume",
                       "--max-steps", "80"]) == 2  # another file is still refused


def test_the_parser_defaults_and_resume_rules_come_from_the_option_declarations():
    from pymakemore import config
    parser = config.build_parser()
    flags = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert set(flags) == {o.key for o in config.OPTIONS}  # every option, nothing else
    for o in config.OPTIONS:
        assert o.flag in flags[o.key].option_strings
        if o.kind != "switch":  # the help states the declared default
            shown = o.default_text or ("on" if o.default is True else "off"
                                       if o.default is False else o.default)
            assert f"(default {shown}" in flags[o.key].help, o.key
    # nothing given: the mlp preset, which is the declared defaults
    resolved, _ = config.resolve_config(parser.parse_args([]))
    assert {k: v for k, v in resolved.items() if k not in ("preset", "lr_decay_at")} == \
        {k: v for k, v in config.DEFAULTS.items() if k not in ("preset", "lr_decay_at")}
    assert "lr" in config.RUN_KEYS and "max_steps" not in config.RUN_KEYS


def test_a_new_option_needs_one_declaration(monkeypatch):
    from pymakemore import config, valid
    extra = config.Option("warmup", 0, "warm-up steps", "optimisation", type=int, run=True,
                          check=valid.at_least(0))
    monkeypatch.setattr(config, "OPTIONS", (*config.OPTIONS, extra))
    monkeypatch.setattr(config, "DEFAULTS", {**config.DEFAULTS, "warmup": 0})
    args = config.build_parser().parse_args(["--warmup", "5"])
    assert config.resolve_config(args)[0]["warmup"] == 5
    with pytest.raises(config.ConfigError, match="--warmup must be >= 0, got -1"):
        config.resolve_config(config.build_parser().parse_args(["--warmup", "-1"]))


# ---- sampling -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("sampler")
    assert train.main([*FAST, "-i", str(names_path()), "-o", str(work), "--max-steps", "300",
                       "--init", "kaiming"]) == 0
    return work


def _samples(capsys):
    lines = capsys.readouterr().out.strip().splitlines()
    return [line.split()[0] if line.split() else "" for line in lines[:-1]], lines[-1]


def test_sampler_options(trained, capsys):
    assert sample.main(["-o", str(trained), "-n", "7", "--seed", "3"]) == 0
    words, last = _samples(capsys)
    assert len(words) == 7 and "samples are new" in last
    assert sample.main(["-o", str(trained), "-n", "7", "--seed", "3"]) == 0
    assert _samples(capsys)[0] == words  # a seed repeats the draw
    assert sample.main(["-o", str(trained), "-n", "5", "--prefix", "ma", "--seed", "1"]) == 0
    assert all(w.startswith("ma") for w in _samples(capsys)[0])
    assert sample.main(["-o", str(trained), "-n", "4", "--top-k", "1", "--seed", "9"]) == 0
    greedy = _samples(capsys)[0]
    assert len(set(greedy)) == 1  # top-1 is greedy: every draw the same
    assert sample.main(["-o", str(trained), "-n", "3", "--temperature", "0.5"]) == 0
    words, last = _samples(capsys)
    assert len(words) == 3 and all(words) and "of 3 samples are new" in last


def test_sampler_marks_training_words(trained, capsys):
    train_words = set(load_checkpoint(trained)["train_words"].split("\n"))
    assert sample.main(["-o", str(trained), "-n", "60", "--seed", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    marks = [(line[:line.rindex("(")].strip(), line[line.rindex("("):]) for line in lines[:-1]]
    assert len(marks) == 60
    for word, mark in marks:  # each word marked by whether the training split holds it
        assert mark == ("(in train)" if word in train_words else "(new)"), word
    new = sum(mark == "(new)" for _, mark in marks)
    assert lines[-1] == f"{new} of 60 samples are new (not in the training set)"
    assert 0 < new < 60  # a 300-step model makes some of each


@pytest.mark.parametrize("args,match", [
    (["--temperature", "0"], "temperature must be a finite number > 0"),
    (["--temperature", "nan"], "temperature must be a finite number > 0, got nan"),
    (["--temperature", "inf"], "temperature must be a finite number > 0, got inf"),
    (["--top-k", "0"], "top_k must be >= 1"),
    (["--prefix", "Q!"], "not in the vocabulary"),
    (["--prefix", "an.a"], "contains '.', which marks the end of a word"),
    (["-n", "0"], "--num-samples must be >= 1"),
    (["-n", str(10 ** 12)], "--num-samples must be >= 1 and <= 1,000,000"),
    (["--seed", str(1 << 70)], "--seed must fit in 64 bits"),
])
def test_sampler_bad_options(trained, capsys, args, match):
    assert sample.main(["-o", str(trained), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


@pytest.mark.parametrize("temperature", ["1e-300", "1e-30", "1e300"])
def test_sampler_extreme_temperatures_draw_words(trained, capsys, temperature):
    # tiny: the likeliest character every time (greedy), not NaN; huge: uniform
    assert sample.main(["-o", str(trained), "-n", "5", "--seed", "1", "--temperature",
                        temperature]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6
    if float(temperature) < 1:  # greedy: the same word every time
        assert len({line.split()[0] for line in lines[:-1]}) == 1


def test_sampler_refuses_a_diverged_checkpoint(trained, tmp_path, capsys):
    ckpt = torch.load(trained / "model.pt", weights_only=True)
    ckpt["model"]["W1"][0, 0] = float("nan")
    torch.save(checkpoint.seal(ckpt), tmp_path / "model.pt")
    assert sample.main(["-o", str(tmp_path), "-n", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "parameter W1 holds NaN or infinite values" in err[0], err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine with no GPU")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    assert train.main([*FAST, "-o", str(tmp_path / "x"), "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_tensorboard_scalars_copy_the_metrics(tmp_path):
    pytest.importorskip("tensorboard", reason="the optional tensorboard package is not "
                                              "installed (the Makefile installs it for the tests)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    work = tmp_path / "w"
    assert train.main([*FAST, "-i", str(names_path()), "-o", str(work), "--max-steps", "60",
                       "--eval-every", "30", "--log-every", "20", "--tensorboard"]) == 0
    board = EventAccumulator(str(work / "tensorboard"))
    board.Reload()
    found = {tag: [(e.step, e.value) for e in board.Scalars(tag)]
             for tag in board.Tags()["scalars"]}
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    for key, tag in train.BOARD_TAGS.items():
        expected = [(r["step"], r[key]) for r in records if key in r]
        assert expected, key
        assert [s for s, _ in found[tag]] == [s for s, _ in expected], tag
        assert [v for _, v in found[tag]] == pytest.approx([v for _, v in expected], rel=1e-6)


def test_tensorboard_without_the_package_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    work = tmp_path / "w"
    code = train.main([*FAST, "-i", str(names_path()), "-o", str(work), "--max-steps", "20",
                       "--tensorboard"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert err[-1].endswith("--tensorboard needs the tensorboard package: pip install "
                            "tensorboard")
    assert not (work / "tensorboard").exists()
