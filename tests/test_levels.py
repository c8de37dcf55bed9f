"""The CPU kernels' instruction-set levels: chosen at load time, forced by PYMAKEMORE_CPU_LEVEL
or set_cpu_level, each giving the same results as the others."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT
from pymakemore import _C, ops

LEVELS = ["portable", "avx2", "avx512"]
RUNNABLE = LEVELS[:LEVELS.index(_C.best_cpu_level()) + 1]


@pytest.fixture
def level():
    """Yields a function that sets the level; the level in force before is put back after."""
    before = _C.cpu_level()
    yield _C.set_cpu_level
    _C.set_cpu_level(before)


def _in_subprocess(code, level):
    env = {**os.environ, "PYMAKEMORE_CPU_LEVEL": level}
    return subprocess.run([sys.executable, "-c", "import torch, pymakemore\n" + code],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def test_environment_variable_chooses_the_level():
    for name in RUNNABLE:
        proc = _in_subprocess("print(pymakemore._C.cpu_level())", name)
        assert proc.returncode == 0 and proc.stdout.strip() == name, proc.stderr


def test_a_bad_level_is_a_clear_error_at_the_first_kernel():
    code = "pymakemore.ops.linear(torch.randn(2, 3), torch.randn(4, 3))"
    proc = _in_subprocess(code, "avx3")
    assert proc.returncode != 0
    assert "PYMAKEMORE_CPU_LEVEL=avx3: not a level (portable, avx2, avx512)" in proc.stderr


def test_set_cpu_level_refuses_unknown_names(level):
    with pytest.raises(ValueError, match="not a level"):
        level("sse9")


@pytest.mark.skipif(len(RUNNABLE) == len(LEVELS), reason="this CPU runs every level")
def test_a_level_above_the_cpu_is_refused(level):
    with pytest.raises(ValueError, match="runs at most"):
        level(LEVELS[len(RUNNABLE)])


def _all_ops(device="cpu"):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(70, 30, generator=g, requires_grad=True)
    w = torch.randn(200, 30, generator=g, requires_grad=True)
    b = torch.randn(200, generator=g, requires_grad=True)
    w2 = torch.randn(27, 200, generator=g, requires_grad=True)
    emb = torch.randn(27, 10, generator=g, requires_grad=True)
    idx = torch.randint(0, 27, (70, 3), generator=g)
    t = torch.randint(0, 27, (70,), generator=g)
    e = ops.embedding(idx, emb).view(70, 30)
    h = ops.linear_tanh(x + e, w, b)
    loss = ops.cross_entropy(ops.linear(h, w2), t, label_smoothing=0.1)
    loss.backward()
    return [loss.detach(), h.detach(), x.grad, w.grad, b.grad, w2.grad, emb.grad]


@pytest.mark.parametrize("name", RUNNABLE)
def test_every_level_gives_the_same_results(level, name):
    level("portable")
    want = _all_ops()
    level(name)
    assert _C.cpu_level() == name
    for got, ref in zip(_all_ops(), want):
        torch.testing.assert_close(got, ref, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", RUNNABLE)
def test_every_level_matches_functional(level, name):
    level(name)
    x = torch.randn(64, 50304) * 3
    t = torch.randint(0, 50304, (64,))
    torch.testing.assert_close(ops.cross_entropy(x, t), F.cross_entropy(x, t))
    a, w = torch.randn(37, 129), torch.randn(65, 129)
    torch.testing.assert_close(ops.linear_tanh(a, w), torch.tanh(F.linear(a, w)), rtol=2e-5,
                               atol=2e-5)


@pytest.mark.parametrize("name", RUNNABLE)
@pytest.mark.parametrize("classes", [50304, 262144])
def test_large_vocabulary_accuracy_against_float64(level, name, classes):
    # as accurate as torch (within 2x) against a float64 reference, row losses and gradient
    level(name)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, classes, generator=g) * 3
    t = torch.randint(0, classes, (16,), generator=g)
    x64 = x.double().requires_grad_()
    ref = F.cross_entropy(x64, t, reduction="none")
    ref.sum().backward()

    def errors(fn):
        leaf = x.clone().requires_grad_()
        loss = fn(leaf, t, reduction="none")
        loss.sum().backward()
        return (((loss.double() - ref) / ref).abs().max().item(),
                (leaf.grad.double() - x64.grad).abs().max().item())

    (ours_loss, ours_grad), (torch_loss, torch_grad) = errors(ops.cross_entropy), \
        errors(F.cross_entropy)
    assert ours_loss <= 2 * torch_loss + 1e-7
    assert ours_grad <= 2 * torch_grad + 1e-8
