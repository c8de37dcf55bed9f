import pytest
import torch
import torch.nn.functional as F

from conftest import DEVICES, HAS_CUDA, assert_close, dtypes_for, run_cuda_failure
from pymakemore import ops, reference

OPS = torch.ops.pymakemore

SHAPES = [(1, 1), (32, 27), (7, 3), (0, 27), (5, 1), (3, 50257), (1000, 2), (129, 129)]
REDUCTIONS = ["mean", "sum", "none"]


def _run(fn, x, t, grad=None, **kw):
    leaf = x.detach().clone().requires_grad_(True)
    loss = fn(leaf, t, **kw)
    loss.backward(torch.ones_like(loss) if grad is None else grad)
    return loss.detach(), leaf.grad


def _targets(n, c, device, dtype=torch.int64, ignore=None, frac=0.3):
    t = torch.randint(0, c, (n,), device=device, dtype=dtype)
    if ignore is not None and n:
        mask = torch.rand(n, device=device) < frac
        t[mask] = ignore
    return t


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
def test_matches_functional_and_reference(device, shape, reduction, label_smoothing):
    n, c = shape
    for dtype in dtypes_for(device):
        x = torch.randn(n, c, device=device, dtype=dtype) * 3
        t = _targets(n, c, device)
        grad = torch.randn(n, device=device, dtype=dtype) if reduction == "none" else None
        kw = dict(reduction=reduction, label_smoothing=label_smoothing)
        loss, gx = _run(ops.cross_entropy, x, t, grad, **kw)
        loss_f, gx_f = _run(F.cross_entropy, x, t, grad, **kw)
        loss_r, gx_r = _run(reference.cross_entropy, x, t, grad, **kw)
        assert loss.dtype == dtype and loss.shape == loss_f.shape
        scale = max(1.0, n ** 0.5) if reduction == "sum" else 1.0
        assert_close(loss, loss_f, dtype, scale * 4)
        assert_close(loss, loss_r, dtype, scale * 4)
        assert_close(gx, gx_f, dtype)
        assert_close(gx, gx_r, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore_index", [-100, 0, 5])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("target_dtype", [torch.int64, torch.int32])
def test_ignore_index(device, reduction, ignore_index, label_smoothing, target_dtype):
    x = torch.randn(64, 27, device=device, dtype=torch.float64)
    t = _targets(64, 27, device, target_dtype, ignore=ignore_index)
    kw = dict(reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing)
    loss, gx = _run(ops.cross_entropy, x, t, **kw)
    loss_f, gx_f = _run(F.cross_entropy, x, t.long(), **kw)
    torch.testing.assert_close(loss, loss_f)
    torch.testing.assert_close(gx, gx_f)
    assert torch.all(gx[t == ignore_index] == 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_class_weights(device, reduction, label_smoothing):
    x = torch.randn(50, 7, device=device, dtype=torch.float64)
    t = _targets(50, 7, device, ignore=-100)
    w = torch.rand(7, device=device, dtype=torch.float64) + 0.1
    kw = dict(weight=w, reduction=reduction, label_smoothing=label_smoothing)
    loss, gx = _run(ops.cross_entropy, x, t, **kw)
    loss_f, gx_f = _run(F.cross_entropy, x, t, **kw)
    loss_r, gx_r = _run(reference.cross_entropy, x, t, **kw)
    torch.testing.assert_close(loss, loss_f)
    torch.testing.assert_close(gx, gx_f)
    torch.testing.assert_close(loss, loss_r)
    torch.testing.assert_close(gx, gx_r)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_all_rows_ignored_gives_zero_gradient(device, label_smoothing):
    x = torch.randn(4, 3, device=device)
    t = torch.full((4,), -100, device=device)
    for reduction in REDUCTIONS:
        kw = dict(reduction=reduction, label_smoothing=label_smoothing)
        loss, gx = _run(ops.cross_entropy, x, t, **kw)
        loss_f, _ = _run(F.cross_entropy, x, t, **kw)
        assert torch.equal(gx, torch.zeros_like(gx)), reduction
        torch.testing.assert_close(loss, loss_f, equal_nan=True)  # mean: nan, as torch


def _assert_like_functional(x, t, label_smoothing):
    """Loss and gradient as F.cross_entropy's, NaN where it gives NaN, per row and summed."""
    for reduction in ("none", "sum"):
        kw = dict(reduction=reduction, label_smoothing=label_smoothing)
        loss, gx = _run(ops.cross_entropy, x, t, **kw)
        loss_f, gx_f = _run(F.cross_entropy, x, t, **kw)
        torch.testing.assert_close(loss, loss_f, equal_nan=True)
        torch.testing.assert_close(gx, gx_f, equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_extreme_logits(device, label_smoothing):
    inf = float("inf")
    x = torch.tensor([
        [1e4, -1e4, 0.0, 3.0],
        [-1e4, -1e4, -1e4, -1e4 + 1],
        [-inf, 0.0, 1.0, -inf],
        [-inf, -inf, 5.0, -inf],
        [1e4, 1e4, 1e4, 1e4],
        [-inf, -inf, -inf, -inf],
        [inf, 1.0, 0.0, 0.0],
        [float("nan"), 1.0, 0.0, 0.0],
    ], device=device)
    t = torch.tensor([1, 3, 2, 2, 0, 1, 1, 1], device=device)
    _assert_like_functional(x, t, label_smoothing)
    loss, gx = _run(ops.cross_entropy, x[:4], t[:4], reduction="none")
    assert torch.isfinite(loss).all() and torch.isfinite(gx).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_long_rows_with_infinite_logits(device, label_smoothing):
    # rows longer than the short-row paths (257+ classes), with -inf, +inf and NaN logits
    x = torch.randn(5, 1000, device=device)
    x[0, [3, 500, 999]] = float("-inf")
    x[1, :] = float("-inf")
    x[1, 700] = 1.0
    x[2, 600] = float("inf")
    x[3, 900] = float("nan")
    t = torch.tensor([1, 700, 5, 6, 7], device=device)
    _assert_like_functional(x, t, label_smoothing)
    assert torch.isfinite(_run(ops.cross_entropy, x[:1], t[:1])[0])


@pytest.mark.parametrize("device", DEVICES)
def test_large_vocabulary_gradient_rows_sum_to_zero(device):
    x = torch.randn(8, 50257, device=device)
    t = _targets(8, 50257, device)
    _, gx = _run(ops.cross_entropy, x, t, reduction="sum")
    assert gx.sum(dim=1).abs().max() < 1e-5  # softmax - onehot sums to 0 per row


@pytest.mark.parametrize("device", DEVICES)
def test_large_vocabulary_log_sum_exp_to_float_precision(device):
    # one float chain of 50,304 exponentials drifts ~5e-5 from the exact log-sum-exp (what a
    # build without AVX-512 once gave); the saved lse and the loss must stay within about
    # one float ulp of it (lse is about 15 here)
    x = torch.randn(64, 50304, device=device) * 3
    t = _targets(64, 50304, device)
    loss, lse = OPS.cross_entropy(x, t, None, "none", -100, 0.0)
    exact_lse = torch.logsumexp(x.double(), dim=1)
    exact_loss = F.cross_entropy(x.double(), t, reduction="none")
    assert (lse - exact_lse).abs().max() < 1e-6
    assert (loss.double() - exact_loss).abs().max() < 2e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_autocast_computes_in_float32(dtype):
    x, t = torch.randn(8, 27).to(dtype), torch.randint(0, 27, (8,))
    w = torch.rand(27)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = ops.cross_entropy(x, t, weight=w, label_smoothing=0.1)
        want = F.cross_entropy(x, t, weight=w, label_smoothing=0.1)
    assert ours.dtype == want.dtype == torch.float32
    torch.testing.assert_close(ours, want)


@pytest.mark.parametrize("device", DEVICES)
def test_other_input_ranks(device):
    # unbatched (C,) with a 0-d target, and (N, C, d1, d2) with (N, d1, d2)
    x1, t1 = torch.randn(5, device=device), torch.tensor(3, device=device)
    x4, t4 = torch.randn(2, 5, 3, 4, device=device), torch.randint(0, 5, (2, 3, 4),
                                                                   device=device)
    for x, t in ((x1, t1), (x4, t4)):
        for reduction in REDUCTIONS:
            loss, gx = _run(ops.cross_entropy, x, t, reduction=reduction, label_smoothing=0.1)
            loss_f, gx_f = _run(F.cross_entropy, x, t, reduction=reduction,
                                label_smoothing=0.1)
            assert loss.shape == loss_f.shape
            assert_close(loss, loss_f)
            assert_close(gx, gx_f)


def test_other_input_ranks_bad_targets():
    with pytest.raises(ValueError, match="batch_size"):
        ops.cross_entropy(torch.randn(2, 5, 3), torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(RuntimeError, match="expected target of shape"):
        ops.cross_entropy(torch.randn(2, 5, 3), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(RuntimeError, match="0-D target"):
        ops.cross_entropy(torch.randn(5), torch.zeros(1, dtype=torch.long))


@pytest.mark.filterwarnings("ignore:size_average and reduce args")
def test_probability_targets_and_legacy_arguments_follow_functional():
    x = torch.randn(6, 4)
    probs = torch.softmax(torch.randn(6, 4), dim=1)
    torch.testing.assert_close(ops.cross_entropy(x, probs), F.cross_entropy(x, probs))
    t = torch.randint(0, 4, (6,))
    torch.testing.assert_close(ops.cross_entropy(x, t, size_average=False),
                               F.cross_entropy(x, t, reduction="sum"))
    torch.testing.assert_close(ops.cross_entropy(x, t, None, None, -100, False),
                               F.cross_entropy(x, t, reduction="none"))


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(device):
    x = torch.randn(27, 32, device=device).t()
    t = torch.randint(0, 27, (64,), device=device)[::2]
    for reduction in REDUCTIONS:
        grad = torch.randn(64, device=device)[::2] if reduction == "none" else None
        loss, gx = _run(ops.cross_entropy, x, t, grad, reduction=reduction)
        loss_f, gx_f = _run(F.cross_entropy, x, t, grad, reduction=reduction)
        assert_close(loss, loss_f, scale=8)
        assert_close(gx, gx_f)


def test_deterministic_across_threads():
    x = torch.randn(20_000, 27)
    t = torch.randint(0, 27, (20_000,))
    first = _run(ops.cross_entropy, x, t, reduction="sum")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        again = _run(ops.cross_entropy, x, t, reduction="sum")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_on_cpu(dtype):
    x = torch.randn(32, 27, dtype=dtype)
    t = torch.randint(0, 27, (32,))
    loss, gx = _run(ops.cross_entropy, x, t)
    loss_r, gx_r = _run(reference.cross_entropy, x.float(), t)
    assert loss.dtype == dtype and gx.dtype == dtype
    assert_close(loss, loss_r.to(dtype), dtype)
    assert_close(gx, gx_r.to(dtype), dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bad", [27, -1, -5, 1000])
@pytest.mark.parametrize("target_dtype", [torch.int64, torch.int32])
def test_out_of_range_target_names_the_value(device, bad, target_dtype):
    if device == "cuda":
        out = run_cuda_failure(
            f"t = torch.tensor([0, 26, {bad}, 3], device='cuda', dtype={target_dtype})\n"
            "pymakemore.ops.cross_entropy(torch.randn(4, 27, device='cuda'), t)\n"
            "torch.cuda.synchronize()")
        assert f"target {bad} at position 2 is out of range [0, 27)" in out
        return
    x = torch.randn(4, 27, device=device)
    t = torch.tensor([0, 26, bad, 3], device=device, dtype=target_dtype)
    with pytest.raises(IndexError, match=rf"target {bad} at position 2 is out of bounds"):
        ops.cross_entropy(x, t)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_class_weights_whose_sum_overflows_give_finite_gradients(device, reduction):
    # the weights' total is inf in float32; without label smoothing it takes no part
    w = torch.tensor([3e38, 3e38, 1.0, 1.0], device=device)
    x = torch.randn(6, 4, device=device)
    t = torch.tensor([2, 3, 3, 2, 2, 3], device=device)
    got, want = x.clone().requires_grad_(), x.clone().requires_grad_()
    loss = ops.cross_entropy(got, t, weight=w, reduction=reduction)
    loss_f = F.cross_entropy(want, t, weight=w, reduction=reduction)
    g = torch.rand_like(loss)
    loss.backward(g)
    loss_f.backward(g)
    assert torch.isfinite(got.grad).all()
    assert_close(loss, loss_f)
    assert_close(got.grad, want.grad)


def test_backward_op_checks_targets():
    x, lse = torch.randn(3, 4), torch.zeros(3)
    with pytest.raises(IndexError, match="target 7 at position 1"):
        torch.ops.pymakemore.cross_entropy_backward(torch.tensor(1.0), x, torch.tensor([0, 7, 1]),
                                                    None, lse, "mean", -100, 0.0)
    # with class weights, a far-out target is reported, not read through (mean's divisor)
    far = torch.tensor([0, 10**12, 1])
    with pytest.raises(IndexError, match=f"target {10**12} at position 1"):
        torch.ops.pymakemore.cross_entropy_backward(torch.tensor(1.0), x, far, torch.ones(4),
                                                    lse, "mean", -100, 0.0)
    with pytest.raises(IndexError, match=f"target {10**12} at position 1"):
        ops.cross_entropy(x.requires_grad_(), far, weight=torch.ones(4))


@pytest.mark.parametrize("x,t,kw,error,match", [
    (torch.randn(4, 3), torch.tensor([0, 1, 2]), {}, ValueError,
     r"Expected input batch_size \(4\) to match target batch_size \(3\)"),
    (torch.ones(4, 3, dtype=torch.long), torch.tensor([0, 1, 2, 1]), {}, NotImplementedError,
     "integer logits"),  # F.cross_entropy's error class
    (torch.randn(4, 3), torch.tensor([0, 1, 2, 1], dtype=torch.int16), {}, RuntimeError,
     "int64 or int32"),
    (torch.randn(4, 3), torch.zeros(4, 1, dtype=torch.long), {}, RuntimeError, "target"),
    (torch.randn(4, 3), torch.tensor([0, 1, 2, 1]), {"reduction": "foo"}, ValueError,
     "foo is not a valid value for reduction"),
    (torch.randn(4, 3), torch.tensor([0, 1, 2, 1]), {"label_smoothing": 1.5}, RuntimeError,
     "label_smoothing must be between 0.0 and 1.0"),
    (torch.randn(4, 3), torch.tensor([0, 1, 2, 1]), {"weight": torch.ones(2)}, RuntimeError,
     "weight tensor should be defined either for all 3 classes"),
    (torch.randn(4, 3), torch.tensor([0, 1, 2, 1]), {"weight": torch.ones(3).double()},
     RuntimeError, "same dtype"),
    (torch.randn(4, 3), torch.tensor([0, 1, 2, 1], device="meta"), {}, RuntimeError, "device"),
])
def test_bad_arguments(x, t, kw, error, match):
    with pytest.raises(error, match=match):
        ops.cross_entropy(x, t, **kw)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device for a CPU/CUDA mix")
def test_cpu_cuda_mix():
    with pytest.raises(RuntimeError, match="device"):
        ops.cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, 2, 1], device="cuda"))


@pytest.mark.parametrize("device", DEVICES)
def test_large_vocabulary_parity(device):
    x = torch.randn(64, 50304, device=device)
    t = _targets(64, 50304, device, ignore=-100)
    for reduction in REDUCTIONS:
        loss, gx = _run(ops.cross_entropy, x, t, reduction=reduction, label_smoothing=0.1)
        loss_f, gx_f = _run(F.cross_entropy, x, t, reduction=reduction, label_smoothing=0.1)
        assert_close(loss, loss_f, scale=8)
        assert_close(gx, gx_f)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gradient_from_the_forward_scaled_and_retained(device, reduction):
    """With a one-value loss the forward writes the gradient and the backward scales it: any
    grad_loss, a loss used twice, and a second backward through a retained graph (which
    recomputes it) must all give F.cross_entropy's gradients."""
    x = torch.randn(40, 27, device=device, dtype=torch.float64)
    t = _targets(40, 27, device, ignore=-100)
    kw = dict(reduction=reduction, label_smoothing=0.1)
    ours, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    loss, loss_f = ops.cross_entropy(ours, t, **kw), F.cross_entropy(ref, t, **kw)
    (2.5 * loss).backward(retain_graph=True)
    (2.5 * loss_f).backward(retain_graph=True)
    torch.testing.assert_close(ours.grad, ref.grad)
    (-loss).backward()  # the retained graph again: recomputed from the saved lse
    (-loss_f).backward()
    torch.testing.assert_close(ours.grad, ref.grad)
    # one loss feeding two terms: both backward calls through the same node add up
    ours.grad = ref.grad = None
    loss = ops.cross_entropy(ours, t, **kw)
    (loss + loss * 3).backward()
    (lambda l: l + l * 3)(F.cross_entropy(ref, t, **kw)).backward()
    torch.testing.assert_close(ours.grad, ref.grad)


def test_gradient_op_pair_matches_the_backward_op():
    x = torch.randn(9, 6, dtype=torch.float64)
    t = torch.tensor([0, 5, -100, 2, 2, 1, 3, 4, 0])
    w = torch.rand(6, dtype=torch.float64) + 0.5
    for reduction in ["mean", "sum"]:
        loss, lse, grad = OPS.cross_entropy_with_grad(x, t, w, reduction, -100, 0.2)
        loss2, lse2 = OPS.cross_entropy(x, t, w, reduction, -100, 0.2)
        assert torch.equal(loss, loss2) and torch.equal(lse, lse2)
        for scale in [1.0, -0.5]:
            g = torch.tensor(scale, dtype=torch.float64)
            scaled = grad.clone()
            OPS.scale_grad_(scaled, g)
            want = OPS.cross_entropy_backward(g, x, t, w, lse, reduction, -100, 0.2)
            torch.testing.assert_close(scaled, want, rtol=1e-15, atol=1e-15)
    with pytest.raises(RuntimeError, match="needs reduction 'mean' or 'sum'"):
        OPS.cross_entropy_with_grad(x, t, None, "none", -100, 0.0)
    with pytest.raises(RuntimeError, match="grad_loss must hold one value"):
        OPS.scale_grad_(grad, torch.ones(2, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="same dtype"):
        OPS.scale_grad_(grad, torch.tensor(2.0))


def _capped_composite(x, t, weight, reduction, label_smoothing, softcap, z_loss,
                      ignore_index=-100):
    """softcap and z-loss spelled out over F.cross_entropy's per-row losses."""
    z = x if softcap is None else softcap * torch.tanh(x / softcap)
    rows = F.cross_entropy(z, t, weight, ignore_index=ignore_index, reduction="none",
                           label_smoothing=label_smoothing)
    counted = t != ignore_index
    row_weight = counted.to(x.dtype) if weight is None else \
        torch.where(counted, weight[torch.where(counted, t, 0)], torch.zeros_like(rows))
    lse = torch.logsumexp(z, dim=1)
    rows = rows + z_loss * lse * lse * row_weight
    if reduction == "none":
        return rows
    return rows.sum() if reduction == "sum" else rows.sum() / row_weight.sum()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("softcap,z_loss", [(None, 1e-2), (2.5, 0.0), (4.0, 1e-3)])
@pytest.mark.parametrize("weighted", [False, True])
def test_softcap_and_z_loss(reduction, softcap, z_loss, weighted):
    x = torch.randn(30, 9, dtype=torch.float64) * 3
    t = _targets(30, 9, "cpu", ignore=-100)
    weight = torch.rand(9, dtype=torch.float64) + 0.5 if weighted else None
    kw = dict(reduction=reduction, label_smoothing=0.1)
    grad = torch.randn(30, dtype=torch.float64) if reduction == "none" else None
    loss, gx = _run(lambda x, t, **k: ops.cross_entropy(x, t, weight, softcap=softcap,
                                                          z_loss=z_loss, **k), x, t, grad, **kw)
    loss_c, gx_c = _run(lambda x, t, **k: _capped_composite(x, t, weight, softcap=softcap,
                                                              z_loss=z_loss, **k),
                        x, t, grad, **kw)
    assert_close(loss, loss_c, torch.float64)
    assert_close(gx, gx_c, torch.float64)
    leaf = x.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: ops.cross_entropy(x, t, weight, softcap=softcap, z_loss=z_loss, **kw),
        (leaf,))


def test_an_infinite_softcap_is_no_cap():
    x, t = torch.randn(4, 5, requires_grad=True), torch.tensor([0, 1, 2, 3])
    loss = ops.cross_entropy(x, t, softcap=float("inf"))
    (gx,) = torch.autograd.grad(loss, x)
    loss_f = F.cross_entropy(x, t)
    (gx_f,) = torch.autograd.grad(loss_f, x)
    assert torch.isfinite(loss) and torch.isfinite(gx).all()
    assert_close(loss, loss_f)
    assert_close(gx, gx_f)
    w = torch.randn(5, 3, requires_grad=True)
    h = torch.randn(4, 3)
    lce = ops.linear_cross_entropy(h, w, t, softcap=float("inf"))
    assert_close(lce, F.cross_entropy(F.linear(h, w), t))


def test_softcap_and_z_loss_refuse_bad_values():
    x, t = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="softcap must be > 0"):
        ops.cross_entropy(x, t, softcap=0.0)
    with pytest.raises(ValueError, match="z_loss must be >= 0"):
        ops.cross_entropy(x, t, z_loss=-1.0)
    with pytest.raises(ValueError, match="z_loss must be >= 0, got nan"):
        ops.cross_entropy(x, t, z_loss=float("nan"))
    with pytest.raises(ValueError, match="class-index targets"):
        ops.cross_entropy(x, torch.softmax(x, 1), z_loss=1e-3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("magnitude", [1e4, 1e9, 1e12, 1e16, 1e17, 1e30])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_huge_logits_tied_or_not_give_the_right_gradient(device, magnitude, reduction):
    # a row's p = exp(x - lse) with lse = max + log(sum) in one float64 loses log(sum) once the
    # max's ulp exceeds it: tied logits at 1e17 gave p = 1 for every class
    for dtype in (torch.float32, torch.float64):
        steps = torch.arange(5, dtype=torch.float64)
        rows = torch.stack([
            torch.full((5,), magnitude, dtype=torch.float64),           # tied
            torch.full((5,), -magnitude, dtype=torch.float64),          # tied, negative
            magnitude * (1 + steps * 1e-7),                             # close (smooth at 1e4)
            magnitude + steps,                                          # 1 apart
        ]).to(dtype).to(device)
        t = torch.tensor([0, 1, 2, 4], device=device)
        g = torch.tensor(0.7, dtype=dtype, device=device) if reduction == "mean" else \
            torch.tensor([0.5, -1.0, 2.0, 1.0], dtype=dtype, device=device)
        x, x_f = rows.clone().requires_grad_(), rows.clone().requires_grad_()
        loss = ops.cross_entropy(x, t, reduction=reduction)
        loss.backward(g, retain_graph=True)
        first = x.grad.clone()
        loss.backward(g)  # a second backward through the retained graph: from the saved lse
        F.cross_entropy(x_f, t, reduction=reduction).backward(g)
        assert_close(loss, F.cross_entropy(rows, t, reduction=reduction))
        assert_close(first, x_f.grad)
        # (the first from the forward's pass, the second recomputed: the same to rounding)
        assert_close(x.grad, 2 * first)


def test_dtype_edges_as_functional():
    x = torch.randn(6, 5, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3, 4, 0], dtype=torch.uint8)
    ours, = torch.autograd.grad(ops.cross_entropy(x, t), x)
    theirs, = torch.autograd.grad(F.cross_entropy(x, t), x)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ops.cross_entropy(x, t, reduction="none"),
                               F.cross_entropy(x, t, reduction="none"))
    with pytest.raises(NotImplementedError, match="integer logits"):
        ops.cross_entropy(torch.randint(0, 5, (6, 5)), t.long())
    with pytest.raises(NotImplementedError):
        F.cross_entropy(torch.randint(0, 5, (6, 5)), t.long())


def test_softcap_of_half_logits_is_computed_in_float32():
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 50, (512,), generator=g)
    for dtype in (torch.bfloat16, torch.float16):
        x = (torch.randn(512, 50, generator=g) * 30).to(dtype).requires_grad_()
        loss = ops.cross_entropy(x, t, softcap=20.0, reduction="sum")
        assert loss.dtype == dtype
        ours, = torch.autograd.grad(loss, x)
        xf = x.detach().float().requires_grad_()
        exact, = torch.autograd.grad(
            F.cross_entropy(20.0 * torch.tanh(xf / 20.0), t, reduction="sum"), xf)
        # gradients of at least 1e-3 within 5% (a cap rounded to the input dtype: dozens not)
        off = ((ours.float() - exact).abs() > 0.05 * exact.abs()) & (exact.abs() > 1e-3)
        assert off.sum().item() == 0, (dtype, off.sum().item())
        none = ops.cross_entropy(x, t, softcap=20.0, reduction="none", z_loss=1e-4)
        assert none.dtype == dtype and none.shape == (512,)


