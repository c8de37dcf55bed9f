"""gradcheck in float64, torch.library.opcheck on every op, and a small MLP on all the ops
under torch.compile(fullgraph=True) against eager torch.nn.functional."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from conftest import DEVICES
from pymakemore import ops

OPS = torch.ops.pymakemore


def _f64(*shape, device="cpu"):
    return torch.randn(*shape, device=device, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
def test_gradcheck_embedding(device, index_dtype):
    # (padding_idx and scale_grad_by_freq alter the gradient on purpose; they are compared
    # with F.embedding in test_embedding.py instead)
    idx = torch.randint(0, 6, (5, 3), device=device, dtype=index_dtype)
    weight = _f64(6, 4, device=device)
    assert gradcheck(lambda w: ops.embedding(idx, w), (weight,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("fn", [ops.linear_tanh, ops.linear], ids=["linear_tanh", "linear"])
def test_gradcheck_linear(device, with_bias, fn):
    x, w = _f64(3, 4, 7, device=device), _f64(5, 7, device=device)
    b = _f64(5, device=device) if with_bias else None
    inputs = (x, w, b) if with_bias else (x, w)
    assert gradcheck(fn, inputs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
@pytest.mark.parametrize("with_weight", [False, True])
def test_gradcheck_cross_entropy(device, reduction, label_smoothing, with_weight):
    x = _f64(6, 5, device=device)
    t = torch.tensor([0, 4, -100, 2, 2, 1], device=device)
    w = torch.rand(5, device=device, dtype=torch.float64) + 0.5 if with_weight else None
    assert gradcheck(lambda logits: ops.cross_entropy(
        logits, t, weight=w, reduction=reduction, label_smoothing=label_smoothing), (x,))


def _opcheck_cases(device):
    idx = torch.randint(0, 7, (4, 3), device=device)
    x = torch.randn(6, 5, device=device, requires_grad=True)
    t = torch.tensor([0, 4, -100, 2, 2, 1], device=device)
    lse = OPS.cross_entropy(x.detach(), t)[1]
    return [
        (OPS.embedding, (idx, torch.randn(7, 4, device=device, requires_grad=True))),
        (OPS.embedding, (idx.int(), torch.randn(7, 4, device=device, requires_grad=True), 1,
                         True)),
        (OPS.embedding_backward, (torch.randn(4, 3, 4, device=device), idx, 7, -1, False)),
        (OPS.linear_tanh, (torch.randn(3, 2, 5, device=device, requires_grad=True),
                           torch.randn(4, 5, device=device, requires_grad=True),
                           torch.randn(4, device=device, requires_grad=True))),
        (OPS.linear_tanh, (torch.randn(3, 5, device=device, requires_grad=True),
                           torch.randn(4, 5, device=device, requires_grad=True), None)),
        (OPS.linear, (torch.randn(3, 2, 5, device=device, requires_grad=True),
                      torch.randn(4, 5, device=device, requires_grad=True),
                      torch.randn(4, device=device, requires_grad=True))),
        (OPS.linear_backward, (torch.randn(3, 4, device=device),
                               torch.randn(3, 5, device=device),
                               torch.randn(4, 5, device=device), [True, True, False])),
        (OPS.linear_tanh_backward, (torch.randn(3, 4, device=device),
                                    torch.rand(3, 4, device=device),
                                    torch.randn(3, 5, device=device),
                                    torch.randn(4, 5, device=device), [True, False, True])),
        (OPS.cross_entropy, (x, t, None, "mean", -100, 0.1)),
        (OPS.cross_entropy, (x, t.int(), torch.rand(5, device=device), "none", -100, 0.0)),
        (OPS.cross_entropy_backward, (torch.tensor(1.0, device=device), x.detach(), t, None,
                                      lse, "mean", -100, 0.0)),
        (OPS.cross_entropy_with_grad, (x.detach(), t, None, "sum", -100, 0.1)),
        (OPS.scale_grad_, (torch.randn(6, 5, device=device), torch.tensor(0.5, device=device))),
    ]


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_every_op(device):
    seen = set()
    for op, args in _opcheck_cases(device):
        torch.library.opcheck(op, args)
        seen.add(op._name if hasattr(op, "_name") else str(op))
    assert len(seen) == 10, seen


class TinyMLP(torch.nn.Module):
    """The makemore MLP shape: embedding -> linear+tanh -> linear -> cross entropy."""

    def __init__(self, fused, vocab=27, block=3, n_embd=10, n_hidden=200):
        super().__init__()
        self.fused = fused
        self.C = torch.nn.Parameter(torch.randn(vocab, n_embd))
        self.W1 = torch.nn.Parameter(torch.randn(n_hidden, block * n_embd) * 0.2)
        self.b1 = torch.nn.Parameter(torch.randn(n_hidden) * 0.01)
        self.W2 = torch.nn.Parameter(torch.randn(vocab, n_hidden) * 0.01)
        self.b2 = torch.nn.Parameter(torch.zeros(vocab))

    def forward(self, x, y):
        if self.fused:
            emb = ops.embedding(x, self.C)
            h = ops.linear_tanh(emb.view(x.shape[0], -1), self.W1, self.b1)
            return ops.cross_entropy(ops.linear(h, self.W2, self.b2), y)
        emb = F.embedding(x, self.C)
        h = torch.tanh(F.linear(emb.view(x.shape[0], -1), self.W1, self.b1))
        return F.cross_entropy(F.linear(h, self.W2, self.b2), y)


@pytest.mark.parametrize("device", DEVICES)
def test_mlp_under_torch_compile_matches_eager_functional(device):
    torch._dynamo.reset()
    eager = TinyMLP(fused=False).to(device)
    fused = TinyMLP(fused=True).to(device)
    fused.load_state_dict(eager.state_dict())
    compiled = torch.compile(fused, fullgraph=True)
    for _ in range(3):  # several batches: the compiled graph is reused
        x = torch.randint(0, 27, (32, 3), device=device)
        y = torch.randint(0, 27, (32,), device=device)
        loss_ref = eager(x, y)
        grads_ref = torch.autograd.grad(loss_ref, list(eager.parameters()))
        loss = compiled(x, y)
        grads = torch.autograd.grad(loss, list(fused.parameters()))
        torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-5)
        for g, g_ref in zip(grads, grads_ref):
            torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)


def test_compiled_graph_still_checks_indices():
    torch._dynamo.reset()
    fn = torch.compile(lambda i, w: ops.embedding(i, w).sum(), fullgraph=True)
    w = torch.randn(5, 3)
    fn(torch.tensor([0, 4]), w)
    with pytest.raises(IndexError, match="index 5"):
        fn(torch.tensor([0, 5]), w)


# ---- higher-order gradients --------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_gradgradcheck_cross_entropy(reduction, label_smoothing, weighted):
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 3, -100, 1, 2])
    w = torch.rand(4, dtype=torch.float64) + 0.5 if weighted else None
    fn = lambda x: ops.cross_entropy(x, t, weight=w, reduction=reduction,  # noqa: E731
                                     label_smoothing=label_smoothing)
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("name", ["linear", "linear_tanh"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_gradgradcheck_linear(name, with_bias):
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True) if with_bias else None
    args = (x, w, b) if with_bias else (x, w)
    assert torch.autograd.gradgradcheck(getattr(ops, name), args)


# (not scale_grad_by_freq: torch's own double backward of it fails this check too)
@pytest.mark.parametrize("padding_idx,scale", [(None, False), (2, False), (-1, False)])
def test_gradgradcheck_embedding(padding_idx, scale):
    idx = torch.tensor([[0, 2, 2], [4, 1, 0]])
    w = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    fn = lambda w: ops.embedding(idx, w, padding_idx=padding_idx,  # noqa: E731
                                 scale_grad_by_freq=scale) ** 2
    assert torch.autograd.gradgradcheck(fn, (w,))


def test_hessian_and_hvp_match_functional():
    x = torch.randn(3, 5, dtype=torch.float64)
    t = torch.tensor([1, 4, 0])
    w, v = torch.randn(6, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    for f_ours, f_torch in (
            (lambda x: ops.cross_entropy(x, t, label_smoothing=0.1),
             lambda x: F.cross_entropy(x, t, label_smoothing=0.1)),
            (lambda x: ops.linear_tanh(x, w).pow(2).sum(),
             lambda x: torch.tanh(F.linear(x, w)).pow(2).sum())):
        ours = torch.autograd.functional.hessian(f_ours, x)
        assert ours.abs().max() > 1e-3  # not the zeros of a backward without a graph
        torch.testing.assert_close(ours, torch.autograd.functional.hessian(f_torch, x))
        torch.testing.assert_close(torch.autograd.functional.hvp(f_ours, x, v)[1],
                                   torch.autograd.functional.hvp(f_torch, x, v)[1])


def test_gradient_penalty_trains_like_functional():
    # a gradient penalty (WGAN-GP style): d/dw of |d loss / d x|^2
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 1, 2, 1])
    results = []
    for lin, ce in ((ops.linear, ops.cross_entropy), (F.linear, F.cross_entropy)):
        w = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0),
                        requires_grad=True)
        (gx,) = torch.autograd.grad(ce(lin(x, w), t), x, create_graph=True)
        (gw,) = torch.autograd.grad(gx.pow(2).sum(), w)
        results.append(gw)
    torch.testing.assert_close(results[0], results[1])


# ---- torch.func and forward-mode AD -------------------------------------------------------------
def _func_cases():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, dtype=torch.float64, generator=g)
    w = torch.randn(3, 5, dtype=torch.float64, generator=g)
    b = torch.randn(3, dtype=torch.float64, generator=g)
    t = torch.tensor([0, 2, 1, 2])
    idx = torch.tensor([[0, 2], [1, 1]])
    return x, [
        ("cross_entropy", lambda x: ops.cross_entropy(x[:, :3], t, label_smoothing=0.1),
         lambda x: F.cross_entropy(x[:, :3], t, label_smoothing=0.1)),
        ("linear_tanh", lambda x: ops.linear_tanh(x, w, b).sum(),
         lambda x: torch.tanh(F.linear(x, w, b)).sum()),
        ("linear", lambda x: ops.linear(x, w).pow(2).sum(), lambda x: F.linear(x, w).pow(2).sum()),
        ("embedding", lambda x: ops.embedding(idx, x).pow(2).sum(),
         lambda x: F.embedding(idx, x).pow(2).sum()),
    ]


@pytest.mark.parametrize("case", range(4))
def test_torch_func_transforms_match_functional(case):
    x, cases = _func_cases()
    _, ours, theirs = cases[case]
    v = torch.randn_like(x)
    torch.testing.assert_close(torch.func.grad(ours)(x), torch.func.grad(theirs)(x))
    torch.testing.assert_close(torch.func.jacrev(torch.func.grad(ours))(x),
                               torch.func.jacrev(torch.func.grad(theirs))(x))
    torch.testing.assert_close(torch.func.jvp(ours, (x,), (v,)),
                               torch.func.jvp(theirs, (x,), (v,)))
    torch.testing.assert_close(torch.func.jacfwd(ours)(x), torch.func.jacfwd(theirs)(x))
    _, vjp_fn = torch.func.vjp(ours, x)
    _, vjp_ref = torch.func.vjp(theirs, x)
    torch.testing.assert_close(vjp_fn(torch.tensor(1.5, dtype=x.dtype)),
                               vjp_ref(torch.tensor(1.5, dtype=x.dtype)))


@pytest.mark.parametrize("case", range(4))
def test_a_compiled_function_that_transforms_the_ops(case):
    # torch.compile of code that itself calls torch.func on the ops: the composites run there
    x, cases = _func_cases()
    _, ours, theirs = cases[case]
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: torch.func.grad(ours)(x), fullgraph=True)
    torch.testing.assert_close(compiled(x), torch.func.grad(theirs)(x))


def test_compile_alone_still_runs_the_fused_ops():
    x, cases = _func_cases()
    graphs = []

    def backend(graph_module, example_inputs):
        graphs.append(graph_module.code)
        return graph_module

    torch._dynamo.reset()
    torch.compile(cases[0][1], backend=backend, fullgraph=True)(x)
    assert "pymakemore" in graphs[0] and "cross_entropy" in graphs[0]


def test_vmap_has_no_fallback_and_matches_functional():
    xs = torch.randn(6, 4, 5)
    t = torch.tensor([0, 1, 2, 0])
    w = torch.randn(3, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the slow per-sample fallback warns
        ours = torch.vmap(lambda x: ops.cross_entropy(ops.linear_tanh(x, w), t))(xs)
    theirs = torch.vmap(lambda x: F.cross_entropy(torch.tanh(F.linear(x, w)), t))(xs)
    torch.testing.assert_close(ours, theirs)


def test_forward_mode_ad_matches_functional():
    import torch.autograd.forward_ad as fwAD
    x, t = torch.randn(4, 6, dtype=torch.float64), torch.tensor([0, 5, 2, 1])
    tangent = torch.randn_like(x)
    results = []
    for ce in (ops.cross_entropy, F.cross_entropy):
        with fwAD.dual_level():
            out = ce(fwAD.make_dual(x, tangent), t)
            results.append(fwAD.unpack_dual(out).tangent)
    torch.testing.assert_close(results[0], results[1])
