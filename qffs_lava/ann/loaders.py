"""Batches through PyTorch's DataLoader: memory bounded by the batch, not the split.

Every split is a `torch.utils.data.Dataset` of (image, label): images float32 (C, H, W) in
[0, 1], labels int. The built-in datasets stay in memory (`Tensors`, fetched a batch at a
time); image folders and users' datasets are read sample by sample, in worker processes
where asked.

Order and randomness, so that training is deterministic and resumable on a CPU:
- `Shuffle` draws each epoch's order from a generator (torch.randperm), the one the batch
  augmentation then draws from; under torchrun every rank draws the same order from a
  generator seeded alike and takes its share (`rank::size`, the order padded to a multiple
  of the ranks so that every rank takes the same number of batches).
- `Shard` is the evaluation order: this rank's samples rank, rank + size, ... each once.
- Per-sample transforms (image folders) draw from the global torch generator of the process
  that runs them: DataLoader seeds its workers from the loader's own generator.
"""

from __future__ import annotations

import multiprocessing.queues
import signal
import sys
import traceback as traceback_module
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from qffs_lava.distributed import World
from qffs_lava.signals import STOP_SIGNALS, stops_deferred


class Tensors(Dataset):
    """A split held in memory: (images (N, C, H, W), labels (N,)); a batch is one indexing of each."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: List[int]):
        index = torch.as_tensor(indices, dtype=torch.int64)
        return Batch(self.images[index], self.labels[index])


class Batch(tuple):
    """(images, labels) already stacked (what `Tensors.__getitems__` returns); `collate` passes it through."""

    def __new__(cls, images: torch.Tensor, labels: torch.Tensor):
        return super().__new__(cls, (images, labels))


def collate(samples) -> Tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of a batch: stacked samples, or a Batch as it is."""
    if isinstance(samples, Batch):
        return samples
    images, labels = zip(*samples)
    return torch.stack(images), torch.as_tensor(labels, dtype=torch.int64)


class Shuffle(Sampler[int]):
    """Each epoch, a random order drawn from `generator` (this rank's share of it under torchrun), less a last
    sample that would make a batch of `batch_size` of its own (batchnorm cannot train on one sample)."""

    def __init__(self, samples: int, generator: torch.Generator, world: World = World(), batch_size: int = 0):
        self.samples, self.generator, self.world = samples, generator, world
        self.share = -(-samples // world.size)
        self.taken = self.share - (batch_size > 1 and self.share % batch_size == 1)

    def __len__(self) -> int:
        return self.taken

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.samples, generator=self.generator)
        if self.world.size > 1:
            padded = torch.cat([order, order[:self.share * self.world.size - self.samples]])
            order = padded[self.world.rank::self.world.size]
        yield from order[:self.taken].tolist()


class Shard(Sampler[int]):
    """This rank's samples in order: rank, rank + size, ... (all of them in one process)."""

    def __init__(self, samples: int, world: World = World()):
        self.samples, self.world = samples, world

    def __len__(self) -> int:
        return len(range(self.world.rank, self.samples, self.world.size))

    def __iter__(self) -> Iterator[int]:
        yield from range(self.world.rank, self.samples, self.world.size)


def loader(dataset: Dataset, batch_size: int, sampler: Sampler, workers: int = 0, device: str = "cpu",
           generator: Optional[torch.Generator] = None) -> DataLoader:
    """A DataLoader over `dataset` in the sampler's order: `workers` processes reading samples (0: this one),
    pinned memory when batches go to a GPU, the workers seeded from `generator`, stop signals left to this
    process (`leave_stops_to_the_parent`)."""
    return WholeStartLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                            collate_fn=collate, pin_memory=device.startswith("cuda"), generator=generator,
                            worker_init_fn=leave_stops_to_the_parent if workers else None,
                            persistent_workers=False, prefetch_factor=4 if workers else None)


class WholeStartLoader(DataLoader):
    """A DataLoader whose workers start whole: a stop signal while it forks them is raised once its iterator, which
    ends them, is complete (raised in between, it left a half-made iterator whose cleanup failed)."""

    def __iter__(self):
        with stops_deferred():
            return super().__iter__()


def leave_stops_to_the_parent(worker_id: int) -> None:
    """In a DataLoader worker: ignore Ctrl-C, SIGTERM and SIGHUP. A terminal and `timeout` send them to the whole
    process group; a worker they killed first would make the command report a crashed DataLoader instead of the
    stop. The command handles the stop and ends its workers (a worker whose parent dies ends by itself); a worker
    that was still handing a batch over then says nothing of the pipe its parent closed (its feeder and
    fd-sharing threads would print a BrokenPipeError traceback after the command's own line)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    excepthook = sys.excepthook

    def quiet_if_the_parent_left(kind, value, traceback):
        if not issubclass(kind, PARENT_GONE):
            excepthook(kind, value, traceback)

    def feeder_error(error, obj):
        if not isinstance(error, PARENT_GONE):
            traceback_module.print_exc()

    sys.excepthook = quiet_if_the_parent_left
    multiprocessing.queues.Queue._on_queue_feeder_error = staticmethod(feeder_error)


#: What a DataLoader worker meets when its parent has closed its end: the command stopped.
PARENT_GONE = (BrokenPipeError, ConnectionResetError, EOFError)


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, pad: int) -> torch.Tensor:
    """A batch transform: a random crop of each image zero-padded by `pad` pixels, then a random horizontal flip."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]
    channels = torch.arange(images.shape[1])[None, :, None, None]
    cropped = padded[torch.arange(n)[:, None, None, None], channels, rows, cols]
    flip = torch.rand(n, generator=generator) < 0.5
    cropped[flip] = cropped[flip].flip(-1)
    return cropped


def stack(dataset: Dataset, indices: Optional[Sequence[int]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of a whole dataset (or of `indices`) as two tensors: for splits that fit in memory."""
    indices = range(len(dataset)) if indices is None else indices
    batches = [collate(dataset.__getitems__(list(indices[i:i + 1000]))) if hasattr(dataset, "__getitems__")
               else collate([dataset[j] for j in indices[i:i + 1000]]) for i in range(0, len(indices), 1000)]
    if not batches:
        raise ValueError("an empty dataset")
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
