"""Property-based tests of the fused ops (hypothesis): random shapes including zero sizes,
strided inputs, dtypes, options and out-of-range values, against torch.nn.functional, forward
and backward. Few examples each, so the suite stays fast; a failure prints its example."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import assert_close
from pymakemore import ops

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
DTYPES = st.sampled_from([torch.float32, torch.float64])


def _strided(t: torch.Tensor, transposed: bool) -> torch.Tensor:
    """The same values, laid out transposed in memory (a non-contiguous view) when asked."""
    if not transposed or t.dim() < 2:
        return t
    return t.transpose(0, 1).contiguous().transpose(0, 1)


def _grads(fn, leaves, *args, **kw):
    leaves = [x.detach().clone().requires_grad_(True) for x in leaves]
    out = fn(*leaves, *args, **kw)
    grad = torch.randn_like(out, generator=torch.Generator().manual_seed(1)) \
        if out.is_floating_point() and out.numel() else torch.ones_like(out)
    out.backward(grad)
    return out.detach(), [x.grad for x in leaves]


@SETTINGS
@given(n=st.integers(0, 40), c=st.integers(1, 60), dtype=DTYPES,
       reduction=st.sampled_from(["mean", "sum", "none"]),
       smoothing=st.sampled_from([0.0, 0.1, 0.5]), weighted=st.booleans(),
       ignore=st.sampled_from([None, -100, 0]), transposed=st.booleans(), seed=st.integers(0, 9))
def test_cross_entropy(n, c, dtype, reduction, smoothing, weighted, ignore, transposed, seed):
    g = torch.Generator().manual_seed(seed)
    x = _strided(torch.randn(n, c, generator=g, dtype=dtype) * 4, transposed)
    t = torch.randint(0, c, (n,), generator=g)
    if ignore is not None and n:
        t[::3] = ignore
    kw = dict(reduction=reduction, label_smoothing=smoothing,
              ignore_index=-100 if ignore is None else ignore)
    if weighted:
        kw["weight"] = torch.rand(c, generator=g, dtype=dtype) + 0.1
    ours, (gx,) = _grads(ops.cross_entropy, [x], t, **kw)
    want, (gx_f,) = _grads(F.cross_entropy, [x], t, **kw)
    scale = max(1.0, n ** 0.5) if reduction == "sum" else 1.0
    assert_close(ours, want, dtype, scale * 4)
    assert_close(gx, gx_f, dtype)


@SETTINGS
@given(n=st.integers(1, 20), c=st.integers(1, 30), target=st.integers(-150, 60))
def test_cross_entropy_any_target_value(n, c, target):
    t = torch.zeros(n, dtype=torch.long)
    t[n // 2] = target
    x = torch.randn(n, c)
    if 0 <= target < c or target == -100:  # a class, or the default ignore_index
        torch.testing.assert_close(ops.cross_entropy(x, t), F.cross_entropy(x, t))
        return
    with pytest.raises(IndexError):
        F.cross_entropy(x, t)
    with pytest.raises(IndexError, match=f"target {target} at position {n // 2}"):
        ops.cross_entropy(x, t)


@SETTINGS
@given(rows=st.integers(1, 30), dim=st.integers(0, 12),
       shape=st.lists(st.integers(0, 5), min_size=0, max_size=3),
       index_dtype=st.sampled_from([torch.int32, torch.int64]), dtype=DTYPES,
       padding=st.sampled_from([None, 0, -1]), by_freq=st.booleans(), transposed=st.booleans(),
       seed=st.integers(0, 9))
def test_embedding(rows, dim, shape, index_dtype, dtype, padding, by_freq, transposed, seed):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, rows, tuple(shape), generator=g).to(index_dtype)
    w = _strided(torch.randn(rows, dim, generator=g, dtype=dtype), transposed)
    kw = dict(padding_idx=padding, scale_grad_by_freq=by_freq)
    ours, (gw,) = _grads(lambda weight: ops.embedding(idx, weight, **kw), [w])
    want, (gw_f,) = _grads(lambda weight: F.embedding(idx, weight, **kw), [w])
    torch.testing.assert_close(ours, want, rtol=0, atol=0)
    assert_close(gw, gw_f, dtype)


@SETTINGS
@given(rows=st.integers(1, 30), offset=st.sampled_from([-100, -2, -1, 0, 1, 50]),
       index_dtype=st.sampled_from([torch.int32, torch.int64]))
def test_embedding_out_of_range_indices(rows, offset, index_dtype):
    bad = offset if offset < 0 else rows + offset
    idx = torch.tensor([0, bad, 0], dtype=index_dtype)
    w = torch.randn(rows, 4)
    with pytest.raises((IndexError, RuntimeError)):
        F.embedding(idx, w)
    with pytest.raises(IndexError, match=f"index {bad} at position 1"):
        ops.embedding(idx, w)


@SETTINGS
@given(lead=st.lists(st.integers(0, 6), min_size=0, max_size=2), k=st.integers(0, 40),
       h=st.integers(0, 40), bias=st.booleans(), tanh=st.booleans(), dtype=DTYPES,
       transposed=st.booleans(), seed=st.integers(0, 9))
def test_linear(lead, k, h, bias, tanh, dtype, transposed, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, k, generator=g, dtype=dtype)
    w = _strided(torch.randn(h, k, generator=g, dtype=dtype) / max(k, 1) ** 0.5, transposed)
    leaves = [x, w] + ([torch.randn(h, generator=g, dtype=dtype)] if bias else [])
    fused = ops.linear_tanh if tanh else ops.linear

    def composite(*args):
        y = F.linear(*args)
        return torch.tanh(y) if tanh else y

    ours, grads = _grads(fused, leaves)
    want, grads_f = _grads(composite, leaves)
    assert ours.shape == want.shape and ours.dtype == want.dtype
    scale = max(1.0, (x.numel() / max(k, 1)) ** 0.5)
    assert_close(ours, want, dtype, scale)
    for a, b in zip(grads, grads_f):
        assert_close(a, b, dtype, scale)
