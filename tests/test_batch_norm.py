"""ops.batch_norm_tanh against its torch composite (torch.tanh(F.batch_norm) for (N, C) input)
and the plain-torch reference: forward, every gradient, the running statistics, training and
evaluation, the lectures' unbiased normalisation and F.batch_norm's biased one, 2-D and 3-D
inputs, odd shapes, every dtype; gradcheck and gradgradcheck in float64, opcheck,
torch.compile, bad input with the composite's errors, determinism, long batches."""
import pytest
import torch
import torch.nn.functional as F

from conftest import DEVICES, assert_close, dtypes_for
from pymakemore import ops, reference


def _params(c, dtype, device, affine=True):
    g = torch.Generator().manual_seed(c)
    w = (torch.rand(c, generator=g, dtype=torch.float64) + 0.5).to(dtype).to(device)
    b = torch.randn(c, generator=g, dtype=torch.float64).to(dtype).to(device)
    rm = torch.randn(c, generator=g, dtype=torch.float64).to(dtype).to(device)
    rv = (torch.rand(c, generator=g, dtype=torch.float64) + 0.5).to(dtype).to(device)
    return (w, b) if affine else (None, None), (rm, rv)


def _run(fn, x, w, b, rm, rv, grad, **kw):
    """(output, input grad, weight grad, bias grad, running mean, running var) of fn."""
    x = x.clone().requires_grad_()
    w = None if w is None else w.clone().requires_grad_()
    b = None if b is None else b.clone().requires_grad_()
    rm = None if rm is None else rm.clone()
    rv = None if rv is None else rv.clone()
    y = fn(x, rm, rv, w, b, **kw)
    inputs = [t for t in (x, w, b) if t is not None]
    grads = list(torch.autograd.grad(y, inputs, grad))
    gx = grads.pop(0)
    gw = grads.pop(0) if w is not None else None
    gb = grads.pop(0) if b is not None else None
    return y, gx, gw, gb, rm, rv


def _composite_2d(x, rm, rv, w, b, training, momentum, eps, unbiased):
    assert not unbiased
    return torch.tanh(F.batch_norm(x, rm, rv, w, b, training, momentum, eps))