def test_editing_the_logits_of_a_mean_loss_before_backward_raises():
    x = torch.randn(4, 5, requires_grad=True)
    y = x * 1.0
    loss = ops.cross_entropy(y, torch.tensor([0, 1, 2, 3]))
    with torch.no_grad():
        y.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_vmap_over_the_backward(reduction):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 7, generator=g, requires_grad=True)
    t = torch.randint(0, 7, (6,), generator=g)
    ours = ops.cross_entropy(x, t, reduction=reduction)
    theirs = F.cross_entropy(x, t, reduction=reduction)
    n = ours.numel()
    v = torch.eye(n).reshape(n, *ours.shape) if reduction == "none" else torch.randn(3)
    got, = torch.autograd.grad(ours, x, v, is_grads_batched=True)
    want, = torch.autograd.grad(theirs, x, v, is_grads_batched=True)
    torch.testing.assert_close(got, want)


_PEAK_SCRIPT = """
import re, sys, torch
import torch.nn.functional as F
from pymakemore import ops

def status(key):
    return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))

x = torch.empty(2048, 32768, dtype=getattr(torch, sys.argv[1])).normal_().requires_grad_()
t = torch.randint(0, 32768, (2048,))
fn = ops.cross_entropy if sys.argv[2] == "ours" else F.cross_entropy
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak resident set starts again from the current one
before = status("VmRSS")
torch.autograd.grad(fn(x, t), x)
print(status("VmHWM") - before)
"""


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_peak_memory_with_gradients_at_most_torchs(dtype):
    # the gradient written by the forward, in the logits' dtype (float16/bfloat16: chunks of
    # float32), and handed to autograd: no more than F.cross_entropy's peak (the growth of
    # the process's peak resident set over forward + backward, each in a fresh process, the
    # peak reset first: Linux's /proc/self/clear_refs)
    import os
    import subprocess
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak resident set")
    import sys
    peak = {who: int(subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, dtype, who],
                                    capture_output=True, text=True, check=True).stdout)
            for who in ("ours", "torch")}
    logits_kib = 2048 * 32768 * (2 if dtype == "bfloat16" else 4) // 1024
    assert peak["torch"] >= logits_kib  # torch's gradient at least
    assert peak["ours"] <= peak["torch"], peak


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(9, 7), (3, 7, 4)])
def test_returned_z_loss_and_lse_match_torch(reduction, shape):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    t_shape = (shape[0], *shape[2:])
    t = torch.randint(0, 7, t_shape, generator=g)
    t.view(-1)[::4] = -100
    weight = torch.rand(7, generator=g, dtype=torch.float64) + 0.5
    loss, z, lse = ops.cross_entropy(x, t, weight, reduction=reduction, label_smoothing=0.1,
                                     softcap=3.0, z_loss=0.02, return_z_loss=True,
                                     return_lse=True)
    capped = 3.0 * torch.tanh(x / 3.0)
    want_lse = torch.logsumexp(capped, dim=1)
    counted = t != -100
    row_weight = torch.where(counted, weight[torch.where(counted, t, 0)], 0.0)
    z_rows = 0.02 * want_lse ** 2 * row_weight
    want_z = {"none": z_rows, "sum": z_rows.sum(), "mean": z_rows.sum() / row_weight.sum()}
    want_loss = F.cross_entropy(capped, t, weight, reduction=reduction,
                                label_smoothing=0.1) + want_z[reduction]
    for got, want in ((loss, want_loss), (z, want_z[reduction]), (lse, want_lse)):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want)
    got = torch.autograd.grad(loss.sum() + z.sum() + lse.sum(), x)[0]
    want = torch.autograd.grad(want_loss.sum() + want_z[reduction].sum() + want_lse.sum(), x)[0]
    torch.testing.assert_close(got, want)
    assert ops.cross_entropy(x, t, return_z_loss=True)[1].item() == 0.0  # no z-loss asked
    with pytest.raises(ValueError, match="need class-index targets"):
        ops.cross_entropy(x, torch.softmax(x, 1).detach(), return_lse=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_a_mean_over_class_weights_of_zero_is_nan_as_torch(device, label_smoothing):
    # every target's class weight 0: torch's target term is 0 / 0, NaN even with smoothing
    x = torch.randn(4, 5, device=device)
    t = torch.tensor([0, 1, 0, 1], device=device)
    weight = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0], device=device)
    want = F.cross_entropy(x, t, weight, label_smoothing=label_smoothing)
    assert want.isnan()
    assert ops.cross_entropy(x, t, weight, label_smoothing=label_smoothing).isnan()
    assert reference.cross_entropy(x.cpu(), t.cpu(), weight.cpu(),
                                   label_smoothing=label_smoothing).isnan()
    assert ops.linear_cross_entropy(x, torch.eye(5, device=device), t, ce_weight=weight,
                                    label_smoothing=label_smoothing).isnan()
