"""Picking the device for a run, with one-line errors for the command-line tools."""
from __future__ import annotations

import torch


class DeviceError(Exception):
    """A device that cannot run the request; the message is one line for the user."""


def has_cuda_kernels() -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key("pymakemore::embedding", "CUDA")


def resolve_device(name: str, ops: str = "fused") -> torch.device:
    """cpu, cuda or auto (cuda when a GPU is there); checks the fused ops can run there."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda asked for, but no CUDA device is available")
    if name == "cuda" and ops == "fused" and not has_cuda_kernels():
        raise DeviceError("this build of pymakemore has no CUDA kernels (it was built without "
                          "nvcc); rebuild with CUDA_HOME set, or use --ops torch")
    return torch.device(name)
