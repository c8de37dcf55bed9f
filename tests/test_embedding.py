import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import DEVICES, HAS_CUDA, assert_close, dtypes_for, run_cuda_failure
from pymakemore import ops, reference

SHAPES = [  # (index shape, num_embeddings, embedding_dim)
    ((1,), 1, 1),
    ((32, 3), 27, 10),
    ((7, 5, 3), 13, 7),        # 3-D indices
    ((0,), 27, 10),            # empty batch
    ((), 11, 4),               # a single 0-d index
    ((4, 0, 2), 5, 3),         # empty middle dim
    ((2049,), 4099, 17),       # table past the small-table path
    ((100_003,), 27, 10),      # many indices, tiny table
]


def _run(fn, idx, weight, grad, **kw):
    w = weight.detach().clone().requires_grad_(True)
    out = fn(idx, w, **kw)
    out.backward(grad)
    return out.detach(), w.grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("shape,rows,dim", SHAPES)
def test_matches_functional_and_reference(device, index_dtype, shape, rows, dim):
    for dtype in dtypes_for(device):
        idx = torch.randint(0, rows, shape, device=device, dtype=index_dtype)
        weight = torch.randn(rows, dim, device=device, dtype=dtype)
        grad = torch.randn(*shape, dim, device=device, dtype=dtype)
        out, gw = _run(ops.embedding, idx, weight, grad)
        out_f, gw_f = _run(F.embedding, idx, weight, grad)
        out_r, gw_r = _run(reference.embedding, idx, weight, grad)
        assert out.shape == (*shape, dim) and out.dtype == dtype
        torch.testing.assert_close(out, out_f, rtol=0, atol=0)  # a gather is exact
        torch.testing.assert_close(out, out_r, rtol=0, atol=0)
        # many indices can hit one row: compare sums against a float64 oracle
        _, gw_64 = _run(reference.embedding, idx, weight.double(), grad.double())
        hits = max(1, idx.numel() // rows)
        assert_close(gw, gw_64.to(dtype), dtype, scale=hits ** 0.5)
        assert_close(gw_f, gw_r, dtype, scale=hits ** 0.5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("padding_idx", [0, 3, -1, -27])
@pytest.mark.parametrize("scale_grad_by_freq", [False, True])
def test_padding_idx_and_scale_grad_by_freq(device, padding_idx, scale_grad_by_freq):
    idx = torch.randint(0, 27, (64, 3), device=device)
    idx[0, 0] = padding_idx % 27  # make sure the padding row is hit
    weight = torch.randn(27, 10, device=device, dtype=torch.float64)
    grad = torch.randn(64, 3, 10, device=device, dtype=torch.float64)
    kw = dict(padding_idx=padding_idx, scale_grad_by_freq=scale_grad_by_freq)
    out, gw = _run(ops.embedding, idx, weight, grad, **kw)
    out_f, gw_f = _run(F.embedding, idx, weight, grad, **kw)
    torch.testing.assert_close(out, out_f)
    torch.testing.assert_close(gw, gw_f)
    assert torch.all(gw[padding_idx % 27] == 0)


@pytest.mark.parametrize("device", DEVICES)
def test_padding_idx_large_table(device):
    idx = torch.randint(0, 5000, (3000,), device=device)
    idx[:10] = 17
    weight = torch.randn(5000, 20, device=device, dtype=torch.float64)
    grad = torch.randn(3000, 20, device=device, dtype=torch.float64)
    _, gw = _run(ops.embedding, idx, weight, grad, padding_idx=17, scale_grad_by_freq=True)
    _, gw_f = _run(F.embedding, idx, weight, grad, padding_idx=17, scale_grad_by_freq=True)
    torch.testing.assert_close(gw, gw_f)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(device):
    weight = torch.randn(10, 27, device=device).t()          # (27, 10), transposed storage
    idx = torch.randint(0, 27, (32, 6), device=device)[:, ::2]  # strided indices
    assert not weight.is_contiguous() and not idx.is_contiguous()
    grad = torch.randn(10, 3, 32, device=device).permute(2, 1, 0)
    out, gw = _run(ops.embedding, idx, weight, grad)
    out_f, gw_f = _run(F.embedding, idx, weight, grad)
    torch.testing.assert_close(out, out_f, rtol=0, atol=0)
    assert_close(gw, gw_f)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rows,dim", [(27, 10), (4099, 17)])
def test_backward_is_deterministic(device, rows, dim):
    idx = torch.randint(0, rows, (50_000,), device=device)
    weight = torch.randn(rows, dim, device=device)
    grad = torch.randn(50_000, dim, device=device)
    first = _run(ops.embedding, idx, weight, grad)[1]
    threads = torch.get_num_threads()
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            again = _run(ops.embedding, idx, weight, grad)[1]
            assert torch.equal(first, again), f"gradient changed with {n} threads"
    finally:
        torch.set_num_threads(threads)


def test_max_norm_renormalises_like_functional():
    weight = torch.randn(10, 4) * 5
    idx = torch.tensor([1, 2, 2, 7])
    w_ops, w_f = weight.clone(), weight.clone()
    out = ops.embedding(idx, w_ops, max_norm=1.0)
    out_f = F.embedding(idx, w_f, max_norm=1.0)
    torch.testing.assert_close(out, out_f)
    torch.testing.assert_close(w_ops, w_f)  # rows renormalised in place, as F does
    assert w_ops[1].norm() <= 1.0 + 1e-6 and torch.equal(w_ops[0], weight[0])


def test_sparse_gradient_matches_functional():
    weight = torch.randn(10, 4, requires_grad=True)
    idx = torch.tensor([1, 2, 2, 7])
    ops.embedding(idx, weight, sparse=True).sum().backward()
    assert weight.grad.is_sparse
    torch.testing.assert_close(weight.grad.to_dense(), F.embedding(idx, torch.eye(10)).sum(0)
                               .unsqueeze(1).expand(10, 4))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_on_cpu(dtype):
    idx = torch.randint(0, 27, (32, 3))
    weight = torch.randn(27, 10, dtype=dtype)
    grad = torch.randn(32, 3, 10, dtype=dtype)
    out, gw = _run(ops.embedding, idx, weight, grad)
    out_f, gw_f = _run(F.embedding, idx, weight, grad)
    assert out.dtype == dtype and gw.dtype == dtype
    torch.testing.assert_close(out, out_f, rtol=0, atol=0)
    assert_close(gw, gw_f)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bad", [27, 1000, -1])
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
def test_out_of_range_index_names_the_value(device, bad, index_dtype):
    if device == "cuda":
        out = run_cuda_failure(
            f"idx = torch.tensor([[0, 5, {bad}]], device='cuda', dtype={index_dtype})\n"
            "pymakemore.ops.embedding(idx, torch.randn(27, 10, device='cuda'))\n"
            "torch.cuda.synchronize()")
        assert f"index {bad} at position 2 is out of range [0, 27)" in out
        return
    idx = torch.tensor([[0, 5, bad]], device=device, dtype=index_dtype)
    weight = torch.randn(27, 10, device=device, requires_grad=True)
    with pytest.raises(IndexError, match=rf"index {bad} at position 2 is out of range.*27 rows"):
        ops.embedding(idx, weight)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rows,dim,bad,position", [(0, 3, 0, 0), (5, 0, 7, 1)])
def test_indices_checked_with_nothing_to_copy(device, rows, dim, bad, position):
    # an empty table, or rows of width 0: no value moves, but a bad index is still an error
    message = f"index {bad} at position {position} is out of range"
    if device == "cuda":
        for call in (f"pymakemore.ops.embedding(idx, torch.randn({rows}, {dim}, device='cuda'))",
                     f"torch.ops.pymakemore.embedding_backward("
                     f"torch.randn(2, {dim}, device='cuda'), idx, {rows})"):
            out = run_cuda_failure(f"idx = torch.tensor([0, {bad}], device='cuda')\n{call}\n"
                                   "torch.cuda.synchronize()")
            assert message in out, call
        return
    idx = torch.tensor([0, bad])
    with pytest.raises(IndexError, match=message):
        ops.embedding(idx, torch.randn(rows, dim))
    with pytest.raises(IndexError, match=message):
        torch.ops.pymakemore.embedding_backward(torch.randn(2, dim), idx, rows)


def test_backward_op_checks_indices():
    grad = torch.randn(3, 4)
    with pytest.raises(IndexError, match="index 9 at position 1"):
        torch.ops.pymakemore.embedding_backward(grad, torch.tensor([0, 9, 1]), 5)


@pytest.mark.parametrize("idx,weight,error,match", [
    (torch.tensor([1.0]), torch.randn(5, 3), RuntimeError, "int64 or int32"),
    (torch.tensor([1], dtype=torch.int16), torch.randn(5, 3), RuntimeError, "int64 or int32"),
    (torch.tensor([1]), torch.randn(5), RuntimeError, "must be 2-D"),
    (torch.tensor([1]), torch.randn(5, 3, 2), RuntimeError, "must be 2-D"),
    (torch.tensor([1]), torch.tensor(1.0), RuntimeError, "'weight' must be 2-D"),
])
def test_bad_arguments(idx, weight, error, match):
    with pytest.raises(error, match=match):
        ops.embedding(idx, weight)


def test_integer_weights_like_functional():
    idx = torch.tensor([[1, 4], [0, 1]])
    weight = torch.arange(15).view(5, 3)
    for w in (weight, weight.int()):
        out = ops.embedding(idx, w)
        assert out.dtype == w.dtype and torch.equal(out, F.embedding(idx, w))


def test_bad_padding_idx_like_functional():
    for padding_idx in (5, -6):
        with pytest.raises(AssertionError, match="Padding_idx"):
            F.embedding(torch.tensor([1]), torch.randn(5, 3), padding_idx=padding_idx)
        with pytest.raises(AssertionError, match="Padding_idx"):
            ops.embedding(torch.tensor([1]), torch.randn(5, 3), padding_idx=padding_idx)


def test_bad_padding_idx_is_refused_under_python_O():
    # F.embedding's own check is an assert (gone under -O); ours is a real check
    code = ("import torch, pymakemore.ops as ops\n"
            "try:\n"
            "    ops.embedding(torch.tensor([1]), torch.randn(5, 3), padding_idx=7)\n"
            "except AssertionError as e:\n"
            "    print('refused:', e)\n")
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert "refused: Padding_idx must be within num_embeddings" in out.stdout, out.stderr


def test_wrong_device():
    idx = torch.tensor([1, 2])
    weight = torch.randn(5, 3, device="meta")
    with pytest.raises(RuntimeError, match="device"):
        ops.embedding(idx, weight)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device for a CPU/CUDA mix")
def test_cpu_cuda_mix():
    with pytest.raises(RuntimeError, match="device"):
        ops.embedding(torch.tensor([1, 2]), torch.randn(5, 3, device="cuda"))


@pytest.mark.parametrize("device", DEVICES)
def test_large_vocabulary(device):
    idx = torch.randint(0, 50304, (4096,), device=device)
    weight = torch.randn(50304, 64, device=device)
    grad = torch.randn(4096, 64, device=device)
    out, gw = _run(ops.embedding, idx, weight, grad)
    out_f, gw_f = _run(F.embedding, idx, weight, grad)
    torch.testing.assert_close(out, out_f, rtol=0, atol=0)
    assert_close(gw, gw_f)
