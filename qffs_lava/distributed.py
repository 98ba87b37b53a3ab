"""Ranks under torchrun: who this process is, and the few collectives training and evaluation need.

`torchrun --nproc_per_node N qffs-train ...` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK in their environment; `world()` joins them into one process group (NCCL on GPUs,
gloo on CPUs) the first time it is asked. Without torchrun, `world()` is the one process
(rank 0 of 1) and every collective here is the identity: nothing changes.

Rank 0 alone writes files and logs; every rank computes its shard.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List

import torch


@dataclass(frozen=True)
class World:
    """This process's place among the ranks: rank in 0..size-1, local_rank on its machine (its GPU)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files and logs."""
        return self.rank == 0

    def device(self, device: str) -> torch.device:
        """The device this rank computes on: its own GPU (cuda:LOCAL_RANK) under torchrun, else `device`."""
        if device == "cuda" and self.size > 1:
            return torch.device("cuda", self.local_rank)
        return torch.device(device)


def launched() -> bool:
    """Whether torchrun started this process as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world(device: str = "cpu") -> World:
    """This process's World; under torchrun, joins the process group first (NCCL for cuda, else gloo)."""
    if not launched():
        return World()
    import torch.distributed as dist

    if not dist.is_initialized():
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `values` over all ranks (float64 or int64; every rank gets it)."""
    if _active():
        values = values.clone()
        torch.distributed.all_reduce(values)
    return values


def all_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over all ranks (the tensor itself in one process)."""
    if not _active():
        return value
    total = value.detach().clone()
    torch.distributed.all_reduce(total)
    return total / torch.distributed.get_world_size()


def gather(obj: Any) -> List[Any]:
    """Every rank's `obj` (picklable), in rank order, on every rank; [obj] in one process."""
    if not _active():
        return [obj]
    objects = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(objects, obj)
    return objects


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` (picklable), on every rank."""
    if not _active():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def leave() -> None:
    """Leave the process group (at the end of a torchrun command)."""
    if _active():
        torch.distributed.destroy_process_group()
