"""The fused engine of the BatchNorm models (chain_train_steps, bnmlp and wavenet): the same
maths as the op-by-op path, running statistics included; the same numbers on one or two
threads and in any blocks; the published draws; clear errors; the trainer's runs on it."""
import json

import pytest
import torch

from conftest import names_path, sgd_steps_by_autograd
from pymakemore import diagnostics, engines, train
from pymakemore.checkpoint import load_checkpoint
from pymakemore.models import BNMLP, WaveNet

FAST = ["--device", "cpu", "--quiet", "--num-samples", "0", "--eval-every", "0",
        "--log-every", "50"]

# (model, vocabulary, block): the lectures' sizes, and odd ones (units that fill no whole
# register tile, a bias before the BatchNorm, several layers)
CASES = {
    "bnmlp": (lambda: BNMLP(27, 3, 10, 200), 27, 3),
    "bnmlp-3-layers-bias": (lambda: BNMLP(27, 3, 10, 37, n_layer=3, hidden_bias=True), 27, 3),
    "wavenet": (lambda: WaveNet(27, 8, 24, 128), 27, 8),
    "wavenet-odd": (lambda: WaveNet(11, 4, 5, 13), 11, 4),
}


def _data(vocab, block, n=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, vocab, (n, block), generator=g),
            torch.randint(0, vocab, (n,), generator=g))


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("batch", [32, 7])
@pytest.mark.parametrize("case", CASES)
def test_chain_steps_match_op_by_op_steps(case, batch):
    make, vocab, block = CASES[case]
    x, y = _data(vocab, block)
    steps = 25
    idx = engines.batch_indices(7, 0, steps, batch, len(x))
    lrs = torch.full((steps,), 0.1)
    lrs[15:] = 0.01
    fused, ref = make(), make()
    losses = engines.fused_steps(fused, x, y, lrs, batch, 0, 7, batch_indices=idx)
    ref_losses = sgd_steps_by_autograd(ref, x, y, idx, lrs)
    torch.testing.assert_close(losses, ref_losses, rtol=1e-4, atol=1e-4)
    expected = _state(ref)
    for name, value in _state(fused).items():
        torch.testing.assert_close(value, expected[name], rtol=1e-3, atol=1e-4, msg=name)
    assert not torch.equal(fused.norms[0].running_mean, torch.zeros_like(ref.norms[0].running_mean))


@pytest.mark.parametrize("case", ["bnmlp-3-layers-bias", "wavenet"])
def test_threads_spins_and_blocks_give_identical_steps(case, monkeypatch):
    make, vocab, block = CASES[case]
    x, y = _data(vocab, block)
    lrs = torch.full((60,), 0.1)
    threads = torch.get_num_threads()
    results = []
    try:
        # one thread; two threads; two that sleep at every barrier; two blocks of steps
        for n, spin, blocks in [(1, "200", [60]), (2, "200", [60]), (2, "0", [60]),
                                (2, "200", [23, 37])]:
            monkeypatch.setenv("PYMAKEMORE_ENGINE_SPIN_US", spin)
            torch.set_num_threads(n)
            model, losses, first = make(), [], 0
            for size in blocks:
                losses.append(engines.fused_steps(model, x, y, lrs[first:first + size], 16,
                                                  first, 5))
                first += size
            results.append((torch.cat(losses), _state(model)))
    finally:
        torch.set_num_threads(threads)
    base_losses, base_state = results[0]
    for losses, state in results[1:]:
        assert torch.equal(losses, base_losses)
        for name, value in state.items():
            assert torch.equal(value, base_state[name]), name


def test_internal_draws_are_the_published_indices():
    make, vocab, block = CASES["wavenet-odd"]
    x, y = _data(vocab, block)
    a, b = make(), make()
    lrs = torch.full((30,), 0.1)
    la = engines.fused_steps(a, x, y, lrs, 16, 5, 99)
    lb = engines.fused_steps(b, x, y, lrs, 16, 5, 99,
                             batch_indices=engines.batch_indices(99, 5, 30, 16, len(x)))
    assert torch.equal(la, lb)
    for name, value in _state(a).items():
        assert torch.equal(value, _state(b)[name]), name


