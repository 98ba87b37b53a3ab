"""Training: a float model, LSQ quantization-aware fine-tuning, then hardware-exact fine-tuning
(docs/training.md).

The last phase trains the integer network the exporter will write (`convert.integer`): its
forward pass is the exporter's arithmetic (Loihi 2's weight grid, thresholds, biases,
input rounding), its gradients pass straight through the roundings. After it, the
model file's QANN is that integer network (`hardware_exact`), so qffs-export reproduces
the trained accuracy exactly. The phase keeps the epoch whose integer network is best on a
validation split held out from all training (`validation`, a share of the training
split), epoch 0 (the integer network of the LSQ model) included: it changes the exported
network only where the change is measured to help.

`train(...)` is the Python API behind `qffs-train`. It is seeded and deterministic on
CPU: the same arguments give the same model file, and so does a run interrupted and resumed
from its checkpoint (`checkpoint.py`). Data comes through DataLoaders (`loaders.py`), so
memory is bounded by the batch; under torchrun each rank trains its shard with
DistributedDataParallel (`distributed.py`).
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset
from tqdm import tqdm

from qffs_lava import distributed
from qffs_lava.ann.archs import ARCHS, INPUT_SIDES, check_input_shape, make_arch, set_layer_bits
from qffs_lava.ann.checkpoint import (checkpoint_path, load_checkpoint, metrics_path, phase_seconds, save_checkpoint,
                                      write_metrics)
from qffs_lava.ann.datasets import (FOLDER_PREFIX, DatasetInfo, dataset_info, open_split, user_splits,
                                    validation_indices)
from qffs_lava.ann.folders import (EARLIER_AUGMENTATION, SMALLEST_INPUT_SIZE, ImageFolderSplit, ImageSizes,
                                   describe_folder)
from qffs_lava.ann.loaders import Shard, Shuffle, Tensors, loader, random_crop_flip
from qffs_lava.ann.lsq import LsqQuantizer
from qffs_lava.ann.modelfile import model_from_content, read_init, save_model_file
from qffs_lava.ann.models import FLOAT, build_model, input_normalization, predict, set_quantized
from qffs_lava.ann.torch_import import build_module, from_torch
from qffs_lava.backends.pytorch import TorchNetwork, check_torch_device
from qffs_lava.convert.integer import (MIN_WEIGHT_BITS, IntegerModel, check_fit, check_input_norm, input_scales,
                                     pool_notes, same_integers, scaled_layers)
from qffs_lava.convert.plan import plan_layers
from qffs_lava.distributed import World, all_mean, all_sum, gather
from qffs_lava.errors import ParameterError, QffsError
from qffs_lava.messages import QffsWarning
from qffs_lava.signals import signal_of
from qffs_lava.fileio import check_outputs, check_writable

log = logging.getLogger(__name__)

#: (float, QAT, hardware-exact epochs, batch size) per dataset, or per (dataset, architecture), when not given.
DEFAULT_SCHEDULE = {
    "digits": (40, 40, 3, 64),
    "mnist": (4, 10, 2, 64),
    "fashionmnist": (14, 6, 2, 64),
    ("fashionmnist", "resnet8"): (10, 10, 2, 64),
    "kmnist": (10, 10, 2, 64),
    "cifar10": (100, 60, 5, 128),
    "cifar100": (100, 60, 5, 128),
    "own": (30, 10, 2, 64),  # image folders and your own Datasets
}


def schedule_for(dataset: str, arch: str) -> Tuple[int, int, int, int]:
    """The default (float, QAT, hardware-exact epochs, batch size) of a dataset and architecture."""
    key = dataset if dataset in DEFAULT_SCHEDULE else "own"
    return DEFAULT_SCHEDULE.get((key, arch), DEFAULT_SCHEDULE[key])


@dataclass
class TrainConfig:
    """Everything that determines a training run (stored in the model file)."""

    dataset: str
    arch: str
    data_dir: str = "data"
    act_bits: int = 2
    out_bits: Union[int, str] = 3  # or "float": a full-precision output, read out from its potential
    layer_bits: Optional[List[Union[int, str]]] = None  # per act layer, overrides act_bits/out_bits (last: "float")
    weight_bits: Optional[int] = None
    float_epochs: Optional[int] = None
    qat_epochs: Optional[int] = None
    hardware_epochs: Optional[int] = None  # 0: no hardware-exact phase
    batch_size: Optional[int] = None
    lr: float = 1e-3
    qat_lr: float = 5e-4
    hardware_lr: float = 1e-4
    weight_decay: float = 1e-4
    validation: float = 0.1  # share of the training split held out; the phase keeps its best epoch on it
    distill: bool = False  # LSQ fine-tuning also matches the float model's softmax
    seed: int = 0
    download: bool = False
    init: Optional[str] = None  # a qffs model file, or a PyTorch state dict for the model arch builds
    small_input_stem: bool = False  # torchvision ResNets: a 3x3 stride-1 stem without max pool
    pool: str = "max"  # "avg": average pooling where lenet and the VGGs max-pool
    input_norm: Optional[List[float]] = None  # the model sees (x - mean) / std: MEAN,STD, or means then stds
    input_size: Optional[int] = None  # image folders: the side S of the S x S images the model sees (default: theirs)
    augment: Optional[str] = None  # image folders: folders.AUGMENTATIONS (default: crop-flip up to 64, else imagenet)
    device: str = "cpu"
    workers: Optional[int] = None  # DataLoader worker processes (default: 0 for built-in data, else up to 8)
    sync_bn: bool = False  # under torchrun: batchnorm statistics over all ranks' batches
    amp: Optional[str] = None  # "bf16" or "fp16": mixed precision in the float and LSQ phases

    def __post_init__(self):
        if not self.dataset.startswith(("python:", FOLDER_PREFIX)):
            dataset_info(self.dataset, augment=self.augment)
        schedule = schedule_for(self.dataset, self.arch)
        for name, default in zip(("float_epochs", "qat_epochs", "hardware_epochs", "batch_size"), schedule):
            if getattr(self, name) is None:
                setattr(self, name, default)
        check_bits("act_bits", self.act_bits)
        if self.out_bits != FLOAT:
            check_bits("out_bits", self.out_bits, why=f", or {FLOAT!r} for a full-precision output")
        if self.weight_bits is not None:
            check_bits("weight_bits", self.weight_bits, minimum=2, why=" (weights are signed)")
        for i, bits in enumerate(self.layer_bits or ()):
            if not (bits == FLOAT and i == len(self.layer_bits) - 1):  # the output's may be full precision
                check_bits("layer_bits", bits, why=f" ({FLOAT!r} for the last, the output, only)")
        for name, minimum in (("float_epochs", 0), ("qat_epochs", 0), ("hardware_epochs", 0), ("batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ParameterError(f"{{}}: must be an integer >= {minimum}, got {value!r}", name)
        if isinstance(self.validation, bool) or not isinstance(self.validation, (int, float)) \
                or not 0 <= self.validation <= 0.5:
            raise ParameterError(f"{{}}: must be a share of the training split in [0, 0.5], got {self.validation!r}",
                                 "validation")
        if self.float_epochs == 0 and self.init is None and not self.arch.startswith("module "):
            raise ParameterError("{} needs {} with a trained model file or state dict", ("float_epochs", 0), "init")
        if self.qat_epochs == 0 and self.init is None:
            raise ParameterError("{} needs {} with a quantized model file (it fine-tunes that one)",
                                 ("qat_epochs", 0), "init")
        check_torch_device(self.device)
        for name, minimum in (("input_size", SMALLEST_INPUT_SIZE), ("workers", 0)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
                raise ParameterError(f"{{}}: must be an integer >= {minimum}, got {value!r}", name)
        if self.amp not in (None, "bf16", "fp16"):
            raise ParameterError(f"{{}}: choose bf16 or fp16, got {self.amp!r}", "amp")
        if self.sync_bn and self.device != "cuda":
            raise ParameterError("{} is for GPUs: PyTorch's SyncBatchNorm runs on CUDA only", "sync_bn")


def check_bits(name: str, bits, minimum: int = 1, why: str = "") -> None:
    """ParameterError unless `bits` is an integer in minimum..8."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not minimum <= bits <= 8:
        raise ParameterError(f"{{}}: bits must be an integer in {minimum}..8{why}, got {bits!r}", name)


