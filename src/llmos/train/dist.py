"""Process-group setup for DDP under ``torchrun`` (gloo on CPU, nccl on CUDA).

A plain ``llmos pretrain`` is a world of one; under ``torchrun --nproc-per-node N`` the same code
runs in N processes, each taking its share of every global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def init_distributed(device_name: str) -> DistInfo:
    """Join the torchrun process group if there is one; otherwise a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world=world, local_rank=local_rank, device=device)


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum a few numbers over all ranks (identity in a world of one)."""
    if info.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
