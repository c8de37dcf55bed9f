import os
import pathlib
import subprocess
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _data_dir():
    """The data sets: $PYMAKEMORE_DATA, else ../shared/data beside the checkout, else gpu_data/
    in it (the copy that a GPU machine is sent, see bench/gpu_check.sh)."""
    if os.environ.get("PYMAKEMORE_DATA"):
        return pathlib.Path(os.environ["PYMAKEMORE_DATA"])
    shared = ROOT.parent / "shared" / "data"
    if not shared.exists() and (ROOT / "gpu_data").exists():
        return ROOT / "gpu_data"
    return shared


DATA = _data_dir()

import pymakemore  # noqa: E402,F401  (registers torch.ops.pymakemore)

HAS_CUDA = torch.cuda.is_available() and \
    torch._C._dispatch_has_kernel_for_dispatch_key("pymakemore::embedding", "CUDA")

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(
        not HAS_CUDA, reason="needs a CUDA device and the extension built with CUDA kernels")),
]


def dtypes_for(device):
    base = [torch.float32, torch.float64]
    return base + [torch.float16, torch.bfloat16] if device == "cuda" else base


# (rtol, atol) for comparing a fused op with the composite in the same dtype
TOLERANCE = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (5e-2, 5e-2),
}


def assert_close(actual, expected, dtype=None, scale=1.0):
    rtol, atol = TOLERANCE[dtype or expected.dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol * scale, equal_nan=True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def names_path():
    path = DATA / "names.txt"
    if not path.exists():
        pytest.skip(f"data set not found at {path} (see ../shared/data/README.md)")
    return path



def run_cuda_failure(code: str) -> str:
    """Runs code in a fresh process and returns its output. A device-side range check stops
    the kernel and leaves the CUDA context unusable, so such checks cannot share a process
    with other tests."""
    proc = subprocess.run([sys.executable, "-c", "import torch, pymakemore\n" + code],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode != 0, "the bad index was not caught"
    return proc.stdout + proc.stderr


def sgd_steps_by_autograd(model, x, y, idx, lrs):
    """The reference for the fused engines: one plain SGD step through autograd per row of
    idx (the training rows of that step) at rate lrs[s]; the steps' losses."""
    losses = []
    for s in range(len(idx)):
        _, loss = model(x[idx[s]], y[idx[s]])  # training mode: running statistics move too
        grads = torch.autograd.grad(loss, list(model.parameters()))
        with torch.no_grad():
            for p, g in zip(model.parameters(), grads):
                p -= lrs[s] * g
        losses.append(loss.detach())
    return torch.stack(losses)
