"""The fused training engine: same maths as the op-by-op path, sound minibatch draws,
resumable, and clear errors."""
import json

import pytest
import torch

from conftest import names_path, sgd_steps_by_autograd
from pymakemore import engines, train
from pymakemore.checkpoint import load_checkpoint
from pymakemore.models import MLP

FAST = ["--device", "cpu", "--quiet", "--num-samples", "0", "--eval-every", "0",
        "--log-every", "50"]


def _data(n=500, vocab=27, block=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, vocab, (n, block), generator=g),
            torch.randint(0, vocab, (n,), generator=g))


@pytest.mark.parametrize("init", ["lecture", "kaiming"])
def test_fused_steps_match_op_by_op_steps(init):
    x, y = _data()
    steps, batch = 40, 32
    idx = engines.batch_indices(7, 0, steps, batch, len(x))
    lrs = torch.full((steps,), 0.1)
    lrs[25:] = 0.01
    fused, ref = MLP(27, init=init), MLP(27, init=init)
    losses = engines.fused_steps(fused, x, y, lrs, batch, 0, 7, batch_indices=idx)
    ref_losses = sgd_steps_by_autograd(ref, x, y, idx, lrs)
    torch.testing.assert_close(losses, ref_losses, rtol=1e-4, atol=1e-4)
    for (name, p), q in zip(fused.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4, msg=name)


def test_internal_draws_are_the_published_indices():
    x, y = _data()
    a, b = MLP(27, init="kaiming"), MLP(27, init="kaiming")
    lrs = torch.full((30,), 0.1)
    la = engines.fused_steps(a, x, y, lrs, 16, 5, 99)
    lb = engines.fused_steps(b, x, y, lrs, 16, 5, 99,
                             batch_indices=engines.batch_indices(99, 5, 30, 16, len(x)))
    assert torch.equal(la, lb)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def _assert_identical_runs(steps, settings, monkeypatch):
    """The engine run once per (threads, barrier spin in us) setting, from the same start:
    every loss and parameter bit for bit the same."""
    x, y = _data()
    lrs = torch.full((steps,), 0.1)
    threads = torch.get_num_threads()
    results = []
    try:
        for n, spin in settings:
            monkeypatch.setenv("PYMAKEMORE_ENGINE_SPIN_US", spin)
            torch.set_num_threads(n)
            model = MLP(27, init="kaiming")
            losses = engines.fused_steps(model, x, y, lrs, 32, 0, 5)
            results.append((losses, [p.detach().clone() for p in model.parameters()]))
    finally:
        torch.set_num_threads(threads)
    (l1, p1), (l2, p2) = results
    assert torch.equal(l1, l2)
    for a, b in zip(p1, p2):
        assert torch.equal(a, b)


def test_one_or_two_threads_give_identical_steps(monkeypatch):
    _assert_identical_runs(50, [(1, "200"), (2, "200")], monkeypatch)


def test_two_threads_that_cannot_meet_go_on_as_one(monkeypatch):
    # With no spinning, a barrier sleeps whenever the other thread is not already there, as
    # on a machine shared with a busy process; after a few sleeps the two threads go on as
    # one, which must not change a single number.
    _assert_identical_runs(400, [(1, "200"), (2, "0")], monkeypatch)


def test_batch_draws_are_uniform_and_resumable():
    n = 100
    draws = engines.batch_indices(1234, 0, 2000, 32, n)
    assert draws.min() >= 0 and draws.max() < n
    counts = torch.bincount(draws.flatten(), minlength=n).double()
    expected = draws.numel() / n
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 170  # 99 degrees of freedom: p ~ 1e-5 above this
    # a later call continues the same sequence; different steps draw different rows
    assert torch.equal(engines.batch_indices(1234, 700, 10, 32, n), draws[700:710])
    assert not torch.equal(draws[0], draws[1])
    assert not torch.equal(engines.batch_indices(1235, 0, 1, 32, n)[0], draws[0])


def test_bad_inputs_to_the_engine_op():
    x, y = _data()
    model = MLP(27)
    lrs = torch.full((3,), 0.1)
    with pytest.raises(IndexError, match="character id 30 in X"):
        engines.fused_steps(model, torch.full_like(x, 30), y, lrs, 4, 0, 1)
    with pytest.raises(IndexError, match="batch index 500 is out of range"):
        engines.fused_steps(model, x, y, lrs, 2, 0, 1,
                            batch_indices=torch.full((3, 2), 500, dtype=torch.long))
    with pytest.raises(RuntimeError, match="must have shape"):
        engines.fused_steps(model, x, y, lrs, 2, 0, 1,
                            batch_indices=torch.zeros((3, 5), dtype=torch.long))
    with pytest.raises(RuntimeError, match="do not fit one MLP"):
        engines.fused_steps(MLP(27, block_size=4), x, y, lrs, 2, 0, 1)
    with pytest.raises(RuntimeError, match="X must be a contiguous 2-D Long"):
        engines.fused_steps(model, x.int(), y, lrs, 2, 0, 1)


def test_trainer_fused_engine_reaches_a_low_loss_and_resumes_exactly(tmp_path):
    common = [*FAST, "-i", str(names_path()), "--engine", "fused", "--init", "kaiming",
              "--lr-decay-at", "1500"]
    straight, split = tmp_path / "a", tmp_path / "b"
    assert train.main([*common, "-o", str(straight), "--max-steps", "3000"]) == 0
    assert train.main([*common, "-o", str(split), "--max-steps", "1000"]) == 0
    assert train.main([*FAST, "-o", str(split), "--resume", "--max-steps", "3000"]) == 0
    a, b = load_checkpoint(straight), load_checkpoint(split)
    for name, p in a["model"].items():
        assert torch.equal(p, b["model"][name]), name
    assert a["config"]["engine"] == "fused"
    assert a["losses"][-500:].mean() < 2.6