def _op_args(model, x, y, lrs, batch_size=4, groups=None):
    norms = list(model.norms)
    return ([model.C.detach(), [m.weight.detach() for m in model.hidden], [],
             [n.gain.detach() for n in norms], [n.bias.detach() for n in norms],
             [n.running_mean for n in norms], [n.running_var for n in norms],
             model.out.weight.detach(), model.out.bias.detach(), x, y, lrs,
             groups if groups is not None else [model.block_size], 0.1, 1e-5, True, batch_size,
             0, 3, None])


def test_bad_inputs_to_the_chain_op():
    x, y = _data(27, 3)
    model = BNMLP(27)
    lrs = torch.full((3,), 0.1)
    op = torch.ops.pymakemore.chain_train_steps
    with pytest.raises(IndexError, match="character id 30 in X is out of range"):
        engines.fused_steps(model, torch.full_like(x, 30), y, lrs, 4, 0, 1)
    with pytest.raises(IndexError, match="character id -1 in Y"):
        engines.fused_steps(model, x, torch.full_like(y, -1), lrs, 4, 0, 1)
    with pytest.raises(IndexError, match="batch index 500 is out of range"):
        engines.fused_steps(model, x, y, lrs, 2, 0, 1,
                            batch_indices=torch.full((3, 2), 500, dtype=torch.long))
    with pytest.raises(RuntimeError, match=r"batch_indices must have shape \[3, 2\]"):
        engines.fused_steps(model, x, y, lrs, 2, 0, 1,
                            batch_indices=torch.zeros((3, 5), dtype=torch.long))
    with pytest.raises(RuntimeError, match="need batch_size >= 2"):
        engines.fused_steps(model, x, y, lrs, 1, 0, 1)
    with pytest.raises(RuntimeError, match=r"weights\[0\] must have shape \[200, 30\]"):
        args = _op_args(model, x, y, lrs)
        args[1] = [torch.zeros(200, 31)]
        op(*args)
    with pytest.raises(RuntimeError, match=r"groups\[0\] = 4 does not divide the 3 "):
        engines.fused_steps(BNMLP(27, block_size=4), x, y, lrs, 4, 0, 1)
    with pytest.raises(RuntimeError, match="X must be a contiguous Long"):
        engines.fused_steps(model, x.int(), y, lrs, 4, 0, 1)
    with pytest.raises(RuntimeError, match="C must be a contiguous Float CPU tensor, but got "
                                           "Double"):
        engines.fused_steps(BNMLP(27).double(), x, y, lrs, 4, 0, 1)
    with pytest.raises(RuntimeError, match=r"groups\[0\] = 2 does not divide the 3 positions"):
        op(*_op_args(model, x, y, lrs, groups=[2]))
    with pytest.raises(RuntimeError, match="leave one position of the 3, but leave 3"):
        op(*_op_args(BNMLP(27, block_size=1), x, y, lrs, groups=[1]))
    with pytest.raises(RuntimeError, match="one entry per weight"):
        op(*_op_args(model, x, y, lrs, groups=[3, 1]))
    with pytest.raises(TypeError, match="runs MLP, BNMLP and WaveNet models, not Linear"):
        engines.fused_steps(torch.nn.Linear(2, 2), x, y, lrs, 4, 0, 1)
    # nothing was trained by the refused calls
    assert torch.equal(model.C, BNMLP(27).C)


def test_opcheck_chain_op():
    x, y = _data(27, 3, n=50)
    model = BNMLP(27, n_hidden=16)
    for record in (None, torch.tensor([True, False, True])):
        args = _op_args(model, x, y, torch.full((3,), 0.1)) + [record]
        args[:9] = [a.clone() if isinstance(a, torch.Tensor) else [t.clone() for t in a]
                    for a in args[:9]]
        torch.library.opcheck(torch.ops.pymakemore.chain_train_steps.default, tuple(args),
                              test_utils=("test_schema", "test_faketensor"))
    losses, sums = torch.ops.pymakemore.chain_train_steps(*args)
    assert losses.shape == (3,) and sums.shape == (2, 3, 4) and sums.dtype == torch.float64


