import pytest
import torch
import torch.nn.functional as F

from conftest import DEVICES, HAS_CUDA, assert_close, dtypes_for
from pymakemore import ops, reference

SHAPES = [  # (input shape, out_features)
    ((1, 1), 1),
    ((32, 30), 200),     # the makemore hidden layer
    ((7, 13), 5),
    ((3, 5, 30), 17),    # leading batch dims
    ((30,), 200),        # a single 1-D input
    ((0, 30), 200),      # empty batch
    ((5, 0), 3),         # no input features: tanh(bias)
    ((4, 3), 0),         # no outputs
    ((257, 129), 65),    # tails in every tile direction
]


def _run(fn, x, w, b, grad):
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None
              for t in (x, w, b)]
    out = fn(*leaves)
    out.backward(grad)
    return [out.detach()] + [t.grad if t is not None else None for t in leaves]


def _composite(x, w, b):
    return torch.tanh(F.linear(x, w, b))


# fused op, the torch composite it replaces, the plain-torch oracle
OPS = {
    "linear_tanh": (ops.linear_tanh, _composite, reference.linear_tanh),
    "linear": (ops.linear, F.linear, reference.linear),
}


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("shape,out_features", SHAPES)
def test_matches_functional_and_reference(name, device, with_bias, shape, out_features):
    fused, composite_fn, oracle_fn = OPS[name]
    for dtype in dtypes_for(device):
        k = shape[-1]
        x = torch.randn(shape, device=device, dtype=dtype)
        w = torch.randn(out_features, k, device=device, dtype=dtype) / max(k, 1) ** 0.5
        b = torch.randn(out_features, device=device, dtype=dtype) if with_bias else None
        grad = torch.randn(*shape[:-1], out_features, device=device, dtype=dtype)
        ours = _run(fused, x, w, b, grad)
        composite = _run(composite_fn, x, w, b, grad)
        oracle = _run(oracle_fn, x, w, b, grad)
        assert ours[0].shape == (*shape[:-1], out_features) and ours[0].dtype == dtype
        scale = max(1.0, (x.numel() / max(k, 1)) ** 0.5)  # grad sums over rows
        for a, f, r in zip(ours, composite, oracle):
            if f is None:
                assert a is None
                continue
            assert_close(a, f, dtype, scale)
            assert_close(a, r, dtype, scale)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (the grid limit is CUDA's)")
@pytest.mark.parametrize("name", OPS)
def test_cuda_more_row_tiles_than_a_grid_dimension_holds(name):
    # 65,535 tiles of 64 rows is where a grid's y (or z) dimension ends; the rows past it
    # must be computed too, forward and backward
    fused, composite_fn, _ = OPS[name]
    n = 65535 * 64 + 100
    x = torch.randn(n, 3, device="cuda")
    w = torch.randn(5, 3, device="cuda")
    b = torch.randn(5, device="cuda")
    grad = torch.randn(n, 5, device="cuda")
    ours = _run(fused, x, w, b, grad)
    composite = _run(composite_fn, x, w, b, grad)
    for a, f in zip(ours, composite):
        assert_close(a, f, torch.float32, n ** 0.5)
    assert ours[0][-100:].abs().sum() > 0 and ours[1][-100:].abs().sum() > 0


@pytest.mark.parametrize("device", DEVICES)
def test_saturated_tanh(device):
    x = torch.randn(64, 30, device=device) * 100  # |pre-activation| in the hundreds
    w = torch.randn(200, 30, device=device)
    b = torch.randn(200, device=device)
    grad = torch.randn(64, 200, device=device)
    ours = _run(ops.linear_tanh, x, w, b, grad)
    composite = _run(_composite, x, w, b, grad)
    exact = _run(reference.linear_tanh, x.double(), w.double(), b.double(), grad.double())
    assert ours[0].abs().max() <= 1.0
    assert (ours[0].abs() == 1.0).float().mean() > 0.5  # most units saturate
    # 1 - y^2 near |y| = 1 amplifies one rounding of y: be as close to float64 as torch is
    for a, f, e in zip(ours, composite, exact):
        our_error = (a.double() - e).abs().max()
        torch_error = (f.double() - e).abs().max()
        assert our_error <= 4 * torch_error + 1e-5 * e.abs().max()


def test_tanh_accuracy_over_the_float_range():
    x = torch.cat([torch.linspace(-20, 20, 400_001), torch.logspace(-30, 1, 10_001),
                   -torch.logspace(-30, 1, 10_001)])
    y = ops.linear_tanh(x.unsqueeze(1), torch.ones(1, 1)).squeeze(1)
    exact = torch.tanh(x.double())
    ulps = (y.double() - exact).abs() / (exact.abs() * torch.finfo(torch.float32).eps)
    assert ulps.max() < 4.0
    special = torch.tensor([[float("nan")], [float("inf")], [-float("inf")], [0.0]])
    out = ops.linear_tanh(special, torch.ones(1, 1)).squeeze(1)
    assert torch.isnan(out[0]) and out[1] == 1.0 and out[2] == -1.0 and out[3] == 0.0


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(name, device):
    fused, composite_fn, _ = OPS[name]
    x = torch.randn(30, 32, device=device).t()
    w = torch.randn(30, 200, device=device).t()
    b = torch.randn(400, device=device)[::2]
    grad = torch.randn(200, 32, device=device).t()
    for a, f in zip(_run(fused, x, w, b, grad), _run(composite_fn, x, w, b, grad)):
        assert_close(a, f, torch.float32, scale=6.0)


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("device", DEVICES)
def test_partial_gradients(name, device):
    fused, composite_fn, _ = OPS[name]
    x = torch.randn(8, 5, device=device)                    # data: no gradient
    w = torch.randn(4, 5, device=device, requires_grad=True)
    b = torch.randn(4, device=device)                       # frozen bias
    fused(x, w, b).sum().backward()
    w2 = w.detach().clone().requires_grad_(True)
    composite_fn(x, w2, b).sum().backward()
    assert_close(w.grad, w2.grad)
    assert x.grad is None and b.grad is None


@pytest.mark.parametrize("name", OPS)
def test_backward_deterministic_across_threads(name):
    fused = OPS[name][0]
    x, w, b = torch.randn(5000, 30), torch.randn(200, 30), torch.randn(200)
    grad = torch.randn(5000, 200)
    first = _run(fused, x, w, b, grad)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        again = _run(fused, x, w, b, grad)
    finally:
        torch.set_num_threads(threads)
    for a, c in zip(first, again):
        assert torch.equal(a, c)


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_on_cpu(name, dtype):
    fused, _, oracle_fn = OPS[name]
    x, w, b = (torch.randn(16, 30, dtype=dtype), torch.randn(20, 30, dtype=dtype) / 5,
               torch.randn(20, dtype=dtype))
    grad = torch.randn(16, 20, dtype=dtype)
    ours = _run(fused, x, w, b, grad)
    oracle = _run(oracle_fn, *(t.float() for t in (x, w, b, grad)))
    for a, r in zip(ours, oracle):
        assert a.dtype == dtype
        assert_close(a, r.to(dtype), dtype)


@pytest.mark.parametrize("args,match", [
    ((torch.randn(4, 3), torch.randn(5, 2), None), "cannot be multiplied"),
    ((torch.randn(4, 3), torch.randn(5, 3), torch.randn(4)), r"size of tensor a \(5\) must "
                                                             r"match the size of tensor b \(4\)"),
    ((torch.randn(4, 3), torch.randn(5, 3).double(), None), "same dtype"),
    ((torch.randn(4, 3), torch.randn(5, 3), torch.randn(5).double()), "same dtype"),
    ((torch.randn(()), torch.randn(5, 3), None), "at least 1-D"),
    ((torch.randn(4, 3), torch.randn(15), None), "cannot be multiplied"),
    ((torch.randn(4, 3), torch.randn(5, 3, 1), None), "weight must be 2-D"),
    ((torch.ones(4, 3, dtype=torch.long), torch.ones(5, 3), None),
     "same dtype"),  # integer with float operands: F.linear's error
    ((torch.randn(4, 3), torch.randn(5, 3, device="meta"), None), "device"),
])
@pytest.mark.parametrize("name", OPS)
def test_bad_arguments(name, args, match):
    with pytest.raises(RuntimeError, match=match):
        OPS[name][0](*args)


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("w_shape,b_shape", [
    ((3,), None), ((5, 3), ()), ((5, 3), (1,)), ((5, 3), (4, 5)), ((5, 3), (1, 5)),
])
def test_other_shapes_functional_accepts(name, w_shape, b_shape):
    # a 1-D weight (one dot product per row) and biases that broadcast, as F.linear takes them
    fused, composite_fn, _ = OPS[name]
    x = torch.randn(4, 3, dtype=torch.float64)
    w = torch.randn(w_shape, dtype=torch.float64)
    b = torch.randn(b_shape, dtype=torch.float64) if b_shape is not None else None
    out = composite_fn(x, w, b)
    grad = torch.randn_like(out)
    ours, want = _run(fused, x, w, b, grad), _run(composite_fn, x, w, b, grad)
    for a, f in zip(ours, want):
        if f is None:
            assert a is None
        else:
            assert a.shape == f.shape
            torch.testing.assert_close(a, f)


@pytest.mark.parametrize("name", OPS)
def test_autocast_gives_functional_dtypes(name):
    fused, composite_fn, _ = OPS[name]
    x, w, b = torch.randn(4, 3), torch.randn(5, 3), torch.randn(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, want = fused(x, w, b), composite_fn(x, w, b)
    assert ours.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(ours, want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("name", OPS)
def test_backward_ops_check_shapes(name):
    x, w, g = torch.randn(4, 3), torch.randn(5, 3), torch.randn(4, 6)
    with pytest.raises(RuntimeError, match="grad_output"):
        if name == "linear":
            torch.ops.pymakemore.linear_backward(g, x, w, [True, True, True])
        else:
            torch.ops.pymakemore.linear_tanh_backward(g, torch.rand(4, 5), x, w,
                                                      [True, True, True])


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device for a CPU/CUDA mix")
@pytest.mark.parametrize("name", OPS)
def test_cpu_cuda_mix(name):
    with pytest.raises(RuntimeError, match="device"):
        OPS[name][0](torch.randn(4, 3), torch.randn(5, 3, device="cuda"))


def _error_against_float64(out, exact):
    return (out.double() - exact).abs().max().item()


@pytest.mark.parametrize("n,k,h", [(64, 50_257, 16), (8, 262_144, 4)])
def test_long_inner_dimension_at_least_as_accurate_as_torch(n, k, h):
    # the forward's sum over k and the input gradient's over h run in blocks: over a long
    # reduction the error stays at (or below) torch's own CPU linear, never far above it
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, k, generator=g)
    w = torch.randn(h, k, generator=g) / k ** 0.5
    b = torch.randn(h, generator=g)
    exact = F.linear(x.double(), w.double(), b.double())
    for fn, ref in ((ops.linear, F.linear),
                    (ops.linear_tanh, lambda *a: torch.tanh(F.linear(*a)))):
        ours = _error_against_float64(fn(x, w, b), ref(x.double(), w.double(), b.double()))
        theirs = _error_against_float64(ref(x, w, b), ref(x.double(), w.double(), b.double()))
        assert ours <= 2 * theirs + 1e-7, (fn.__name__, ours, theirs)
    # the input gradient of a layer with that many outputs: a sum over k outputs
    wide = torch.randn(k, h, generator=g) / h ** 0.5
    xs = torch.randn(n, h, generator=g, requires_grad=True)
    gy = torch.randn(n, k, generator=g)
    exact_gx = gy.double() @ wide.double()
    ours_gx, = torch.autograd.grad(ops.linear(xs, wide), xs, gy)
    theirs_gx, = torch.autograd.grad(F.linear(xs, wide), xs, gy)
    assert _error_against_float64(ours_gx, exact_gx) <= \
        2 * _error_against_float64(theirs_gx, exact_gx) + 1e-7
    del exact


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_integer_operands_are_computed_as_functional(dtype):
    x = torch.randint(-5, 5, (4, 7), dtype=dtype)
    w = torch.randint(-5, 5, (3, 7), dtype=dtype)
    b = torch.randint(-5, 5, (3,), dtype=dtype)
    assert torch.equal(ops.linear(x, w, b), F.linear(x, w, b))
    torch.testing.assert_close(ops.linear_tanh(x, w, b), torch.tanh(F.linear(x, w, b)))
    with pytest.raises(RuntimeError, match="same dtype"):
        ops.linear(x, w.float())