PHASES = {"float": "float", "qat": "QAT", "hardware": "hardware"}  # the phases in order, and their names in logs
#: Training steps between two reads of the running loss from the device, for the progress bar; without the bar the
#: loss is read once an epoch. (Each read waits for the device to finish the steps queued.)
LOSS_READ_STEPS = 50


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP during training (`signum`): the message says which checkpoint is kept;
    `resumable` whether resume=True (--resume) continues from it."""

    def __init__(self, message: str, resumable: bool, signum: int):
        super().__init__(message)
        self.resumable, self.signum = resumable, signum


@dataclass
class Fit:
    """What `Session.fit` left: the model's test and validation accuracy, and the epoch it is from (0: as it came).
    An epoch's Fit has test NaN: the test split is measured once, at the phase's end (`Session._tested`)."""

    test: float
    validation: float
    epoch: int


@dataclass
class Splits:
    """The data of a run: training (augmented per sample where its transform says), validation (held out of the
    training split), test; `augment_pad` > 0: random crops and flips as a batch transform in the float phase
    (in-memory datasets)."""

    train: Dataset
    validation: Dataset
    test: Dataset
    augment_pad: int = 0


def open_splits(cfg: TrainConfig, info: DatasetInfo, user: Optional[Tuple[Dataset, Dataset]] = None) -> Splits:
    """The run's Splits: the training split's `cfg.validation` share held out (`validation_indices`)."""
    if user is not None:
        full, test = user
    else:
        full = open_split(info, "train", cfg.data_dir, cfg.download, training=True)
        test = open_split(info, "test", cfg.data_dir)
    keep, held = validation_indices(len(full), cfg.validation)
    evaluated = full.with_training(False) if isinstance(full, ImageFolderSplit) else full
    return Splits(Subset(full, keep), Subset(evaluated, held), test, info.augment_pad)


def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam(W); no weight decay on LSQ steps, batchnorm parameters and biases."""
    steps = {id(m.step) for m in model.modules() if isinstance(m, LsqQuantizer)}
    decay = [p for p in model.parameters() if p.ndim > 1 and id(p) not in steps]
    no_decay = [p for p in model.parameters() if p.ndim <= 1 or id(p) in steps]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def tally(model: nn.Module, batches, device: torch.device, other: Optional[nn.Module] = None) -> Tuple[float, float]:
    """(top-1 accuracy, top-1 agreement with `other`) over (images, labels) batches, in eval mode, summed over
    all ranks; NaN for no samples."""
    models = [m for m in (model, other) if m is not None]
    modes = [m.training for m in models]
    counts = torch.zeros(3, dtype=torch.float64)
    with torch.no_grad():
        for m in models:
            m.eval()
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            classes = predict(model(x))
            counts[0] += float((classes == y).sum())
            if other is not None:
                counts[1] += float((classes == predict(other(x))).sum())
            counts[2] += len(y)
    for m, mode in zip(models, modes):
        m.train(mode)
    correct, agreeing, samples = all_sum(counts).tolist()
    return (correct / samples, agreeing / samples) if samples else (float("nan"), float("nan"))


