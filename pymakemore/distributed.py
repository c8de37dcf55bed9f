"""Data-parallel training under torchrun: one process per device, DistributedDataParallel
averaging the gradients, NCCL on GPUs and gloo on CPUs.

Every rank draws the same global minibatch indices (same generator, same seed) and keeps its
own contiguous share, so N processes see exactly the examples one process would at the same
global --batch-size. Collectives time out (--ddp-timeout) instead of hanging on a failed or
stalled rank.
"""
from __future__ import annotations

import datetime
import os
import socket
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This rank's contiguous share of n items (sizes differ by at most one)."""
        return slice(self.rank * n // self.world, (self.rank + 1) * n // self.world)


SINGLE = Group()


def from_env() -> Group:
    """The torchrun process group this process belongs to (WORLD_SIZE, RANK, LOCAL_RANK), or
    SINGLE when started on its own."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    return Group(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def local_launcher(processes: int) -> list[str]:
    """The command that starts `processes` ranks on this machine under torchrun, talking over
    a free port on 127.0.0.1; append the module or script to run (e.g. "-m",
    "pymakemore.train") and its arguments."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1",
            f"--nproc-per-node={processes}", "--master-addr=127.0.0.1", f"--master-port={port}"]


def start(group: Group, device: torch.device, timeout_s: float) -> torch.device:
    """Joins the process group; the device this rank trains on (cuda:LOCAL_RANK on GPUs)."""
    if device.type == "cuda":
        device = torch.device("cuda", group.local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                            **({"device_id": device} if device.type == "cuda" else {}))
    return device


def stop(group: Group) -> None:
    """Every rank tears the process group down together: a rank that destroys its side while
    another still writes its outputs can abort in gloo's teardown."""
    if group.enabled and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def mean_(tensor: torch.Tensor, group: Group) -> torch.Tensor:
    """In place: the tensor's mean over the ranks."""
    if group.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(group.world)
    return tensor


def sum_(tensor: torch.Tensor, group: Group) -> torch.Tensor:
    """In place: the tensor's sum over the ranks."""
    if group.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def wrap(model: torch.nn.Module, group: Group, device: torch.device) -> torch.nn.Module:
    """The module to train with: DistributedDataParallel over `model` under torchrun."""
    if not group.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                   else None)