@pytest.mark.parametrize("case", ["bnmlp", "wavenet-odd"])
def test_update_ratios_from_the_engine_match_the_gradients(case):
    make, vocab, block = CASES[case]
    x, y = _data(vocab, block)
    a, b = make(), make()
    steps = 5
    idx = engines.batch_indices(3, 998, steps, 32, len(x))
    ra, rb = diagnostics.UpdateRatios(a), diagnostics.UpdateRatios(b)
    # steps 998..1002: the first two and step 1000 are recorded, 1001 and 1002 are not
    engines.fused_steps(a, x, y, torch.full((steps,), 0.1), 32, 998, 3, batch_indices=idx,
                        ratios=ra)
    assert ra.steps == [998, 999, 1000]
    for s in range(steps):
        _, loss = b(x[idx[s]], y[idx[s]])
        b.zero_grad()
        loss.backward()
        if rb.wanted(998 + s):
            rb.record(998 + s, 0.1)
        with torch.no_grad():
            for p in b.parameters():
                p -= 0.1 * p.grad
    assert rb.steps == ra.steps and len(ra.values[0]) == len(ra.names) == len(list(
        diagnostics.weights(a)))
    for got, expected in zip(ra.values, rb.values):
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="records no update:data ratios"):
        from pymakemore.models import MLP
        model = MLP(27)
        engines.fused_steps(model, *_data(27, 3), torch.full((1,), 0.1), 4, 0, 1,
                            ratios=diagnostics.UpdateRatios(model))


@pytest.mark.parametrize("preset,steps,first", [("bnmlp", 1200, 700), ("wavenet", 300, 100)])
def test_trainer_runs_the_presets_on_the_chain_engine_and_resumes_exactly(tmp_path, preset,
                                                                           steps, first):
    common = [*FAST, "-i", str(names_path()), "--preset", preset, "--lr-decay-at",
              str(steps // 2)]
    straight, split = tmp_path / "a", tmp_path / "b"
    assert train.main([*common, "-o", str(straight), "--max-steps", str(steps)]) == 0
    assert train.main([*common, "-o", str(split), "--max-steps", str(first)]) == 0
    assert train.main([*FAST, "-o", str(split), "--resume", "--max-steps", str(steps)]) == 0
    a, b = load_checkpoint(straight), load_checkpoint(split)
    assert a["config"]["engine"] == "fused"
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    assert a["losses"][-100:].mean() < 2.9
    if preset == "bnmlp":  # its preset keeps the diagnostics on: the engine feeds them
        ratios = a["update_ratios"]
        assert ratios["steps"] == [*range(1000), 1000, 1100]
        assert ratios["values"].shape == (1002, 3)
        assert torch.equal(ratios["values"], b["update_ratios"]["values"])
        assert torch.isfinite(ratios["values"]).all()
        report = json.loads((straight / "diagnostics.json").read_text())
        assert -4.5 < report["update_ratio_final"]["hidden.0.weight"] < -1.5


def test_a_long_block_runs_in_short_calls_with_the_same_numbers(tmp_path, monkeypatch):
    # between the engine's calls Python runs (a second Ctrl-C stops at once); how a block is
    # cut into calls changes no number
    common = [*FAST, "-i", str(names_path()), "--preset", "wavenet", "--max-steps", "120",
              "--log-every", "120", "--lr-decay-at", "60"]
    calls = []
    real = engines.fused_steps

    def counted(*args, **kwargs):
        calls.append(len(args[3]))
        return real(*args, **kwargs)

    monkeypatch.setattr(engines, "fused_steps", counted)
    assert train.main([*common, "-o", str(tmp_path / "a")]) == 0
    assert calls == [60, 60]  # the blocks: up to the decay step, then the rest
    monkeypatch.setattr(engines, "FUSED_CALL_STEPS", 25)
    calls.clear()
    assert train.main([*common, "-o", str(tmp_path / "b")]) == 0
    assert calls == [25, 25, 10, 25, 25, 10]
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
