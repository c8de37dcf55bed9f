"""ops.linear_cross_entropy against the composite F.cross_entropy(F.linear(...)) and the
reference: forward, every gradient, every option and dtype, chunk boundaries, errors, compile,
tied weights, and a memory bound that fails if the N x V logits are ever allocated."""
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from conftest import DEVICES, HAS_CUDA, ROOT, assert_close, dtypes_for
from pymakemore import nn as pmnn
from pymakemore import ops, reference

OPTIONS = [{}, dict(label_smoothing=0.1), dict(softcap=3.0), dict(z_loss=1e-3),
           dict(label_smoothing=0.2, softcap=2.0, z_loss=0.01)]


def composite(x, w, t, b=None, ignore_index=-100, reduction="mean", label_smoothing=0.0,
              softcap=None, z_loss=0.0):
    """What a user writes without the fused op: torch's own functions."""
    logits = F.linear(x, w, b)
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    loss = F.cross_entropy(logits, t, ignore_index=ignore_index, reduction="none",
                           label_smoothing=label_smoothing)
    if z_loss:
        lse = torch.logsumexp(logits, dim=-1)
        loss = loss + torch.where(t != ignore_index, z_loss * lse * lse, torch.zeros_like(lse))
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / (t != ignore_index).sum()


def _grads(fn, x, w, t, b, grad=None, **kw):
    leaves = [p.detach().clone().requires_grad_(True) for p in (x, w, b) if p is not None]
    bias = leaves[2] if b is not None else None
    loss = fn(leaves[0], leaves[1], t, bias, **kw)
    loss.backward(torch.ones_like(loss) if grad is None else grad)
    return loss.detach(), [p.grad for p in leaves]


def _case(n, d, v, device, dtype, ignore_frac=0.2, ignore_index=-100):
    x = torch.randn(n, d, device=device, dtype=dtype)
    w = torch.randn(v, d, device=device, dtype=dtype) / d ** 0.5
    b = torch.randn(v, device=device, dtype=dtype) * 0.1
    t = torch.randint(0, v, (n,), device=device)
    if n:
        t[torch.rand(n, device=device) < ignore_frac] = ignore_index
    return x, w, t, b


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1, 1, 2), (37, 16, 11), (0, 8, 5), (64, 3, 27), (5, 30, 1)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", range(len(OPTIONS)))
@pytest.mark.parametrize("with_bias", [True, False])
def test_matches_the_composite_and_the_reference(device, shape, reduction, options, with_bias):
    kw = dict(reduction=reduction, **OPTIONS[options])
    for dtype in dtypes_for(device):
        x, w, t, b = _case(*shape, device, dtype)
        b = b if with_bias else None
        grad = torch.randn(shape[0], device=device, dtype=dtype) if reduction == "none" \
            else torch.tensor(1.7, device=device, dtype=dtype)
        loss, grads = _grads(ops.linear_cross_entropy, x, w, t, b, grad, **kw)
        loss_c, grads_c = _grads(composite, x, w, t, b, grad, **kw)
        assert loss.dtype == loss_c.dtype and loss.shape == loss_c.shape
        scale = max(1.0, shape[0] ** 0.5) if reduction == "sum" else 1.0
        assert_close(loss, loss_c, dtype, scale * 4)
        for g, g_c in zip(grads, grads_c):
            assert_close(g, g_c, dtype, 4)
        if dtype == torch.float64:
            loss_r, grads_r = _grads(reference.linear_cross_entropy, x, w, t, b, grad, **kw)
            assert_close(loss, loss_r, dtype, scale * 4)
            for g, g_r in zip(grads, grads_r):
                assert_close(g, g_r, dtype, 4)


