"""The lecture models beyond the MLP: bigram, bnmlp (with diagnostics and the hand-written
backward), wavenet and gpt; their data layouts, presets, training, resume and sampling."""
import json
import math

import pytest
import torch

from conftest import DATA, names_path
from pymakemore import data, diagnostics, manual_backprop, sample, train
from pymakemore.checkpoint import load_checkpoint, model_from_checkpoint
from pymakemore.models import BNMLP, GPT, Bigram, WaveNet
from pymakemore.models.bigram import bigram_counts, counts_log_probs, counts_nll
from pymakemore.models.layers import BatchNorm

FAST = ["--device", "cpu", "--quiet", "--num-samples", "0", "--eval-every", "0"]
SMALL_GPT = ["--n-layer", "2", "--n-embd", "32", "--n-head", "4"]


def run(tmp_path, *args, name="run"):
    work = tmp_path / name
    code = train.main([*FAST, "-o", str(work), *map(str, args)])
    assert code == 0
    return work, json.loads((work / "summary.json").read_text())


def straight_and_resumed(tmp_path, common, steps, *first_half):
    """The checkpoints of one run of `steps` steps and of the same run stopped halfway (with
    `first_half` flags) and resumed to `steps`."""
    straight, _ = run(tmp_path, *common, "--max-steps", steps, name="straight")
    split, _ = run(tmp_path, *common, "--max-steps", steps // 2, *first_half, name="split")
    assert train.main([*FAST, "-o", str(split), "--resume", "--max-steps", str(steps)]) == 0
    return load_checkpoint(straight), load_checkpoint(split)


def shakespeare_path():
    path = DATA / "tinyshakespeare.txt"
    if not path.exists():
        pytest.skip(f"data set not found at {path} (see ../shared/data/README.md)")
    return path


# ---- shapes and parameter counts -----------------------------------------------------------------
def test_parameter_counts_at_the_lecture_configs():
    def count(model):
        return sum(p.numel() for p in model.parameters())
    assert count(WaveNet(27, block_size=8, n_embd=24, n_hidden=128)) == 76_579
    assert count(Bigram(27)) == 27 * 27
    # part 3: C, W1 (no bias), BatchNorm gain and bias, W2, b2
    assert count(BNMLP(27)) == 27 * 10 + 30 * 200 + 2 * 200 + 200 * 27 + 27
    assert count(BNMLP(27, n_hidden=64, hidden_bias=True)) == 27 * 10 + 30 * 64 + 64 + 2 * 64 \
        + 64 * 27 + 27
    gpt = GPT(65, block_size=256, n_embd=384, n_head=6, n_layer=6)
    per_block = 4 * 384 + 3 * 384 * 384 + 384 * 384 + 384 + 2 * 4 * 384 * 384 + 4 * 384 + 384
    assert count(gpt) == 65 * 384 + 256 * 384 + 6 * per_block + 2 * 384 + 384 * 65 + 65


@pytest.mark.parametrize("model,shape", [
    (Bigram(27), (5, 27)), (BNMLP(27, n_layer=3), (5, 27)), (WaveNet(27, block_size=8), (5, 27)),
])
def test_window_models_map_contexts_to_next_character_logits(model, shape):
    idx = torch.randint(0, 27, (5, getattr(model, "block_size", 1)))
    logits, loss = model(idx, torch.randint(0, 27, (5,)))
    assert logits.shape == shape and loss.dim() == 0 and torch.isfinite(loss)


def test_gpt_is_causal_and_bounded_by_its_block():
    model = GPT(27, block_size=8, n_embd=16, n_head=2, n_layer=2).eval()
    idx = torch.randint(0, 27, (2, 8))
    changed = idx.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 27
    a, _ = model(idx)
    b, _ = model(changed)
    assert a.shape == (2, 8, 27)
    torch.testing.assert_close(a[:, :5], b[:, :5])  # no position sees a later one
    assert not torch.allclose(a[:, 5:], b[:, 5:])
    with pytest.raises(ValueError, match="longer than the block size"):
        model(torch.zeros((1, 9), dtype=torch.int64))


def test_wavenet_needs_a_power_of_two_block():
    with pytest.raises(ValueError, match="power of two"):
        WaveNet(27, block_size=6)


def test_batchnorm_running_statistics_and_evaluation():
    bn = BatchNorm(4, momentum=0.5)
    x = torch.randn(64, 3, 4) * 3 + 2
    out = bn(x)  # over batch and time
    flat = out.reshape(-1, 4)
    torch.testing.assert_close(flat.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.var(0), torch.ones(4), atol=1e-3, rtol=0)
    torch.testing.assert_close(bn.running_mean, 0.5 * x.reshape(-1, 4).mean(0))
    bn.eval()
    before = bn.running_mean.clone()
    one = bn(x[:1, 0])  # evaluation takes the running statistics, even for one example
    torch.testing.assert_close(one, (x[:1, 0] - before) / torch.sqrt(bn.running_var + 1e-5))
    assert torch.equal(bn.running_mean, before)


@pytest.mark.parametrize("make", [
    lambda ops: BNMLP(27, n_layer=2, ops=ops), lambda ops: WaveNet(27, block_size=4, ops=ops),
    lambda ops: GPT(27, block_size=6, n_embd=16, n_head=2, n_layer=1, ops=ops),
])
def test_fused_and_torch_ops_give_the_same_model(make):
    fused, plain = make("fused"), make("torch")
    idx = torch.randint(0, 27, (16, fused.block_size))
    targets = torch.randint(0, 27, tuple(fused(idx)[0].shape[:-1]))
    lf, lp = fused(idx, targets)[1], plain(idx, targets)[1]
    lf.backward()
    lp.backward()
    torch.testing.assert_close(lf, lp, rtol=1e-5, atol=1e-5)
    for (name, a), (_, b) in zip(fused.named_parameters(), plain.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)


# ---- data layouts --------------------------------------------------------------------------------
def test_models_are_built_of_the_public_modules_with_the_lectures_init():
    from pymakemore import nn as pmnn
    from pymakemore.models.layers import lecture_linear
    fused, plain = BNMLP(27, ops="fused"), BNMLP(27, ops="torch")
    assert type(fused.out) is pmnn.Linear and type(plain.out) is torch.nn.Linear
    assert all(type(h) is pmnn.Linear for h in WaveNet(27).hidden)
    # the lecture's draws: randn(fan_in, fan_out) * scale, stored transposed, then the bias
    g = torch.Generator().manual_seed(5)
    layer = lecture_linear(6, 4, True, g, scale=0.5, bias_scale=0.1)
    g = torch.Generator().manual_seed(5)
    w, b = torch.randn((6, 4), generator=g) * 0.5, torch.randn(4, generator=g) * 0.1
    assert torch.equal(layer.weight, w.t()) and torch.equal(layer.bias, b)
    state = torch.get_rng_state()
    lecture_linear(6, 4, False, torch.Generator(), ops="torch")
    assert torch.equal(torch.get_rng_state(), state)  # torch's global generator is untouched


def test_sequences_layout(tmp_path):
    words = tmp_path / "w.txt"
    words.write_text("ab\nc\nabcd\n" * 4)
    splits = data.load_splits(words, None, layout="sequences")
    x, y = splits.tensors["train"]
    assert x.shape[1] == 5  # the longest word and its end mark
    vocab = splits.vocab
    ids = {w: vocab.encode(w) for w in ("ab", "c", "abcd")}
    rows = {tuple(r) for r in torch.cat([x, y], 1).tolist()}
    a, b = ids["ab"]
    assert (0, a, b, 0, 0, a, b, 0, -1, -1) in rows  # X = '.'+word, Y = word+'.', pad -1
    with pytest.raises(data.DataError, match="block size of 5"):
        data.load_splits(words, 4, layout="sequences")


def test_text_layout_windows_and_split(tmp_path):
    text_file = tmp_path / "t.txt"
    text = "To be, or not to be.\nThat is the question.\n" * 20
    text_file.write_text(text)
    splits = data.load_splits(text_file, 8, layout="text")
    vocab = splits.vocab
    assert not vocab.boundary and vocab.itos == "".join(sorted(set(text)))
    n = int(0.9 * len(text))
    train_stream = splits.streams["train"]
    assert vocab.decode(train_stream.tolist()) == text[:n]
    assert vocab.decode(splits.streams["dev"].tolist()) == text[n:]
    x, y = splits.tensors["train"]
    assert len(x) == n - 8  # every window, each with its shifted twin
    for i in (0, 7, len(x) - 1):
        assert vocab.decode(x[i].tolist()) == text[i:i + 8]
        assert vocab.decode(y[i].tolist()) == text[i + 1:i + 9]
    ex, ey = splits.evaluation("dev")  # evaluation tiles the split: each character once
    assert ex.shape[1] == 8 and len(ex) == (len(text) - n - 1) // 8
    assert vocab.decode(ex.reshape(-1).tolist()) == text[n:n + 8 * len(ex)]
    with pytest.raises(data.DataError, match="not longer than the block size"):
        data.load_splits(text_file, len(text), layout="text")
    with pytest.raises(data.DataError, match="needs an input file"):
        data.load_splits(None, 8, layout="text")
    text_file.write_text("\n \n")
    with pytest.raises(data.DataError, match="holds no text"):
        data.load_splits(text_file, 8, layout="text")


# ---- bigram --------------------------------------------------------------------------------------
def test_counts_model_matches_a_direct_count(tmp_path):
    words = ["emma", "ava", "eve", "mae"]
    vocab = data.Vocab.from_words(words)
    x, y = data.context_windows(words, vocab, 1)
    log_probs = counts_log_probs(bigram_counts(x, y, vocab.size))
    pairs = [(a, b) for w in words for a, b in zip("." + w, w + ".")]
    table = {}
    for a, b in pairs:
        table[a, b] = table.get((a, b), 0) + 1
    total = 0.0
    for a, b in pairs:
        row = sum(c for (p, _), c in table.items() if p == a)
        total -= math.log((table[a, b] + 1) / (row + vocab.size))
    assert counts_nll(log_probs, x, y) == pytest.approx(total / len(pairs), rel=1e-12)


def test_neural_bigram_converges_to_the_counts_model(tmp_path):
    work, summary = run(tmp_path, "--type", "bigram", "-i", names_path())
    counts = summary["counts_model"]
    assert abs(summary["dev_loss"] - counts["dev_loss"]) < 0.01
    assert abs(summary["train_loss"] - counts["train_loss"]) < 0.01
    assert 2.40 < counts["all_data_loss"] < 2.50
    assert (work / "bigram_counts.png").read_bytes()[:4] == b"\x89PNG"


# ---- bnmlp, diagnostics, backprop by hand --------------------------------------------------------
def test_bnmlp_presets_learn_and_write_their_diagnostics(tmp_path):
    for preset in ("bnmlp", "bnmlp-deep"):
        work, summary = run(tmp_path, "--preset", preset, "-i", names_path(), "--max-steps", 300,
                            name=preset)
        assert summary["train_loss"] < math.log(27) - 0.4, preset
        for png in ("activations.png", "activation_grads.png", "weight_grads.png",
                    "update_ratios.png"):
            assert (work / png).read_bytes()[:4] == b"\x89PNG", png
        numbers = json.loads((work / "diagnostics.json").read_text())
        layers = numbers["tanh_layers"]
        assert len(layers) == (5 if preset == "bnmlp-deep" else 1)
        assert all(0.0 <= r["saturated"] < 0.5 and 0.3 < r["std"] < 1.0 for r in layers)
        ratios = numbers["update_ratio_final"]
        assert all(-6 < v < 0 for v in ratios.values()) and "out.weight" in ratios


def test_update_ratios_match_their_definition():
    model = BNMLP(27, n_layer=2)
    ratios = diagnostics.UpdateRatios(model)
    _, loss = model(torch.randint(0, 27, (32, 3)), torch.randint(0, 27, (32,)))
    loss.backward()
    ratios.record(0, 0.1)
    state = ratios.state_dict()
    expected = [math.log10((0.1 * p.grad).std().item() / p.std().item())
                for p in (model.C, model.hidden[0].weight, model.hidden[1].weight,
                          model.out.weight)]
    assert state["names"] == ["C", "hidden.0.weight", "hidden.1.weight", "out.weight"]
    assert state["values"][0].tolist() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("hidden_bias", [False, True])
def test_hand_written_gradients_match_autograd(hidden_bias):
    torch.manual_seed(1)
    model = BNMLP(27, n_hidden=64, hidden_bias=hidden_bias)
    with torch.no_grad():  # away from the init's gain 1, bias 0, to exercise every term
        model.norms[0].gain.add_(torch.randn(64) * 0.1)
        model.norms[0].bias.add_(torch.randn(64) * 0.1)
        model.out.bias.add_(torch.randn(27) * 0.1)
    x, y = torch.randint(0, 27, (32, 3)), torch.randint(0, 27, (32,))
    report = manual_backprop.check_gradients(model, x, y)  # float32
    expected = {"logprobs", "probs", "counts_sum_inv", "counts_sum", "counts", "norm_logits",
                "logit_maxes", "logits", "h", "hpreact", "bnraw", "bnvar_inv", "bnvar",
                "bndiff2", "bndiff", "bnmeani", "hprebn", "embcat", "emb", "C", "W1", "W2",
                "b2", "bngain", "bnbias"} | ({"b1"} if hidden_bias else set())
    assert set(report["step_by_step"]) == expected
    for part in ("step_by_step", "compact", "model_autograd"):
        worst = max(report[part].values())
        assert worst < 1e-6, (part, report[part])
    model64 = model.double()
    report64 = manual_backprop.check_gradients(model64, x, y)
    assert max(report64["step_by_step"].values()) < 1e-14
    assert max(report64["compact"].values()) < 1e-14


def test_hand_written_gradients_reject_other_models():
    with pytest.raises(ValueError, match="one hidden layer"):
        manual_backprop.check_gradients(BNMLP(27, n_layer=2), torch.zeros((2, 3), dtype=int),
                                        torch.zeros(2, dtype=int))


def test_training_by_hand_follows_autograd(tmp_path):
    common = ["--preset", "manual-backprop", "-i", names_path(), "--max-steps", 300]
    hand, s_hand = run(tmp_path, *common, name="hand")
    # the ops engine, as --backprop manual: the same minibatches (auto would take fused)
    auto, s_auto = run(tmp_path, *common, "--backprop", "autograd", "--engine", "ops",
                       name="auto")
    a, b = load_checkpoint(hand), load_checkpoint(auto)
    torch.testing.assert_close(a["losses"], b["losses"], rtol=1e-4, atol=1e-4)
    for name, p in a["model"].items():
        torch.testing.assert_close(p, b["model"][name], rtol=1e-4, atol=1e-4, msg=name)
    assert abs(s_hand["dev_loss"] - s_auto["dev_loss"]) < 1e-4
    check = json.loads((hand / "gradient_check.json").read_text())
    assert max(check["compact"].values()) < 1e-6


# ---- wavenet and gpt -----------------------------------------------------------------------------
def test_wavenet_preset_learns(tmp_path):
    _, summary = run(tmp_path, "--type", "wavenet", "-i", names_path(), "--max-steps", 300)
    assert summary["n_params"] == 76_579
    assert summary["dev_loss"] < math.log(27) - 0.6


def test_gpt_on_words_learns_and_samples_words(tmp_path, capsys):
    work, summary = run(tmp_path, "--type", "gpt", "-i", names_path(), "--max-steps", 150,
                        *SMALL_GPT)
    assert summary["config"]["block_size"] == 16  # longest name (15) + its end mark
    assert summary["dev_loss"] < math.log(27) - 0.3
    capsys.readouterr()
    assert sample.main(["-o", str(work), "-n", "6", "--seed", "1", "--prefix", "al"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 7 and all(line.split()[0].startswith("al") for line in lines[:-1])


def test_gpt_on_text_learns_and_continues_a_prompt(tmp_path, capsys):
    work, summary = run(tmp_path, "--type", "gpt", "--data", "text", "-i", shakespeare_path(),
                        "--block-size", 32, "--batch-size", 16, "--max-steps", 150, "--lr",
                        "3e-3", *SMALL_GPT)
    assert summary["preset"] == "gpt-shakespeare"
    assert summary["n_train"] == int(0.9 * 1_115_394) - 32
    assert summary["dev_loss"] < math.log(65) - 1.0
    capsys.readouterr()
    assert sample.main(["-o", str(work), "--prefix", "ROMEO:", "--num-chars", "80",
                        "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ROMEO:") and len(out.rstrip("\n")) >= 80
    ckpt = load_checkpoint(work)
    model, vocab = model_from_checkpoint(ckpt)
    assert not vocab.boundary and vocab.size == 65 and model.block_size == 32


def test_gpt_resume_with_dropout_and_adamw_is_bit_exact(tmp_path):
    common = ["--type", "gpt", "-i", names_path(), "--dropout", "0.1", *SMALL_GPT]
    a, b = straight_and_resumed(tmp_path, common, 40)
    assert torch.equal(a["losses"], b["losses"])
    for name, p in a["model"].items():
        assert torch.equal(p, b["model"][name]), name
    assert a["optimizer"]["state"][0]["step"] == b["optimizer"]["state"][0]["step"] == 40


def test_bnmlp_resume_keeps_running_statistics_and_update_ratios(tmp_path):
    common = ["--type", "bnmlp", "-i", names_path()]
    a, b = straight_and_resumed(tmp_path, common, 60, "--lr-decay-at", 30)
    for name, p in a["model"].items():
        assert torch.equal(p, b["model"][name]), name
    assert a["update_ratios"]["steps"] == b["update_ratios"]["steps"] == list(range(60))


# ---- presets and options -------------------------------------------------------------------------
def test_presets_set_the_lecture_configs_and_flags_override_them():
    def config(*argv):
        return train.resolve_config(train.build_parser().parse_args(list(argv)))[0]
    wavenet = config("--type", "wavenet")
    assert (wavenet["block_size"], wavenet["n_embd"], wavenet["n_hidden"]) == (8, 24, 128)
    assert wavenet["lr_decay_at"] == 150_000 and wavenet["max_steps"] == 200_000
    assert config("--type", "wavenet", "--max-steps", "2000")["lr_decay_at"] == 1500
    assert config("--preset", "bnmlp-deep")["n_layer"] == 5
    assert config("--preset", "manual-backprop")["backprop"] == "manual"
    gpt = config("--type", "gpt", "--data", "text")
    assert gpt["preset"] == "gpt-shakespeare" and gpt["block_size"] == 256
    assert config("--type", "gpt", "--n-head", "2")["n_head"] == 2
    assert config()["type"] == "mlp" and config()["preset"] == "mlp"


@pytest.mark.parametrize("args,match", [
    (["--type", "mlp", "--preset", "wavenet"], "is a wavenet model, not mlp"),
    (["--type", "mlp", "--data", "text"], "--data text trains the gpt model only"),
    (["--type", "wavenet", "--block-size", "6"], "power of two"),
    (["--type", "bigram", "--block-size", "3"], "--block-size 1"),
    (["--type", "mlp", "--backprop", "manual"], "--type bnmlp --n-layer 1"),
    (["--preset", "bnmlp-deep", "--backprop", "manual"], "--type bnmlp --n-layer 1"),
    (["--type", "gpt", "--dropout", "1.0"], "--dropout must be in"),
    (["--type", "gpt", "--n-embd", "30", "--n-head", "4"], "multiple of --n-head"),
    (["--type", "mlp", "--diagnostics"], "--diagnostics follows"),
    (["--type", "mlp", "--batch-size", "-1"], "--batch-size must be >= 0"),
    (["--type", "gpt", "--data", "text"], "needs an input file"),
    (["--engine", "graph"], "--engine graph captures CUDA graphs: it needs --device cuda"),
])
def test_bad_model_options(tmp_path, capsys, args, match):
    assert train.main([*FAST, "-o", str(tmp_path / "x"), *args]) == 2
    assert match in capsys.readouterr().err


def test_text_sampling_is_seeded_and_checks_options():
    model = GPT(5, block_size=4, n_embd=8, n_head=2, n_layer=1)
    vocab = data.Vocab("\nabcd", boundary=False)
    a = sample.sample_text(model, vocab, 20, prefix="ab", generator=torch.Generator()
                           .manual_seed(0))
    b = sample.sample_text(model, vocab, 20, prefix="ab", generator=torch.Generator()
                           .manual_seed(0))
    assert a == b and a.startswith("ab") and len(a) == 22
    with pytest.raises(ValueError, match="temperature"):
        sample.sample_text(model, vocab, 5, temperature=0)


# ---- makemore.py's rnn, gru and bow ------------------------------------------------------------
def makemore_py_parameter_count(kind, vocab, block, n_embd, n_embd2):
    """The parameters of makemore.py's model of that --type (its classes, counted by hand)."""
    linear = lambda i, o: i * o + o  # noqa: E731
    if kind == "bow":  # wte, wpe, c_fc, c_proj, lm_head
        return (vocab * n_embd + block * n_embd + linear(n_embd, n_embd2)
                + linear(n_embd2, n_embd) + linear(n_embd, vocab))
    cells = {"rnn": 1, "gru": 3}[kind]  # xh_to_h; xh_to_z, xh_to_r, xh_to_hbar
    return (n_embd2 + vocab * n_embd + cells * linear(n_embd + n_embd2, n_embd2)
            + linear(n_embd2, vocab))


@pytest.mark.parametrize("kind", ["rnn", "gru", "bow"])
@pytest.mark.parametrize("sizes", [(27, 16, 64, 64), (30, 7, 12, 20)])
def test_makemore_py_models_have_its_parameter_counts_and_shapes(kind, sizes):
    from pymakemore.models import MODELS
    vocab, block, n_embd, n_embd2 = sizes
    model = MODELS[kind](vocab, block_size=block, n_embd=n_embd, n_embd2=n_embd2)
    assert sum(p.numel() for p in model.parameters()) == \
        makemore_py_parameter_count(kind, vocab, block, n_embd, n_embd2)
    idx = torch.randint(0, vocab, (3, block))
    logits, loss = model(idx)
    assert logits.shape == (3, block, vocab) and loss is None
    # causal: a position's logits do not change with what comes after it
    later = idx.clone()
    later[:, block // 2 + 1:] = (later[:, block // 2 + 1:] + 1) % vocab
    torch.testing.assert_close(model(later)[0][:, :block // 2 + 1], logits[:, :block // 2 + 1])
    with pytest.raises(ValueError, match="longer than the block size"):
        model(torch.zeros(1, block + 1, dtype=torch.long))


@pytest.mark.parametrize("kind", ["rnn", "gru", "bow"])
def test_makemore_py_models_fused_and_torch_agree_step_for_step(kind):
    from pymakemore.models import MODELS
    from pymakemore.engines import make_optimizer
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 27, (8, 10), generator=g)
    y = torch.roll(x, -1, 1)
    y[:, -2:] = -1  # padding
    runs = {}
    for ops in ("fused", "torch"):
        model = MODELS[kind](27, block_size=10, n_embd=12, n_embd2=16, ops=ops)
        opt = make_optimizer(dict(optimizer="adamw", lr=1e-2, weight_decay=0.01, beta2=0.99),
                             model)
        losses = []
        for _ in range(5):
            _, loss = model(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        runs[ops] = (losses, [p.detach().clone() for p in model.parameters()])
    assert runs["fused"][0] == pytest.approx(runs["torch"][0], rel=1e-5)
    for a, b in zip(runs["fused"][1], runs["torch"][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["rnn", "gru", "bow"])
def test_makemore_py_presets_learn_sample_and_resume(tmp_path, capsys, kind):
    work, summary = run(tmp_path, "--type", kind, "-i", names_path(), "--max-steps", 300,
                        "--lr", "5e-3")
    assert summary["preset"] == kind and summary["config"]["block_size"] == 16
    assert summary["config"]["optimizer"] == "adamw" and summary["config"]["beta2"] == 0.99
    assert summary["dev_loss"] < math.log(27) - 0.5
    capsys.readouterr()
    assert sample.main(["-o", str(work), "-n", "4", "--seed", "1", "--prefix", "ma"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and all(line.split()[0].startswith("ma") for line in lines[:-1])
    # resume: the same numbers as one straight run
    common = ["--type", kind, "-i", names_path(), "--n-embd", "16", "--n-embd2", "16"]
    a, b = straight_and_resumed(tmp_path, common, 30)
    assert torch.equal(a["losses"], b["losses"])
    for name, p in a["model"].items():
        assert torch.equal(p, b["model"][name]), name
