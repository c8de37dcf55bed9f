"""PyTorch's own OpInfo samples for the three functionals, run through pymakemore: every
sample_input (outputs and gradients against the F.* original) and every error_input (the
same exception type). torch.testing._internal needs expecttest (dev requirements)."""
import pytest
import torch

from conftest import DEVICES, assert_close
from pymakemore import ops

pytest.importorskip("expecttest", reason="torch's OpInfo database needs expecttest")
from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

# in each OpInfo's calling convention (its embedding takes the weight first)
OURS = {"nn.functional.cross_entropy": ops.cross_entropy,
        "nn.functional.embedding": lambda weight, idx, **kw: ops.embedding(idx, weight, **kw),
        "nn.functional.linear": ops.linear}
OPINFOS = [o for o in op_db if o.name in OURS and o.variant_test_name == ""]


def _clone(value):
    if isinstance(value, torch.Tensor):
        copy = value.detach().clone()
        return copy.requires_grad_(value.requires_grad)
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


def _leaves(args, kwargs):
    found = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    return [t for t in found if t.requires_grad]


def _run(fn, sample):
    args = _clone((sample.input, *sample.args))
    kwargs = _clone(dict(sample.kwargs))
    out = fn(*args, **kwargs)
    leaves = _leaves(args, kwargs)
    grads = []
    if leaves and out.requires_grad:
        g = torch.Generator().manual_seed(0)
        weights = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out)
        grads = torch.autograd.grad(out, leaves, weights, allow_unused=True)
    return out.detach(), grads


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("opinfo", OPINFOS, ids=lambda o: o.name)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sample_inputs(opinfo, device, dtype):
    ours = OURS[opinfo.name]
    count = 0
    for sample in opinfo.sample_inputs(device, dtype, requires_grad=True):
        got, got_grads = _run(ours, sample)
        want, want_grads = _run(opinfo.op, sample)
        assert got.shape == want.shape and got.dtype == want.dtype, sample
        assert_close(got.to_dense() if got.is_sparse else got, want, dtype, 4)
        assert len(got_grads) == len(want_grads)
        for a, b in zip(got_grads, want_grads):
            if b is None:
                assert a is None or not a.any()
                continue
            a = a.to_dense() if a.is_sparse else a
            b = b.to_dense() if b.is_sparse else b
            assert_close(a, b, dtype, 4)
        count += 1
    assert count > 0


@pytest.mark.parametrize("opinfo", OPINFOS, ids=lambda o: o.name)
def test_error_inputs(opinfo):
    ours = OURS[opinfo.name]
    if opinfo.error_inputs_func is None:
        pytest.skip(f"{opinfo.name} has no error inputs in this torch")
    for error in opinfo.error_inputs("cpu"):
        sample = error.sample_input
        with pytest.raises(error.error_type):
            ours(sample.input, *sample.args, **sample.kwargs)