def test_trainer_refuses_the_fused_engine_where_it_cannot_run(tmp_path, capsys):
    assert train.main([*FAST, "-o", str(tmp_path / "x"), "--engine", "fused", "--ops", "torch",
                       "--max-steps", "10"]) == 2
    assert "--ops torch needs --engine ops" in capsys.readouterr().err


def test_opcheck_engine_ops():
    x, y = _data(n=50)
    model = MLP(27)
    params = [p.detach().clone() for p in model.parameters()]
    torch.library.opcheck(torch.ops.pymakemore.mlp_train_steps.default,
                          (*params, x, y, torch.full((2,), 0.1), 4, 0, 3, None),
                          test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(torch.ops.pymakemore.mlp_batch_indices.default, (3, 0, 2, 4, 50),
                          test_utils=("test_schema", "test_faketensor"))


def test_auto_takes_the_fastest_engine_that_runs():
    from pymakemore.models import BNMLP
    from pymakemore.config import DEFAULTS
    cpu = torch.device("cpu")
    sgd = {**DEFAULTS, "optimizer": "sgd"}
    mlp = MLP(27)
    assert engines.choose(mlp, sgd, cpu, distributed=False) == "fused"
    assert engines.choose(mlp, {**sgd, "optimizer": "adamw"}, cpu, False) == "ops"
    assert engines.choose(mlp, sgd, cpu, distributed=True) == "ops"  # torchrun: ops only
    assert engines.choose(mlp, {**sgd, "batch_size": 0}, cpu, False) == "ops"
    assert engines.choose(MLP(27, ops="torch"), {**sgd, "ops": "torch"}, cpu, False) == "ops"
    assert engines.choose(BNMLP(27), sgd, cpu, False) == "fused"
    assert engines.choose(BNMLP(27), {**sgd, "optimizer": "adamw"}, cpu, False) == "ops"


def test_every_engine_says_why_it_cannot_run_a_configuration():
    from pymakemore.models import BNMLP
    from pymakemore.config import DEFAULTS
    cpu, sgd = torch.device("cpu"), dict(DEFAULTS)
    mlp = MLP(27)
    assert set(engines.ENGINES) == {"ops", "graph", "fused"}
    ops = engines.ENGINES["ops"]  # any model, options, torchrun
    assert ops.problem(BNMLP(27), cpu, True) is None
    assert ops.options_problem({**sgd, "optimizer": "adamw"}) is None
    why = {name: e.problem(mlp, cpu, False) for name, e in engines.ENGINES.items()}
    assert why == {"ops": None, "fused": None,
                   "graph": "--engine graph captures CUDA graphs: it needs --device cuda"}
    fused = engines.ENGINES["fused"]
    assert "runs in one process" in fused.problem(mlp, cpu, distributed=True)
    from pymakemore import config
    for name in ("fused", "graph"):  # refused when the options are read under torchrun
        with pytest.raises(config.ConfigError, match=f"--engine {name} runs in one process"):
            config.check_distributed({**sgd, "engine": name}, world=2)
    config.check_distributed({**sgd, "engine": "ops"}, world=2)
    assert fused.problem(BNMLP(27), cpu, False) is None
    assert "mlp, bnmlp, wavenet models only, not gpt" in fused.options_problem(
        {**sgd, "type": "gpt"})
    assert fused.problem(BNMLP(27), torch.device("cuda"), False) == \
        "--engine fused runs BNMLP on the CPU; on CUDA the graph engine runs it"
    assert "float32" in fused.problem(MLP(27).double(), cpu, False)
    assert fused.options_problem({**sgd, "batch_size": 0}) == \
        "--batch-size 0 (the whole training set) runs on --engine ops"
    # the options alone are checked when they are read, before any data loads
    with pytest.raises(train.ConfigError, match="--backprop manual runs on --engine ops"):
        train.resolve_config(train.build_parser().parse_args(
            ["--preset", "manual-backprop", "--engine", "fused"]))
    # the model type first: the other rules speak of those models' options
    with pytest.raises(train.ConfigError, match="--engine fused runs the mlp, bnmlp, wavenet "
                                                "models only, not gpt"):
        train.resolve_config(train.build_parser().parse_args(["--type", "gpt", "--engine",
                                                              "fused"]))
    assert fused.options_problem({**sgd, "backprop": "manual"}) == \
        "--backprop manual runs on --engine ops"


def test_auto_says_which_engine_it_took_and_resumes_with_it(tmp_path, capsys):
    work = tmp_path / "w"
    common = [*FAST, "-i", str(names_path()), "-o", str(work)]
    assert train.main([*common, "--max-steps", "100"]) == 0
    assert "fused engine (auto)" in capsys.readouterr().err
    summary = json.loads((work / "summary.json").read_text())
    assert summary["engine"] == "fused"
    assert train.main([*common, "--resume", "--engine", "auto", "--max-steps", "200"]) == 0
    assert load_checkpoint(work)["config"]["engine"] == "fused"
    assert train.main([*common, "--resume", "--engine", "ops", "--max-steps", "300"]) == 2
    assert "--engine cannot change on --resume" in capsys.readouterr().err


def test_fused_engine_refuses_an_optimizer_it_does_not_run(tmp_path, capsys):
    # it updates with plain SGD in the kernel: adamw would be ignored, silently
    assert train.main([*FAST, "-i", str(names_path()), "-o", str(tmp_path / "w"),
                       "--engine", "fused", "--optimizer", "adamw", "--max-steps", "10"]) == 2
    assert "--engine fused runs plain SGD (--optimizer sgd)" in capsys.readouterr().err