@pytest.mark.parametrize("classes", [2, 1000, 50304, 262144])
def test_vocabularies_up_to_262144_over_several_chunks(classes):
    # enough rows for several chunks at the large vocabularies (a chunk holds about 4M logits)
    n = max(8, min(80, (3 << 22) // classes + 5))
    x, w, t, b = _case(n, 4, classes, "cpu", torch.float64)
    for reduction in ("mean", "none"):
        grad = torch.randn(n, dtype=torch.float64) if reduction == "none" else None
        loss, grads = _grads(ops.linear_cross_entropy, x, w, t, b, grad, reduction=reduction,
                             z_loss=1e-4, label_smoothing=0.1)
        loss_c, grads_c = _grads(composite, x, w, t, b, grad, reduction=reduction, z_loss=1e-4,
                                 label_smoothing=0.1)
        assert_close(loss, loss_c, torch.float64, 4)
        for g, g_c in zip(grads, grads_c):
            assert_close(g, g_c, torch.float64, 4)


def test_all_rows_ignored_gives_nan_mean_and_zero_gradients():
    x, w, _, b = _case(6, 5, 7, "cpu", torch.float32)
    t = torch.full((6,), -100)
    for fn in (ops.linear_cross_entropy, composite):
        loss, grads = _grads(fn, x, w, t, b)
        assert torch.isnan(loss)
        assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)
    loss, _ = _grads(ops.linear_cross_entropy, x, w, t, b, reduction="sum")
    assert loss.item() == 0.0


def test_ignore_index_and_int32_targets():
    x, w, t, b = _case(40, 6, 9, "cpu", torch.float64, ignore_index=3)
    for targets in (t, t.int()):
        loss, grads = _grads(ops.linear_cross_entropy, x, w, targets, b, ignore_index=3)
        loss_c, grads_c = _grads(composite, x, w, t, b, ignore_index=3)
        assert_close(loss, loss_c, torch.float64)
        for g, g_c in zip(grads, grads_c):
            assert_close(g, g_c, torch.float64)


def test_unbatched_input():
    x, w, t, b = _case(1, 6, 9, "cpu", torch.float64, ignore_frac=0)
    for reduction in ("mean", "none"):
        a = ops.linear_cross_entropy(x[0], w, t[0], b, reduction=reduction)
        c = composite(x[0], w, t[0], b, reduction=reduction)
        assert a.shape == c.shape == ()
        assert_close(a, c, torch.float64)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck_and_gradgradcheck(reduction):
    x, w, t, b = _case(13, 5, 7, "cpu", torch.float64)
    x, w, b = (p.requires_grad_() for p in (x, w, b))

    def fn(x, w, b):
        return ops.linear_cross_entropy(x, w, t, b, reduction=reduction,
                                        **OPTIONS[-1])
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_a_retained_graph_backs_up_twice_with_the_same_gradients():
    x, w, t, b = _case(20, 6, 9, "cpu", torch.float32)
    x.requires_grad_()
    loss = ops.linear_cross_entropy(x, w, t, b)
    first, = torch.autograd.grad(loss * 2, x, retain_graph=True)
    second, = torch.autograd.grad(loss * 2, x)
    assert torch.equal(first, second)


def test_only_the_gradients_asked_for():
    x, w, t, b = _case(20, 6, 9, "cpu", torch.float32)
    w.requires_grad_()
    ops.linear_cross_entropy(x, w, t, b).backward()
    assert w.grad is not None and x.grad is None and b.grad is None
    _, _, gx, gw, gb = torch.ops.pymakemore.linear_cross_entropy(
        x, w, t, b, None, -100, "mean", 0.0, None, 0.0, [False, True, False])
    assert gx.numel() == 0 and gw.shape == w.shape and gb.numel() == 0


def test_tied_embedding_and_head_weights():
    # the GPT's way: the token table is the head's weight; its gradient adds both uses
    vocab, dim = 11, 8
    table = torch.randn(vocab, dim, dtype=torch.float64)
    idx = torch.randint(0, vocab, (30,))
    t = torch.randint(0, vocab, (30,))
    found = []
    for loss_fn in (ops.linear_cross_entropy, composite):
        w = table.clone().requires_grad_()
        h = torch.tanh(F.embedding(idx, w) * 1.5)
        loss_fn(h, w, t).backward()
        found.append(w.grad)
    assert_close(found[0], found[1], torch.float64)


def test_module_matches_the_functional():
    x, w, t, b = _case(9, 4, 6, "cpu", torch.float64)
    loss_fn = pmnn.LinearCrossEntropyLoss(reduction="sum", softcap=5.0, z_loss=1e-3)
    assert_close(loss_fn(x, w, t, b),
                 ops.linear_cross_entropy(x, w, t, b, reduction="sum", softcap=5.0,
                                          z_loss=1e-3), torch.float64)


def test_opcheck():
    x, w, t, b = _case(9, 4, 6, "cpu", torch.float32)
    x.requires_grad_()
    w.requires_grad_()
    class_weight = torch.rand(6) + 0.5
    for mask in ([False, False, False], [True, True, True]):
        for cw in (None, class_weight):
            torch.library.opcheck(torch.ops.pymakemore.linear_cross_entropy,
                                  (x, w, t, b, cw, -100, "mean", 0.1, 2.0, 1e-3, mask))
    for grad_lse in (None, torch.randn(9)):
        torch.library.opcheck(torch.ops.pymakemore.linear_cross_entropy_backward,
                              (torch.randn(9), grad_lse, x.detach(), w.detach(), t, b,
                               class_weight, -100, "none", 0.0, None, 0.0, [True, True, True]))
        torch.library.opcheck(torch.ops.pymakemore.linear_cross_entropy_backward,
                              (torch.randn(()), grad_lse, x.detach(), w.detach(), t, b, None,
                               -100, "mean", 0.1, 2.0, 1e-3, [True, True, True]))


def test_torch_compile_fullgraph():
    x, w, t, b = _case(24, 8, 10, "cpu", torch.float32)

    def step(x, w, b, t):
        return ops.linear_cross_entropy(torch.relu(x), w, t, b, softcap=4.0)
    compiled = torch.compile(step, fullgraph=True)
    for fn in (step, compiled):
        loss, grads = _grads(lambda x, w, t, b: fn(x, w, b, t), x, w, t, b)
        if fn is step:
            expected = (loss, grads)
    assert_close(loss, expected[0], torch.float32)
    for g, e in zip(grads, expected[1]):
        assert_close(g, e, torch.float32)


def test_torch_func_and_autocast():
    x, w, t, b = _case(10, 4, 6, "cpu", torch.float32)
    g = torch.func.grad(lambda w: ops.linear_cross_entropy(x, w, t, b))(w)
    assert_close(g, torch.func.grad(lambda w: composite(x, w, t, b))(w), torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = ops.linear_cross_entropy(x, w, t, b)
        expected = F.cross_entropy(F.linear(x, w, b), t)
    assert loss.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("args,error,match", [
    (dict(x=torch.randn(4, 5)), RuntimeError, "cannot be multiplied"),
    (dict(t=torch.randint(0, 6, (3,))), ValueError, "to match target batch_size"),
    (dict(t=torch.tensor([0, 1, 2, 6])), IndexError, "out of bounds"),
    (dict(t=torch.tensor([0, 1, 2, -3])), IndexError, "out of bounds"),
    (dict(w=torch.randn(6, 4, dtype=torch.float64)), RuntimeError, "dtype"),
    (dict(b=torch.randn(5)), RuntimeError, "bias"),
    (dict(reduction="avg"), ValueError, "is not a valid value for reduction"),
    (dict(label_smoothing=1.5), RuntimeError, "label_smoothing must be between"),
    (dict(softcap=0.0), ValueError, "softcap must be > 0"),
    (dict(z_loss=-1.0), ValueError, "z_loss must be >= 0"),
    (dict(t=torch.zeros(4, 1, dtype=torch.long)), RuntimeError, "target"),
])
def test_bad_input_is_refused_like_the_composite(args, error, match):
    kw = dict(x=torch.randn(4, 4), w=torch.randn(6, 4), t=torch.tensor([0, 1, 2, 3]),
              b=None, reduction="mean", label_smoothing=0.0, softcap=None, z_loss=0.0)
    kw.update(args)
    with pytest.raises(error, match=match):
        ops.linear_cross_entropy(kw["x"], kw["w"], kw["t"], kw["b"], reduction=kw["reduction"],
                                 label_smoothing=kw["label_smoothing"], softcap=kw["softcap"],
                                 z_loss=kw["z_loss"])
    if {"reduction", "softcap", "z_loss"} & set(args):
        return  # (the composite helper above applies those two by hand, unchecked)
    with pytest.raises(error):  # the composite refuses it too
        composite(kw["x"], kw["w"], kw["t"], kw["b"], label_smoothing=kw["label_smoothing"])


def test_the_logits_are_never_allocated_whole():
    # N x V float32 logits are 2 GiB here, everything else a few MiB: the peak growth of the
    # process over fwd + bwd must stay far below one such buffer (measured in a fresh process)
    script = textwrap.dedent("""
        import resource, torch
        from pymakemore import ops
        n, d, v = 8192, 8, 65536
        x = torch.randn(n, d, requires_grad=True)
        w = (torch.randn(v, d) * 0.1).requires_grad_()
        t = torch.randint(0, v, (n,))
        xs, ws = torch.randn(64, d, requires_grad=True), torch.randn(64, d, requires_grad=True)
        ops.linear_cross_entropy(xs, ws, t[:64] % 64).backward()  # warm up the libraries
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        ops.linear_cross_entropy(x, w, t).backward()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) * 1024)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    grown = int(proc.stdout.strip())
    logits_bytes = 8192 * 65536 * 4
    assert grown < logits_bytes / 8, f"peak grew by {grown / 2**20:.0f} MiB"


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and the extension built with "
                                         "CUDA kernels")
def test_cuda_graph_capture_and_peak_memory():
    n, d, v = 4096, 64, 65536
    x, w, t, b = _case(n, d, v, "cuda", torch.float32)
    x.requires_grad_()
    w.requires_grad_()
    # peak memory of forward + backward: far below the 1 GiB of float32 logits
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    ops.linear_cross_entropy(x, w, t, b).backward()
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - before < n * v * 4 / 8
    expected = [x.grad.clone(), w.grad.clone()]
    # the whole step captured in a CUDA graph (no host reads inside), replayed: same gradients
    x.grad = w.grad = None
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        ops.linear_cross_entropy(x, w, t, b).backward()  # warm-up
    torch.cuda.current_stream().wait_stream(side)
    x.grad = w.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = ops.linear_cross_entropy(x, w, t, b)
        gx, gw = torch.autograd.grad(loss, (x, w))
    graph.replay()
    torch.cuda.synchronize()
    assert_close(gx, expected[0], torch.float32)
    assert_close(gw, expected[1], torch.float32)


def test_huge_tied_logits_give_the_right_gradients():
    # weights of 1e17 make every logit of a row 1e17: p = 1/V, not 1 (see cross_entropy's test)
    h = torch.ones(2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.full((5, 3), 1e17 / 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 3])
    loss = ops.linear_cross_entropy(h, w, t)
    gh, gw = torch.autograd.grad(loss, (h, w))
    h_f, w_f = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    loss_f = F.cross_entropy(F.linear(h_f, w_f), t)
    gh_f, gw_f = torch.autograd.grad(loss_f, (h_f, w_f))
    torch.testing.assert_close(loss, loss_f)
    torch.testing.assert_close(gh, gh_f)
    torch.testing.assert_close(gw, gw_f)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_batch_dimensions(reduction):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 8, generator=g, requires_grad=True)
    w = torch.randn(11, 8, generator=g, requires_grad=True)
    b = torch.randn(11, generator=g, requires_grad=True)
    t = torch.randint(0, 11, (3, 5), generator=g)
    t[0, 1] = -100
    ours = ops.linear_cross_entropy(x, w, t, b, reduction=reduction, label_smoothing=0.1)
    theirs = F.cross_entropy(F.linear(x, w, b).reshape(-1, 11), t.reshape(-1),
                             reduction=reduction, label_smoothing=0.1)
    if reduction == "none":
        theirs = theirs.reshape(3, 5)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs)
    grads = torch.autograd.grad(ours.sum(), (x, w, b))
    expected = torch.autograd.grad(theirs.sum(), (x, w, b))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match=r"needs a target of shape \(3, 5\)"):
        ops.linear_cross_entropy(x, w, t.reshape(-1))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_vmap_over_the_backward(reduction):
    # autograd.grad(is_grads_batched=True) and jacobian(vectorize=True) vmap the backward
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g, requires_grad=True)
    w = torch.randn(7, 4, generator=g, requires_grad=True)
    t = torch.randint(0, 7, (6,), generator=g)
    ours = ops.linear_cross_entropy(x, w, t, reduction=reduction)
    theirs = F.cross_entropy(F.linear(x, w), t, reduction=reduction)
    n = ours.numel()
    v = torch.eye(n).reshape(n, *ours.shape) if reduction == "none" else torch.randn(3)
    got = torch.autograd.grad(ours, (x, w), v, is_grads_batched=True)
    want = torch.autograd.grad(theirs, (x, w), v, is_grads_batched=True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    jac = torch.autograd.functional.jacobian(
        lambda x_: ops.linear_cross_entropy(x_, w, t, reduction=reduction), x, vectorize=True)
    expected = torch.autograd.functional.jacobian(
        lambda x_: F.cross_entropy(F.linear(x_, w), t, reduction=reduction), x, vectorize=True)
    torch.testing.assert_close(jac, expected)


def weighted_composite(x, w, t, b=None, ce_weight=None, ignore_index=-100, reduction="mean",
                       label_smoothing=0.0, softcap=None, z_loss=0.0):
    """(loss, z-loss term, lse) of what a user writes with torch's functions: F.cross_entropy
    with class weights, plus z_loss * lse**2 per counted row times its class weight, a mean
    over the weights' sum (docs/ops.md)."""
    logits = F.linear(x, w, b)
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    lse = torch.logsumexp(logits, dim=-1)
    ce = F.cross_entropy(logits.reshape(-1, w.shape[0]), t.reshape(-1), ce_weight,
                         ignore_index=ignore_index, reduction=reduction,
                         label_smoothing=label_smoothing)
    counted = t != ignore_index
    row_weight = counted.to(lse.dtype) if ce_weight is None else \
        torch.where(counted, ce_weight[torch.where(counted, t, 0)], 0.0)
    z_rows = z_loss * lse * lse * row_weight
    z = {"none": z_rows, "sum": z_rows.sum(), "mean": z_rows.sum() / row_weight.sum()}[reduction]
    return (ce.reshape(t.shape) if reduction == "none" else ce) + z, z, lse


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", range(len(OPTIONS)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_class_weights_z_loss_and_lse_match_the_composite(reduction, options, dtype):
    x, w, t, b = _case(41, 12, 13, "cpu", dtype)
    class_weight = torch.rand(13, dtype=dtype) * 2
    class_weight[3] = 0.0  # a class that does not count
    t[:4] = 3
    kw = dict(reduction=reduction, **OPTIONS[options])
    leaves = [p.clone().requires_grad_() for p in (x, w, b)]
    ours = ops.linear_cross_entropy(*leaves[:2], t, leaves[2], ce_weight=class_weight,
                                    return_z_loss=True, return_lse=True, **kw)
    theirs = weighted_composite(*leaves[:2], t, leaves[2], class_weight, **kw)
    for got, want in zip(ours, theirs):
        assert got.shape == want.shape and got.dtype == want.dtype
        assert_close(got, want, dtype)
    # every output differentiable: a gradient through each at once
    seeds = [torch.randn_like(o) for o in theirs]
    got = torch.autograd.grad(sum((o * s).sum() for o, s in zip(ours, seeds)), leaves)
    want = torch.autograd.grad(sum((o * s).sum() for o, s in zip(theirs, seeds)), leaves)
    for a, e in zip(got, want):
        assert_close(a, e, dtype)
    # the loss alone, the gradients from the forward's own pass
    loss = ops.linear_cross_entropy(*leaves[:2], t, leaves[2], ce_weight=class_weight, **kw)
    got = torch.autograd.grad(loss.sum(), leaves)
    theirs = weighted_composite(*leaves[:2], t, leaves[2], class_weight, **kw)
    want = torch.autograd.grad(theirs[0].sum(), leaves)
    for a, e in zip(got, want):
        assert_close(a, e, dtype)


def test_class_weights_in_half_precision_and_the_module():
    x, w, t, b = _case(30, 16, 9, "cpu", torch.float32)
    class_weight = torch.rand(9) + 0.5
    for dtype in (torch.bfloat16, torch.float16):
        got = ops.linear_cross_entropy(x.to(dtype), w.to(dtype), t, b.to(dtype),
                                       ce_weight=class_weight, label_smoothing=0.1)
        want = F.cross_entropy(F.linear(x.to(dtype), w.to(dtype), b.to(dtype)).float(), t,
                               class_weight, label_smoothing=0.1)
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)
    module = pmnn.LinearCrossEntropyLoss(ce_weight=class_weight, reduction="sum")
    assert "ce_weight" in dict(module.named_buffers())
    torch.testing.assert_close(module(x, w, t, b),
                               F.cross_entropy(F.linear(x, w, b), t, class_weight,
                                               reduction="sum"))


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck_with_class_weights_and_the_lse(reduction):
    x, w, t, b = _case(7, 3, 5, "cpu", torch.float64)
    class_weight = torch.rand(5, dtype=torch.float64) + 0.2
    leaves = [p.clone().requires_grad_() for p in (x, w, b)]

    def fn(x, w, b):
        return ops.linear_cross_entropy(x, w, t, b, ce_weight=class_weight, reduction=reduction,
                                        label_smoothing=0.1, softcap=2.5, z_loss=0.05,
                                        return_z_loss=True, return_lse=True)
    assert torch.autograd.gradcheck(fn, leaves)
    assert torch.autograd.gradgradcheck(fn, leaves)


@pytest.mark.parametrize("shift", [1, 3, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_shift_predicts_the_next_positions_without_slicing(shift, reduction):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 8, generator=g, dtype=torch.float64)
    w = torch.randn(10, 8, generator=g, dtype=torch.float64)
    t = torch.randint(0, 10, (2, 6), generator=g)
    t[1, 4] = -100
    s = int(shift)
    leaves = [x.clone().requires_grad_(), w.clone().requires_grad_()]
    loss, z, lse = ops.linear_cross_entropy(*leaves, t, shift=shift, reduction=reduction,
                                            z_loss=0.01, return_z_loss=True, return_lse=True)
    sliced = [leaves[0][:, :-s], leaves[1]]  # what shift saves: the copies of the slices
    want = weighted_composite(*sliced, t[:, s:].contiguous(), reduction=reduction, z_loss=0.01)
    for got, expected in zip((loss, z, lse), want):
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected)
    got = torch.autograd.grad(loss.sum() + lse.sum(), leaves)
    expected = torch.autograd.grad(want[0].sum() + want[2].sum(), leaves)
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e)
    alone = ops.linear_cross_entropy(x, w, t, shift=shift, reduction=reduction, z_loss=0.01)
    assert alone.shape == want[0].shape  # the loss without the extras: the same
    torch.testing.assert_close(alone, want[0].detach())
    assert torch.equal(ops.linear_cross_entropy(x, w, t, shift=0),
                       ops.linear_cross_entropy(x, w, t))
    for bad in (6, -1):
        with pytest.raises(ValueError, match=r"shift must be in \[0, 6\)"):
            ops.linear_cross_entropy(x, w, t, shift=bad)


def test_compiled_with_class_weights_shift_and_lse():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, 8, generator=g)
    w = torch.randn(11, 8, generator=g, requires_grad=True)
    t = torch.randint(0, 11, (3, 5), generator=g)
    class_weight = torch.rand(11, generator=g) + 0.5

    def step(x, w):
        loss, z, lse = ops.linear_cross_entropy(x, w, t, ce_weight=class_weight, shift=1,
                                                z_loss=1e-3, return_z_loss=True,
                                                return_lse=True)
        return loss + lse.mean()
    eager = step(x, w)
    compiled = torch.compile(step, fullgraph=True)(x, w)
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(torch.autograd.grad(compiled, w)[0],
                               torch.autograd.grad(eager, w)[0])


@pytest.mark.parametrize("ce_weight,match", [
    (torch.ones(5), r"ce_weight must have one weight per class, shape \(6\)"),
    (torch.ones(2, 3), r"ce_weight must have one weight per class"),
    (torch.ones(6, dtype=torch.long), r"ce_weight"),
])
def test_bad_class_weights_are_refused(ce_weight, match):
    with pytest.raises(RuntimeError, match=match):
        ops.linear_cross_entropy(torch.randn(4, 4), torch.randn(6, 4), torch.tensor([0, 1, 2, 3]),
                                 ce_weight=ce_weight)
