"""Ranks under torchrun: who this process is, and the few collectives training and evaluation need.

`torchrun --nproc_per_node N qffs-train ...` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK in their environment; `world()` joins them into one process group (NCCL on GPUs,
gloo on CPUs) the first time it is asked. Without torchrun, `world()` is the one process
(rank 0 of 1) and every collective here is the identity: nothing changes.

Rank 0 alone writes files and logs; every rank computes its shard. (torch is imported where
used: the command-line tools import this module before they need torch.)
"""

from __future__ import annotations

import operator
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List

if TYPE_CHECKING:
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
        import torch

        if device == "cuda" and self.size > 1:
            return torch.device("cuda", self.local_rank)
        return torch.device(device)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which taskset and batch schedulers narrow): the
    default number of worker processes, for Lava runtimes and (at most 8) for a DataLoader."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def launched() -> bool:
    """Whether torchrun started this process as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def main_rank() -> bool:
    """Whether this process is rank 0, or the only one, as torchrun's environment says (no group joined)."""
    return not launched() or os.environ.get("RANK", "0") == "0"


def world(device: str = "cpu") -> World:
    """This process's World; under torchrun, joins the process group first (NCCL for cuda, else gloo)."""
    if not launched():
        return World()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _active() -> bool:
    """Whether this process is in a process group (torch imported only where it may be)."""
    if not launched():
        return False
    import torch.distributed

    return torch.distributed.is_available() and torch.distributed.is_initialized()


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `values` over all ranks (float64 or int64; every rank gets it)."""
    if _active():
        import torch.distributed

        values = values.clone()
        torch.distributed.all_reduce(values)
    return values


def all_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over all ranks (the tensor itself in one process)."""
    if not _active():
        return value
    import torch.distributed

    total = value.detach().clone()
    torch.distributed.all_reduce(total)
    return total / torch.distributed.get_world_size()


def gather(obj: Any) -> List[Any]:
    """Every rank's `obj` (picklable), in rank order, on every rank; [obj] in one process."""
    if not _active():
        return [obj]
    import torch.distributed

    objects = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(objects, obj)
    return objects


def all_combined(figures: Dict[str, Any], combine: Callable[[Any, Any], Any] = operator.add) -> Dict[str, Any]:
    """Named figures (counts, largest values) of all ranks, each name's combined (summed; `max` for the largest),
    on every rank; a name some ranks lack is combined over those that have it. The figures themselves in one
    process."""
    combined: Dict[str, Any] = {}
    for part in gather(figures):
        for name, value in part.items():
            combined[name] = combine(combined[name], value) if name in combined else value
    return combined


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` (picklable), on every rank."""
    if not _active():
        return obj
    import torch.distributed

    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def lost_peer(err: BaseException) -> bool:
    """Whether an error is a collective's that another rank left (it failed, its own error says why)."""
    text = str(err)
    return launched() and isinstance(err, RuntimeError) and any(
        sign in text for sign in ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                                  "NCCL communicator was aborted"))


def rank_prefix() -> str:
    """'[rank R] ' under torchrun, for lines every rank may print; '' in one process."""
    return f"[rank {os.environ.get('RANK', '?')}] " if launched() else ""


def leave() -> None:
    """The end of a torchrun command that succeeded on every rank: the ranks wait for each other, so none exits
    while a peer still needs it. The group is not destroyed: destroy_process_group on gloo can hang once a peer
    has exited (pytorch/pytorch#75097, seen here about once in ten runs); the process's exit closes it."""
    if _active():
        import torch.distributed

        torch.distributed.barrier()