class Session:
    """One training run: its configuration, data, ranks and outputs, the epoch loop every phase shares, and what
    a checkpoint saves and restores (`resumed`: the checkpoint this run continues, or None)."""

    def __init__(self, cfg: TrainConfig, splits: Splits, world: World, out: Optional[Path], progress: bool,
                 resumed: Optional[dict]):
        self.cfg, self.splits, self.world, self.progress = cfg, splits, world, progress
        self.device = world.device(cfg.device)
        self.checkpoint = checkpoint_path(out) if out is not None else None
        self.metrics_file = metrics_path(out) if out is not None else None
        self.resumed, self.resuming = resumed, resumed is not None
        self.model: Optional[nn.Module] = None  # the model trained (set by train); checkpoints save its state
        self.metrics: List[dict] = list(resumed["metrics"]) if resumed else []
        self.results: Dict[str, Any] = dict(resumed["results"]) if resumed else {}
        self.saved: Optional[Tuple[str, int, int]] = None  # (phase, epoch, epochs) of the last checkpoint written
        self.unsaved = False  # a checkpoint or the metrics file could not be written
        if cfg.workers is not None:
            self.workers = cfg.workers
        else:
            self.workers = 0 if isinstance(splits.test, Tensors) else min(8, distributed.usable_cores())

    def skipped(self, phase: str) -> bool:
        """Whether the checkpoint this run resumes is past `phase` (its results are in self.results)."""
        order = list(PHASES)
        return self.resumed is not None and order.index(phase) < order.index(self.resumed["phase"])

    def batches(self, dataset: Dataset, batch_size: int = 1000):
        """This rank's share of a dataset in order, in batches (evaluation). Its DataLoader draws its workers' seed
        from a generator of its own, not from torch's global one, which per-sample training transforms in this
        process draw from: when and how often a run evaluates changes none of its weights."""
        return loader(dataset, batch_size, Shard(len(dataset), self.world), self.workers, self.device.type,
                      torch.Generator().manual_seed(0))

    def evaluate(self, model: nn.Module, dataset: Dataset, other: Optional[nn.Module] = None):
        """The top-1 accuracy of `model` on a dataset (all ranks' shares, `tally`), or (accuracy, top-1 agreement
        with `other`) when `other` is given."""
        figures = tally(model, self.batches(dataset), self.device, other)
        return figures if other is not None else figures[0]

    def _parallel(self, model: nn.Module, phase: str) -> nn.Module:
        """The module the phase's training steps call: under torchrun, DistributedDataParallel over `model` (with
        SyncBatchNorm where --sync-bn asks, outside the hardware-exact phase, whose batchnorm is frozen)."""
        if self.world.size == 1:
            return model
        if self.cfg.sync_bn and phase != "hardware":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        # the float phase leaves the LSQ steps unused: DDP must look for unused parameters there
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=phase == "float")

    def _autocast(self, phase: str):
        """Mixed precision (--amp) for the float and LSQ phases; the hardware-exact phase computes in fp32."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.cfg.amp)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None and phase != "hardware")

    def train_one_epoch(self, net: nn.Module, phase: str, batches, optimizer: torch.optim.Optimizer, schedule,
                        scaler: torch.amp.GradScaler, augmentation: torch.Generator, teacher: Optional[nn.Module],
                        bar: tqdm) -> float:
        """One epoch of optimisation of `net` (this rank's `batches`, one optimizer and schedule step each): returns
        the epoch's mean training loss, the mean over its steps and over all ranks.

        With a teacher (the float model), a step's loss is (CE(y, out) + KL(softmax(teacher) || softmax(out))) / 2,
        as LSQ fine-tunes; the float phase of in-memory data augments each batch from `augmentation`. The losses
        are summed on the device, in float64 (the sum the host would make of them one by one); the host reads the
        sum every LOSS_READ_STEPS steps for the progress bar, and once at the end.
        """
        net.train()
        total, steps = torch.zeros((), dtype=torch.float64, device=self.device), 0
        for x, y in batches:
            if self.splits.augment_pad and phase == "float":
                x = random_crop_flip(x, augmentation, self.splits.augment_pad)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with self._autocast(phase):
                out = net(x)
                loss = F.cross_entropy(out, y)
                if teacher is not None:
                    with torch.no_grad():
                        target = F.softmax(teacher(x), dim=1)
                    loss = (loss + F.kl_div(F.log_softmax(out, dim=1), target, reduction="batchmean")) / 2
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            total += loss.detach()
            steps += 1
            bar.update(1)
            if self.progress and steps % LOSS_READ_STEPS == 0:
                bar.set_postfix(loss=f"{float(total) / steps:.4f}")
        return float(all_mean(total / steps))

    def fit(self, model: nn.Module, phase: str, epochs: int, lr: float, generator: torch.Generator,
            teacher: Optional[nn.Module] = None, keep_best: Optional[Fit] = None) -> Fit:
        """Train `epochs` epochs of `phase` with a cosine learning rate (`train_one_epoch`), each followed by its
        validation accuracy, a metrics line and a checkpoint; then measure the test accuracy of the model the phase
        ends with, once. Returns that model's Fit.

        Batches come in an order drawn from `generator`, which the batch augmentation then draws from
        (`loaders.Shuffle`). keep_best (the model's Fit as it came): the model ends as the epoch e in 0..epochs
        (0: as it came) of highest validation accuracy, the earliest on ties; without validation images, as the
        last. Without keep_best it ends as the last epoch.
        """
        cfg, splits, world = self.cfg, self.splits, self.world
        order = generator if world.size == 1 else torch.Generator().manual_seed(generator.initial_seed())
        augmentation = generator if world.size == 1 else torch.Generator().manual_seed(
            generator.initial_seed() + 7919 * world.rank)
        optimizer = _optimizer(model, lr, cfg.weight_decay)
        local_batch = cfg.batch_size // world.size
        sampler = Shuffle(len(splits.train), order, world, local_batch)
        batches = math.ceil(len(sampler) / local_batch)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * batches))
        # fp16's gradient scaler: its scale, found by skipping steps that overflow, is part of the checkpoint
        scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16" and phase != "hardware")
        first = 1
        if self.resumed is not None and self.resumed["phase"] == phase:
            first = self._restore(optimizer, schedule, scaler, order, augmentation) + 1
            kept = Fit(**self.resumed["kept"])
            best_state = self.resumed["best"]
            self.resumed = None
        else:
            kept = keep_best or Fit(float("nan"),
                                    self.evaluate(model, splits.validation) if epochs == 0 else float("nan"), 0)
            best_state = copy.deepcopy(model.state_dict()) if keep_best else None
        net = self._parallel(model, phase)
        name = PHASES[phase]
        with tqdm(total=epochs * batches, initial=(first - 1) * batches, desc=name, disable=not self.progress,
                  unit="batch", mininterval=1.0) as bar:
            for epoch in range(first, epochs + 1):
                started, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
                epoch_batches = loader(splits.train, local_batch, sampler, self.workers, self.device.type,
                                       torch.Generator().manual_seed(generator.initial_seed() + 1000 * epoch))
                loss = self.train_one_epoch(net, phase, epoch_batches, optimizer, schedule, scaler, augmentation,
                                            teacher, bar)
                training_seconds = time.perf_counter() - started
                fit = Fit(float("nan"), self.evaluate(model, splits.validation), epoch)
                bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}", val=f"{100 * fit.validation:.2f}%")
                log.info(f"{name} epoch {epoch}/{epochs}: loss {loss:.4f}, validation accuracy "
                         f"{100 * fit.validation:.2f}%")
                if not keep_best or len(splits.validation) == 0 or fit.validation > kept.validation:
                    kept = fit
                    if keep_best:
                        best_state = copy.deepcopy(model.state_dict())
                self.metrics.append({"phase": phase, "epoch": epoch, "epochs": epochs, "loss": loss,
                                     "validation_accuracy": fit.validation, "lr": lr,
                                     "images_per_second": len(sampler) * world.size / training_seconds,
                                     "seconds": time.perf_counter() - started, "ranks": world.size})
                self._save(phase, epoch, epochs, optimizer, schedule, scaler, order, augmentation, kept, best_state)
        if keep_best:
            model.load_state_dict(best_state)
        return self._tested(model, phase, kept, keep_best is not None)

    def _tested(self, model: nn.Module, phase: str, kept: Fit, chosen: bool) -> Fit:
        """The phase's end: `kept` with the test accuracy of the model the phase ends with (the one evaluation of
        the test split in the phase), logged, and recorded in the phase's last metrics line (`test_accuracy`,
        `kept_epoch`; its `seconds` take the evaluation's). `chosen`: the epoch was chosen on validation."""
        started = time.perf_counter()
        kept = replace(kept, test=self.evaluate(model, self.splits.test))
        log.info(f"{PHASES[phase]}: " + ("kept" if chosen else "ended with") + f" epoch {kept.epoch} (validation "
                 f"accuracy {100 * kept.validation:.2f}%), test accuracy {100 * kept.test:.2f}%")
        if self.metrics and self.metrics[-1]["phase"] == phase:
            last = self.metrics[-1]
            last.update(test_accuracy=kept.test, kept_epoch=kept.epoch,
                        seconds=last["seconds"] + time.perf_counter() - started)
            self._write_metrics()
        return kept

    def _save(self, phase, epoch, epochs, optimizer, schedule, scaler, order, augmentation, kept, best_state) -> None:
        """After an epoch: the checkpoint (every rank's random states, gathered) and the metrics file, by rank 0."""
        if self.checkpoint is None:
            return
        randomness = gather({"order": order.get_state(), "augmentation": augmentation.get_state(),
                             "torch": torch.get_rng_state(),
                             "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None})
        if not self.world.main:
            return
        try:
            save_checkpoint(self.checkpoint, {
                "config": asdict(self.cfg), "phase": phase, "epoch": epoch, "ranks": self.world.size,
                "model": self.model.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "scaler": scaler.state_dict(), "random": randomness,
                "kept": asdict(kept), "best": best_state,
                "results": self.results, "metrics": self.metrics})
            self.saved = (phase, epoch, epochs)
            write_metrics(self.metrics_file, self.metrics)
        except QffsError as err:  # a full disk: training goes on, the model is written (or kept) at the end
            self._unsaved(err)

    def _write_metrics(self) -> None:
        """The metrics file, by rank 0 (after a phase's test accuracy is added to its last line)."""
        if self.metrics_file is None or not self.world.main:
            return
        try:
            write_metrics(self.metrics_file, self.metrics)
        except QffsError as err:
            self._unsaved(err)

    def _unsaved(self, err: QffsError) -> None:
        """A checkpoint or the metrics file could not be written (a full disk): a warning, the first time."""
        if not self.unsaved:
            log.warning(f"{err}; training goes on, but cannot resume from this epoch")
        self.unsaved = True

    def _restore(self, optimizer, schedule, scaler, order, augmentation) -> int:
        """Optimizer, schedule, gradient scaler and this rank's random states from the checkpoint resumed; returns
        its epoch."""
        state = self.resumed
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if state.get("scaler"):  # {} where the scaler is off; absent from checkpoints written before it was kept
            scaler.load_state_dict(state["scaler"])
        if state["ranks"] == self.world.size:
            mine = state["random"][self.world.rank]
            order.set_state(mine["order"])
            augmentation.set_state(mine["augmentation"])
            torch.set_rng_state(mine["torch"])
            if mine["cuda"] is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(mine["cuda"], self.device)
        else:
            log.warning(f"{self.checkpoint} was written by {state['ranks']} ranks, this run has "
                        f"{self.world.size}: batches and augmentation are drawn afresh from here")
        log.info(f"resuming from {self.checkpoint}: {PHASES[state['phase']]} epoch {state['epoch']} done")
        return state["epoch"]

    def interruption(self, signum: int) -> TrainingInterrupted:
        """What an interruption by signal `signum` leaves: the last checkpoint, if any."""
        if self.checkpoint is None:
            return TrainingInterrupted("training interrupted (no out, so no checkpoint)", False, signum)
        if self.saved is None and not self.resuming:
            return TrainingInterrupted("training interrupted before its first epoch ended: no checkpoint yet", False,
                                       signum)
        where = f"{PHASES[self.saved[0]]} epoch {self.saved[1]} of {self.saved[2]}" if self.saved else "as it was"
        return TrainingInterrupted(f"training interrupted; {self.checkpoint} keeps it ({where})", True, signum)


def _new_model(cfg: TrainConfig, info, module: Optional[nn.Module], state: Optional[Dict[str, torch.Tensor]]
               ) -> Tuple[dict, nn.Module]:
    """(architecture, model) for cfg.arch: a built-in name, MODULE:FUNCTION or torchvision:NAME (torch_import),
    or the nn.Module given; with `state` (--init's PyTorch state dict), its weights. ParameterError for a model
    whose outputs are not the dataset's classes."""
    if module is None and cfg.arch not in ARCHS:
        module = build_module(cfg.arch, info.input_shape, info.num_classes, cfg.small_input_stem)
    if module is not None:
        if cfg.pool != "max":
            raise ParameterError(f"{{}} is for the built-in architectures; {cfg.arch} pools as its code says", "pool")
        if state is not None:
            _load_state(module, state, cfg.init)
        architecture, model = from_torch(module, info.input_shape, cfg.act_bits, cfg.out_bits, cfg.layer_bits,
                                         cfg.weight_bits, name=cfg.arch)
        if architecture["num_classes"] != info.num_classes:
            raise ParameterError(f"{{}} {cfg.arch}: the model returns {architecture['num_classes']} values per sample, "
                                 f"but {info.name} has {info.num_classes} classes: build it with "
                                 f"num_classes={info.num_classes}", "arch")
        return architecture, model
    try:
        architecture = make_arch(cfg.arch, info.input_shape, info.num_classes, cfg.act_bits, cfg.out_bits, cfg.pool)
        if cfg.layer_bits:
            architecture = set_layer_bits(architecture, cfg.layer_bits)
    except ValueError as err:
        raise QffsError(str(err)) from None
    model = build_model(architecture, weight_bits=cfg.weight_bits)
    if state is not None:
        set_quantized(model, False)
        _load_state(model, state, cfg.init)
    return architecture, model


def _folder_choices(cfg: TrainConfig, init: Optional[dict]) -> Tuple[Optional[str], Optional[str]]:
    """Where an image folder's input size and augmentation come from, in words (None: chosen from its images);
    a model file given as --init brings its own where they are not given."""
    if not cfg.dataset.startswith(FOLDER_PREFIX):
        return None, None
    sources = ["as given" if cfg.input_size is not None else None, "as given" if cfg.augment is not None else None]
    if init is not None:
        if cfg.input_size is None:
            cfg.input_size, sources[0] = init["input_shape"][1], f"that of {cfg.init}"
        if cfg.augment is None:
            cfg.augment, sources[1] = init["train"].get("augment") or EARLIER_AUGMENTATION, f"that of {cfg.init}"
    return sources[0], sources[1]


def _load_state(module: nn.Module, state: dict, path: str) -> None:
    """module.load_state_dict(state) but for LSQ quantizers (a float model has none), its mismatches a
    ParameterError that names them."""
    state = {k: v for k, v in state.items() if "quantizer" not in k}
    expected = {k: v for k, v in module.state_dict().items() if "quantizer" not in k}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise ParameterError(f"{{}} {path} does not fit the model {{}} builds: "
                             + "; ".join(f"{what}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                                         for what, keys in (("missing", missing), ("unexpected", unexpected),
                                                            ("other shapes", sorted(wrong))) if keys), "init", "arch")
    module.load_state_dict(state, strict=False)


def train(
    dataset,
    arch: str | nn.Module,
    out: Optional[str | Path] = None,
    progress: bool = True,
    resume: bool = False,
    **options,
) -> dict:
    """Train a float model (or load `init`), LSQ fine-tune it, fine-tune its integer network (the hardware-exact
    phase, unless hardware_epochs is 0), and save the model file to `out`.

    Deterministic on the CPU (the default device); `device="cuda"` trains on a GPU. Under torchrun, every rank
    trains its shard of each batch (DistributedDataParallel) and rank 0 writes the files.

    `dataset`: a built-in name, "folder:PATH" (an image folder, docs/training.md), or your own data as (train,
    test), each a torch Dataset of (image (C, H, W) in [0, 1], class index) or (images, labels) tensors.
    `arch`: a built-in name, "MODULE:FUNCTION" or "torchvision:NAME" (a function that builds an
    nn.Module, see torch_import.build_module), or an nn.Module itself, whose weights are the start
    (float_epochs=0 fine-tunes them as they are). Options are TrainConfig's fields.

    With `out`, every epoch writes a checkpoint and a metrics line beside it (`checkpoint.py`); `resume=True`
    continues from the checkpoint, and gives the model file an uninterrupted run gives. Ctrl-C raises
    TrainingInterrupted, which says what was kept.

    Each epoch, each phase's end and the accuracies are logged at INFO (qffs_lava.messages: on stderr unless the
    program sets up logging; `progress` is the progress bars); what to act on, such as an `init` whose float
    model is near chance, is a QffsWarning.

    Returns the model file's content, including the measured test accuracies: float, lsq
    (after LSQ fine-tuning), qann (the QANN as trained: after the hardware-exact phase, that
    of the integer network) and, with the phase, integer_before and agreement_before (the
    integer network the LSQ model exports, and its top-1 agreement with the LSQ model).

    Example:
        >>> content = qffs.train("digits", "mlp", out="digits.pt")   # about 10 s on a CPU
        >>> content["accuracy"]["float"], content["accuracy"]["qann"]
        >>> qffs.train("mnist", "lenet", out="lenet.pt", float_epochs=2, qat_epochs=2, data_dir="data")
        >>> qffs.train((train_set, test_set), "resnet8", out="mine.pt", float_epochs=20, qat_epochs=10)
    """
    module = arch if isinstance(arch, nn.Module) else None
    user = None
    if not isinstance(dataset, str):
        info, *user = user_splits(dataset)
        dataset = info.name
    cfg = TrainConfig(dataset=dataset, arch=f"module {type(arch).__name__}" if module is not None else arch,
                      **options)
    init, state = read_init(cfg.init) if cfg.init is not None else (None, None)  # a wrong file fails before the data
    chosen = _folder_choices(cfg, init)
    if user is None:
        info = dataset_info(cfg.dataset, cfg.input_size, cfg.augment)
    elif cfg.input_size is not None or cfg.augment is not None:
        raise ParameterError("{} is for image folders; your own data comes at its own size, transformed as your "
                             "Dataset does", "input_size" if cfg.input_size is not None else "augment")
    if info.path:  # the folder's choices, made now, are the run's: in the checkpoint and the model file
        cfg.input_size, cfg.augment = info.input_shape[1], info.augment
        info = replace(info, sizes=info.sizes or ImageSizes.of(info.path, list(info.classes)))
        try:
            check_input_shape(cfg.arch, info.input_shape)
        except ValueError as err:
            raise ParameterError(f"{err}: the images of {info.path} are {info.sizes}; give {{}}, to which they are "
                                 "resized", ("input_size", INPUT_SIDES[cfg.arch][1])) from None
    if out is not None:
        check_writable(out)
        check_outputs({"out": out}, {"init": cfg.init})
    elif resume:
        raise ParameterError("{} needs {}: the checkpoint is kept beside the model file", "resume", "out")
    if cfg.input_norm is not None:
        try:
            input_normalization(cfg.input_norm, info.input_shape[0])
        except ValueError as err:
            raise ParameterError(f"{{}}: {err}", "input_norm") from None
    world = distributed.world(cfg.device)
    if cfg.batch_size % world.size:
        raise ParameterError(f"{{}} is the global batch, shared by the {world.size} ranks: give a multiple of "
                             f"{world.size}", ("batch_size", cfg.batch_size))
    if init is not None and init["dataset"] != info.name:
        raise ParameterError(f"{{}} {cfg.init} was trained on {init['dataset']}, not {info.name}", "init")
    if init is not None and init["train"].get("arch", init["arch"]["name"]) != cfg.arch:
        trained = init["train"].get("arch", init["arch"]["name"])
        raise ParameterError(f"{{}} {cfg.init} is a model file of the architecture {trained!r}, which it brings "
                             f"with it; {{}} {cfg.arch!r} contradicts it: give {{}}",
                             "init", "arch", ("arch", trained))
    resumed = None
    if resume:
        resumed = load_checkpoint(checkpoint_path(out), asdict(cfg))
    elif out is not None and checkpoint_path(out).exists():
        raise ParameterError(f"{checkpoint_path(out)} holds an unfinished run: pass {{}} to continue it, or delete "
                             "it to start again", "resume")
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    generator = torch.Generator().manual_seed(cfg.seed)
    session = Session(cfg, open_splits(cfg, info, user), world, Path(out) if out is not None else None,
                      progress and world.main, resumed)
    device = session.device
    log.debug(f"{cfg.arch} on {info.name}: {len(session.splits.train)} training, {len(session.splits.validation)} "
              f"validation and {len(session.splits.test)} test images; {device}, {world.size} rank(s), "
              f"{session.workers} DataLoader workers, batch {cfg.batch_size}")
    if info.path:
        log.info(describe_folder(info.path, list(info.classes), info.sizes, len(session.splits.validation),
                                 len(session.splits.test), cfg.input_size, cfg.augment, *chosen))

    if init is not None:
        init, model = model_from_content(cfg.init, init)
        architecture, input_norm = init["arch"], init["input_norm"]
        if cfg.input_norm is not None and input_normalization(cfg.input_norm, info.input_shape[0]) != input_norm:
            raise ParameterError(f"{{}} {cfg.input_norm} contradicts {{}} {cfg.init}, a model file trained with the "
                                 f"input normalization {input_norm}, which it brings with it", "input_norm", "init")
        float_acc = init["accuracy"]["float"]
        if init["train"].get("validation", 0) != cfg.validation:
            warnings.warn(f"{cfg.init} (init) was trained with a validation share of "
                          f"{init['train'].get('validation', 0)}, this run holds out {cfg.validation}: some "
                          "validation images were in its training data, so choosing by validation favours the model "
                          "as it came", QffsWarning, stacklevel=2)
    else:
        if cfg.qat_epochs == 0:
            raise ParameterError("{} needs {} with a quantized qffs model file (it fine-tunes that one)",
                                 ("qat_epochs", 0), "init")
        architecture, model = _new_model(cfg, info, module, state)
        set_quantized(model, False)
        input_norm = input_normalization(cfg.input_norm or (0.0, 1.0), info.input_shape[0])
        model.set_input_norm(input_norm)
        float_acc = None
        if cfg.float_epochs == 0 and not session.skipped("float"):
            float_acc = session.evaluate(model.to(device), session.splits.test)
            if float_acc < 1.5 / info.num_classes:
                warnings.warn(f"the float model from {cfg.init} has {100 * float_acc:.2f}% test accuracy, near "
                              f"chance ({100 / info.num_classes:.0f}%): was it trained on normalized inputs? Declare "
                              "them with input_norm (--input-norm MEAN,STD)", QffsWarning, stacklevel=2)
    plan_layers(architecture)  # the export rule, checked before any epoch: what cannot be exported is not trained
    for note in pool_notes(architecture):
        log.info(note)
    check_input_norm(architecture, input_norm)
    check_fit(architecture, info.levels)  # and a network no integer grid fits into Loihi 2
    model.to(device)
    session.model = model
    if resumed is not None:
        set_quantized(model, resumed["phase"] != "float")
        model.load_state_dict(resumed["model"])
    try:
        record = _phases(session, model, architecture, info, input_norm, float_acc, generator)
    except KeyboardInterrupt as err:
        raise session.interruption(signal_of(err)) from None
    if out is None:
        return {**record, "state_dict": model.state_dict()}
    if not world.main:
        return record
    try:
        content = save_model_file(out, model, record)
    except QffsError as err:
        raise QffsError(f"{err}; {keep_elsewhere(out, model, record)}") from None
    session.checkpoint.unlink(missing_ok=True)
    log.info(f"wrote {out} (per-epoch metrics: {session.metrics_file})")
    return content


def _phases(session: Session, model: nn.Module, architecture: dict, info: DatasetInfo, input_norm: dict,
            float_acc: Optional[float], generator: torch.Generator) -> dict:
    """The three phases (those a resumed checkpoint is not past), then the model file's record."""
    cfg, results = session.cfg, session.results
    if session.skipped("float"):
        float_acc = results["float"]
    elif cfg.float_epochs > 0:
        set_quantized(model, False)
        float_acc = session.fit(model, "float", cfg.float_epochs, cfg.lr, generator).test
    results["float"] = float_acc
    teacher = None
    if cfg.distill:
        teacher = copy.deepcopy(model).eval()
        set_quantized(teacher, False)
        if session.skipped("float"):
            teacher.load_state_dict(results["teacher"])
        results["teacher"] = teacher.state_dict()
    set_quantized(model, True)
    if session.skipped("qat"):
        lsq = Fit(**results["lsq"])
    else:
        lsq = session.fit(model, "qat", cfg.qat_epochs, cfg.qat_lr, generator, teacher=teacher)
    results["lsq"] = asdict(lsq)
    validation = {"lsq": lsq.validation, "qann": lsq.validation}
    accuracies = {"float": float_acc, "lsq": lsq.test, "qann": lsq.test, "validation": validation}
    kept_epoch = None
    if "grid" not in results:
        results["grid"] = choose_grid(session, model, architecture, info.levels, input_norm)
    grid = results["grid"]
    if cfg.hardware_epochs:
        integer = IntegerModel(model, architecture, info.levels, input_norm, grid and grid["input_scale"])
        if not (session.resumed and session.resumed["phase"] == "hardware"):
            test_acc, agreement = session.evaluate(integer, session.splits.test, other=model)
            results["before"] = {"integer_before": test_acc, "agreement_before": agreement,
                                 "validation": session.evaluate(integer, session.splits.validation)}
        before = results["before"]
        accuracies.update(integer_before=before["integer_before"], agreement_before=before["agreement_before"])
        validation["integer_before"] = before["validation"]
        log.info(f"before the hardware-exact phase: LSQ QANN {100 * lsq.test:.2f}%, the integer network it exports "
                 f"{100 * accuracies['integer_before']:.2f}% (validation {100 * validation['integer_before']:.2f}%), "
                 f"top-1 agreement {100 * accuracies['agreement_before']:.2f}%")
        phase_generator = torch.Generator().manual_seed(cfg.seed + 1)  # --init lsq.pt adds the same phase
        tuned = session.fit(integer, "hardware", cfg.hardware_epochs, cfg.hardware_lr, phase_generator,
                            teacher=teacher,
                            keep_best=Fit(accuracies["integer_before"], validation["integer_before"], 0))
        accuracies["qann"], validation["qann"], kept_epoch = tuned.test, tuned.validation, tuned.epoch
    seconds = phase_seconds(session.metrics)
    qann = "hardware-exact QANN (the exported network)" if cfg.hardware_epochs else "QANN"
    log.info(f"float accuracy {100 * float_acc:.2f}%, {qann} accuracy {100 * accuracies['qann']:.2f}% "
             f"({info.name} test split, {len(session.splits.test)} images), trained in {sum(seconds.values()):.0f} s "
             f"(hardware-exact phase {seconds['hardware']:.0f} s"
             + (f", kept its epoch {kept_epoch} of {cfg.hardware_epochs}" if cfg.hardware_epochs else "") + ")")
    acts = [node["bits"] for node in architecture["nodes"] if node["op"] == "act"]
    return {
        **({"grid": grid} if grid else {}),
        "arch": architecture,
        "quantized": True,
        "hardware_exact": bool(cfg.hardware_epochs),
        "bits": {"act": max(acts[:-1], default=None), "out": acts[-1], "weight": cfg.weight_bits, "layers": acts},
        "input_norm": input_norm,
        "dataset": info.name,
        "input_shape": list(info.input_shape),
        "num_classes": info.num_classes,
        "classes": list(info.classes) or None,
        "input_levels": info.levels,
        "accuracy": accuracies,
        "train": {**asdict(cfg), "validation_images": len(session.splits.validation),
                  "hardware_epoch_kept": kept_epoch, "ranks": session.world.size,
                  "torch": str(torch.__version__), "threads": torch.get_num_threads()},
    }


def choose_grid(session: Session, model: nn.Module, architecture: dict, levels: float, input_norm: dict
                ) -> Optional[dict]:
    """The integer grid, chosen once after LSQ training (docs/training.md, "Fitting Loihi 2"): None where the
    finest (the dataset's levels, every channel's weights filling the 8-bit range) fits Loihi 2, else the record of
    the finest that fits by its price: of the input scales (`integer.input_scales`), each with every channel's mu
    capped to fit, the one whose integer network agrees best with the unconstrained one on the validation split
    (then the more accurate, then the finer) among those whose channels keep MIN_WEIGHT_BITS."""
    with torch.no_grad():
        reference, _ = IntegerModel(model, architecture, levels, input_norm, fit=False).network()
        networks = [IntegerModel(model, architecture, levels, input_norm, scale).network()[0]
                    for scale in input_scales(levels)]
    if same_integers(networks[0], reference):
        return None
    scaled = [scaled_layers(network, reference) for network in networks]
    keeps = [all(layer["weight_bits"] >= MIN_WEIGHT_BITS for layer in s.values()) for s in scaled]
    nets = [TorchNetwork(n).to(session.device) for n in [reference] + networks]
    tally = torch.zeros(len(nets), 2, dtype=torch.float64)  # per network: correct, agreeing with the reference
    for x, y in session.batches(session.splits.validation):
        predictions = [predict(net.qann(x)).cpu() for net in nets]
        for i, p in enumerate(predictions):
            tally[i, 0] += float((p == y).sum())
            tally[i, 1] += float((p == predictions[0]).sum())
    tally = all_sum(tally)
    seen = int(tally[0, 1])
    shares = (tally / seen).tolist() if seen else [[None, None]] * len(nets)
    eligible = [i for i, keep in enumerate(keeps) if keep] or list(range(len(networks)))
    best = eligible[0] if not seen else max(eligible, key=lambda i: (shares[i + 1][1], shares[i + 1][0], -i))
    scale = input_scales(levels)[best]
    record = {"input_scale": scale, "scaled": scaled[best], "validation_images": seen,
              "accuracy": shares[best + 1][0], "agreement": shares[best + 1][1], "unconstrained_accuracy": shares[0][0]}
    layers = ", ".join(f"{name} ({s['channels']} of {s['of']} channels, down to {s['weight_bits']:.1f}-bit weights)"
                       for name, s in scaled[best].items())
    price = (f"agreement with the unconstrained integer network {100 * record['agreement']:.2f}%, accuracy "
             f"{100 * record['accuracy']:.2f}% against {100 * record['unconstrained_accuracy']:.2f}% on {seen} "
             "validation images" if seen else "not measured (no validation images)")
    log.info(f"grid: the finest integer grid does not fit Loihi 2's 24-bit membrane; took input scale {scale:g} "
             + ("(the dataset's levels)" if best == 0 else f"(x_int up to {math.floor(scale + 0.5)}, of {levels:g} "
                "levels)") + (f" and scaled {layers}" if layers else ", no weights scaled") + f"; price: {price}")
    if not keeps[best]:
        log.warning(f"no grid leaves every channel's largest weight {MIN_WEIGHT_BITS} bits or more: the price above "
                    "is what fitting Loihi 2 costs")
    return record


def keep_elsewhere(out: str | Path, model: nn.Module, record: dict) -> str:
    """Where a trained model whose model file could not be written at `out` was kept instead (a new folder in the
    temporary directory), said as a sentence; or that it could not be kept anywhere."""
    try:
        folder = Path(tempfile.mkdtemp(prefix="qffs-model-"))
    except OSError as err:
        return f"the trained model could not be kept anywhere either ({err.strerror or err})"
    try:
        save_model_file(folder / Path(out).name, model, record)
    except QffsError as err:
        shutil.rmtree(folder, ignore_errors=True)
        return f"the trained model could not be kept anywhere either ({err})"
    return f"the trained model was kept in {folder / Path(out).name}: move it where you want it"