SHAPES = [(32, 200), (2, 1), (5, 3), (257, 33), (4, 8, 24), (3, 2, 2, 5), (1000, 7)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("affine", [True, False])
def test_matches_the_reference(device, shape, training, unbiased, affine):
    for dtype in dtypes_for(device):
        torch.manual_seed(0)
        x = (torch.randn(shape, dtype=torch.float64) * 3 + 1).to(dtype).to(device)
        (w, b), (rm, rv) = _params(shape[-1], dtype, device, affine)
        grad = torch.randn(shape, dtype=torch.float64).to(dtype).to(device)
        kw = dict(training=training, momentum=0.1, eps=1e-5, unbiased=unbiased)
        got = _run(ops.batch_norm_tanh, x, w, b, rm, rv, grad, **kw)
        # the reference in float64 (the fused op computes half types in float32)
        up = [None if t is None else t.double() for t in (x, w, b, rm, rv, grad)]
        want = _run(reference.batch_norm_tanh, *up, **kw)
        for name, g, r in zip(("y", "grad_x", "grad_w", "grad_b", "running_mean",
                               "running_var"), got, want):
            if r is None:
                assert g is None, name
                continue
            assert g.dtype == dtype, name
            scale = 10.0 if name in ("grad_x", "grad_w", "grad_b") and dtype in (
                torch.float16, torch.bfloat16) else 1.0
            assert_close(g, r.to(dtype), dtype, scale=scale)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("training", [True, False])
def test_a_drop_in_for_tanh_of_functional_batch_norm(device, training):
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(1)
        x = torch.randn(64, 30, dtype=dtype, device=device) * 2
        (w, b), (rm, rv) = _params(30, dtype, device)
        grad = torch.randn_like(x)
        kw = dict(training=training, momentum=0.2, eps=1e-3)
        got = _run(ops.batch_norm_tanh, x, w, b, rm, rv, grad, **kw)
        want = _run(_composite_2d, x, w, b, rm, rv, grad, unbiased=False, **kw)
        for g, r in zip(got, want):
            assert_close(g, r, dtype)


def test_the_lectures_batch_norm_layer():
    # part 3: hpreact.var(0) (unbiased), running statistics with momentum 0.001
    from pymakemore.models.layers import BatchNorm
    torch.manual_seed(2)
    layer = BatchNorm(50, momentum=0.001)
    x = torch.randn(32, 50)
    want = torch.tanh(layer(x))
    rm, rv = torch.zeros(50), torch.ones(50)
    got = ops.batch_norm_tanh(x, rm, rv, layer.gain, layer.bias, True, 0.001, 1e-5, True)
    assert_close(got, want)
    assert_close(rm, layer.running_mean)
    assert_close(rv, layer.running_var)


def test_gradcheck_and_gradgradcheck_float64():
    torch.manual_seed(3)
    for training, unbiased in ((True, True), (True, False), (False, False)):
        x = torch.randn(9, 2, 4, dtype=torch.float64, requires_grad=True)
        w = torch.randn(4, dtype=torch.float64, requires_grad=True)
        b = torch.randn(4, dtype=torch.float64, requires_grad=True)
        rm, rv = torch.randn(4, dtype=torch.float64), torch.rand(4, dtype=torch.float64) + 0.5

        def fn(x, w, b):
            return ops.batch_norm_tanh(x, rm.clone(), rv.clone(), w, b, training, 0.1, 1e-5,
                                       unbiased)

        assert torch.autograd.gradcheck(fn, (x, w, b))
        assert torch.autograd.gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    torch.manual_seed(4)
    for dtype in dtypes_for(device):
        x = torch.randn(6, 3, 5, dtype=dtype, device=device, requires_grad=True)
        (w, b), (rm, rv) = _params(5, dtype, device)
        w.requires_grad_()
        for training in (True, False):
            torch.library.opcheck(torch.ops.pymakemore.batch_norm_tanh,
                                  (x, w, b, rm, rv, training, 0.1, 1e-5, True))
        y = torch.tanh(x.detach())
        stats = (torch.zeros(5, device=device, dtype=torch.float64 if dtype == torch.float64
                             else torch.float32),) * 2
        torch.library.opcheck(torch.ops.pymakemore.batch_norm_tanh_backward,
                              (torch.randn_like(x), y, x.detach(), w.detach(), *stats, True, True,
                               [True, True, True]))


def test_torch_compile_fullgraph_updates_the_running_statistics():
    torch.manual_seed(5)
    x = torch.randn(16, 8, requires_grad=True)
    w, b = torch.ones(8, requires_grad=True), torch.zeros(8, requires_grad=True)
    rm, rv = torch.zeros(8), torch.ones(8)
    rm2, rv2 = rm.clone(), rv.clone()

    def step(x, w, b, rm, rv):
        return ops.batch_norm_tanh(x, rm, rv, w, b, True, 0.1, 1e-5, True).square().sum()

    compiled = torch.compile(step, fullgraph=True)
    loss = compiled(x, w, b, rm, rv)
    (gx,) = torch.autograd.grad(loss, x)
    loss_e = step(x, w, b, rm2, rv2)
    (gx_e,) = torch.autograd.grad(loss_e, x)
    assert_close(loss, loss_e)
    assert_close(gx, gx_e)
    assert_close(rm, rm2)
    assert_close(rv, rv2)


def test_torch_func_runs_the_composite():
    torch.manual_seed(6)
    x = torch.randn(10, 4, dtype=torch.float64)
    w = torch.rand(4, dtype=torch.float64) + 0.5

    def f(w):
        return ops.batch_norm_tanh(x, None, None, w, None, True, 0.1, 1e-5, True).sum()

    def f_ref(w):
        return reference.batch_norm_tanh(x, None, None, w, None, True, 0.1, 1e-5, True).sum()

    assert_close(torch.func.grad(f)(w), torch.func.grad(f_ref)(w))


def test_bad_input_is_refused_as_the_composite_refuses_it():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        ops.batch_norm_tanh(torch.randn(1, 3), None, None, training=True)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        F.batch_norm(torch.randn(1, 3), None, None, training=True)
    with pytest.raises(RuntimeError, match="running_mean should contain 3 elements not 4"):
        ops.batch_norm_tanh(x, torch.zeros(4), torch.ones(3))
    with pytest.raises(RuntimeError, match="weight should contain 3 elements not 2"):
        ops.batch_norm_tanh(x, None, None, torch.ones(2), None, True)
    with pytest.raises(RuntimeError, match="must be defined in evaluation mode"):
        ops.batch_norm_tanh(x, None, None, training=False)
    with pytest.raises(RuntimeError, match="2 or more dimensions"):
        ops.batch_norm_tanh(torch.randn(3), None, None, training=True)
    with pytest.raises(RuntimeError, match="floating-point dtype"):
        ops.batch_norm_tanh(torch.ones(4, 3, dtype=torch.int64), None, None, training=True)
    with pytest.raises(RuntimeError, match="same device"):
        ops.batch_norm_tanh(x, None, None, torch.ones(3, device="meta"), None, True)


def test_deterministic_across_thread_counts_and_accurate_over_long_batches():
    torch.manual_seed(7)
    x = torch.randn(300_000, 16) * 4 + 1000  # a large mean: the variance's two passes matter
    grad = torch.randn_like(x)
    runs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            runs.append(_run(ops.batch_norm_tanh, x, None, None, None, None, grad,
                             training=True, momentum=0.1, eps=1e-5, unbiased=True)[:2])
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    want = _run(reference.batch_norm_tanh, x.double(), None, None, None, None, grad.double(),
                training=True, momentum=0.1, eps=1e-5, unbiased=True)[:2]
    for got, ref in zip(runs[0], want):
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
