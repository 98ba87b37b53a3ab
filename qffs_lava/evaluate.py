"""Accuracy against time steps: run a net.h5 on a backend and compare every step with the integer QANN.

`run` is `qffs.run` and what `qffs-run` reports: it checks the arguments, runs the backend
(one of `backends.BACKENDS`) and the QANN (the closed form, the target every backend
converges to), and compares their output counts after every synchronous step.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from qffs_lava import distributed
from qffs_lava.ann.loaders import Shard, Tensors, loader
from qffs_lava.backends import RunOptions, get_backend
from qffs_lava.backends.pytorch import QannBackend
from qffs_lava.costs import cost_report
from qffs_lava.dynamics import ABLATIONS, without
from qffs_lava.errors import ParameterError, QffsError
from qffs_lava.inputs import Source, check_inputs, check_labels, load_inputs
from qffs_lava.ir.netfile import read_net
from qffs_lava.ir.network import Network
from qffs_lava.latency import (
    NOT_SETTLED,
    auto_bound,
    class_accuracy,
    confusion_matrix,
    decided_at,
    quiet_from,
    settling,
)
from qffs_lava.messages import QffsNote
from qffs_lava.results import CLOSED_FORM, RunResult, Simulation

log = logging.getLogger(__name__)

#: run's argument for each RunOptions field it names differently.
RUN_ARGUMENTS = {"mechanisms": "ablate", "count_costs": "stats", "until_settled": "steps"}

#: `steps` that runs each batch until every sample in it has settled.
AUTO = "auto"


def run(net: Union[Network, str, Path], x: Source, labels=None, steps: Union[int, str] = 16, backend: str = "torch",
        mode: Optional[str] = None, *, split: str = "test", samples: Optional[int] = None,
        data_dir: Union[str, Path] = "data", download: bool = False, batch_size: int = 256, device: str = "cpu",
        workers: Optional[int] = None,
        lava_batch: Optional[int] = None, ablate: Sequence[str] = (), stats: bool = False, loihi_check: bool = True,
        progress: bool = True, description: Optional[str] = None, max_steps: Optional[int] = None) -> RunResult:
    """Run a network on samples for T = `steps` synchronous steps and compare every step with its integer QANN.

    net:         a net.h5 path (as qffs-export wrote it) or a Network (`read_net`)
    x, labels:   what qffs-run reads (inputs.load_inputs): a dataset's name ("digits", "mnist") or an image
                 folder's ("folder:PATH"), whose `split` is read from `data_dir` (fetched where `download`);
                 a .npy file; dataset values (N, *input shape), floats in [0, 1], with optional class indices
                 (N,) (an array or a .npy file); or a torch Dataset of (image, class index), read a batch at a time
    samples:     only the first N of them
    steps:       T, or "auto": run each batch until every sample in it has settled (its last spike is behind it:
                 latency.py), at most `max_steps` (default: latency.auto_bound, by which the full QFFS dynamics
                 have settled); the result's `steps` is the T reached, the largest step at which a sample was
                 seen to have settled. The torch backend stops a settled batch; the Lava backends run the bound
                 and report the same numbers
    backend:     one of backends.BACKENDS: qann, torch, lava, lava-float, loihi2
    mode:        "sync" or "pipelined", or None for the backend's own (sync for torch; the Lava
                 backends run pipelined only); results are reported in synchronous steps either way
    batch_size, device: the qann and torch backends' batch and "cpu" or "cuda"
    workers:     the Lava backends' runtimes at once (default: one per core)
    lava_batch:  the Lava backends' samples side by side in one network (default 32; 1: the per-sample
                 network that maps to Loihi 2; the spikes are the same)
    ablate:      QFFS mechanisms to leave out (dynamics.ABLATIONS; the torch backend); the QANN
                 stays the full network's
    stats:       count spikes, synaptic operations and the ANN's MACs (RunResult.costs; docs/costs.md)
    loihi_check: refuse, on a backend that computes in Loihi 2's ranges, a network outside them
                 (False: run it; values saturate)
    description: what the inputs are, for the report (e.g. "digits test split")

    Every backend with time steps reports each sample's settle step and the step its prediction is final
    (RunResult.settled_at, decided_at; latency.py); with labels, the per-class accuracy and confusion matrix.

    Under torchrun the ranks share the samples, and each returns the result for all of them. The Lava backends
    log what their workers will hold at INFO; a run otherwise than asked (fewer samples or workers) is a QffsNote.

    Example:
        >>> result = qffs.run("digits.h5", images, labels, steps=8, backend="lava")
        >>> result.accuracy_by_step[-1], result.equal_from_step
    """
    path = None
    if not isinstance(net, Network):
        path, net = str(net), read_net(net)
    runner = get_backend(backend)
    mode = runner.mode_for(mode)
    auto = isinstance(steps, str) and steps == AUTO
    if isinstance(steps, str) and not auto:
        raise ParameterError(f"{{}} must be a whole number of at least 1 or {AUTO!r}", ("steps", steps))
    if max_steps is not None and not auto:
        raise ParameterError("{} bounds {} only; a fixed T is its own bound", ("max_steps", max_steps), ("steps", AUTO))
    bound = (max_steps if max_steps is not None else auto_bound(net, mode) if runner.time_steps else 1) if auto \
        else steps
    unknown = [name for name in ablate if name not in ABLATIONS]
    if unknown:
        raise ParameterError(f"{{}}: unknown ablation {unknown[0]!r} (choose from {', '.join(ABLATIONS)})", "ablate")
    options = RunOptions(batch_size=batch_size, device=device, workers=workers, lava_batch=lava_batch,
                         mechanisms=without(*ablate), count_costs=stats, activity=runner.time_steps,
                         until_settled=auto)
    try:
        runner.check(options, net, bound, loihi_check)
    except QffsError as err:
        if auto and max_steps is not None:
            err = err.renamed({"steps": "max_steps"}) if "steps" in {p for p, _ in err.parameters} else err
        raise err.renamed(RUN_ARGUMENTS) from None
    x, labels, given = load_inputs(net, x, labels, split, samples, data_dir, download)
    description = description or given
    if isinstance(x, Dataset):
        dataset, labelled = x, True
        if len(dataset) == 0:
            raise ParameterError("no input samples: the dataset is empty")
    else:
        x = check_inputs(net, x)
        labelled = labels is not None
        labels = check_labels(labels, len(x), net.num_classes) if labelled else torch.zeros(len(x), dtype=torch.int64)
        dataset = Tensors(x, labels)
    ranks = distributed.world(device)
    started = time.perf_counter()
    qann, simulations, given = [], [], []
    reference = QannBackend()
    options = runner.plan(net, options, len(dataset), bound)
    piece = (len(dataset) if isinstance(dataset, Tensors) else
             options.chunk * (options.workers or 1) * 4 if runner.worker_processes else batch_size)
    log.debug(f"{backend} ({mode}): {len(dataset)} samples, T = {steps} (at most {bound}), {piece} at a time, "
              f"{options}")
    pieces = loader(dataset, piece, Shard(len(dataset), ranks),
                    0 if isinstance(dataset, Tensors) or runner.worker_processes else 2)
    with tqdm(total=len(pieces.sampler), desc=f"{backend} ({mode})", unit="sample", leave=False,
              disable=not progress or not ranks.main) as bar:
        for xs, ys in pieces:
            xs = xs if isinstance(dataset, Tensors) else check_inputs(net, xs)
            given.append(check_labels(ys, len(xs), net.num_classes) if labelled else ys)
            simulations.append(runner.simulate(net, xs, bound, mode, dataclasses.replace(options,
                                                                                          progress=bar.update)))
            closed = simulations[-1] if not runner.time_steps else reference.simulate(
                net, xs, bound, CLOSED_FORM, RunOptions(batch_size=batch_size, device=device))
            qann.append(closed.output_counts[0])
    simulation, qann, labels = _all_ranks(Simulation.concatenate(simulations), torch.cat(qann), torch.cat(given))
    labels = labels if labelled else None
    settle, offset = None, net.pipeline_depth if mode == "pipelined" else 0
    if runner.time_steps:
        settle = settling(simulation.active, quiet_from(net, mode), offset)
        unsettled = int((~settle.settled).sum())
        if auto:
            steps = bound if unsettled else max(int(settle.stopped_at.max()), net.bias_steps)
            simulation = simulation.resized(steps + offset)
        if auto and unsettled:  # with a fixed T, the report says so
            warnings.warn(f"{unsettled} of {len(settle.settled)} samples had not settled by T = {steps} (still "
                          f"spiking at the bound); their settled_at is None: give a larger max_steps than {bound}",
                          QffsNote)
    by_step = simulation.synchronous_counts()
    seconds = time.perf_counter() - started
    counts, qann_pred = by_step[-1], qann.argmax(dim=1)
    predictions = counts.argmax(dim=1)
    result = RunResult(
        backend=backend, mode=mode, steps=steps, samples=len(qann), device=device,
        pipeline_depth=net.pipeline_depth, bias_steps=net.bias_steps, ablated=list(ablate),
        qann_accuracy=_accuracy(qann_pred, labels), accuracy=_accuracy(predictions, labels), seconds=seconds,
        output_counts=counts.tolist(), predictions=predictions.tolist(),
        labels=labels.tolist() if labels is not None else None, qann_predictions=qann_pred.tolist(),
        net=path, inputs=description, steps_bound=bound if auto else None,
        output=net.output_kind)
    if labels is not None:
        result.confusion = confusion_matrix(result.predictions, result.labels, net.num_classes)
        result.class_accuracy = class_accuracy(result.confusion)
    if runner.time_steps:
        equal = (by_step == qann.unsqueeze(0)).all(dim=2)  # (steps, N): counts equal the QANN's
        pred_by_step = by_step.argmax(dim=2)
        result.accuracy_by_step = [_accuracy(p, labels) for p in pred_by_step]
        result.agreement_by_step = [float((p == qann_pred).double().mean()) for p in pred_by_step]
        result.equal_counts_by_step = [float(e.double().mean()) for e in equal]
        result.equal_from_step = _equal_from_step(equal)
        result.settled_at = [None if v == NOT_SETTLED else int(v) for v in settle.settled_at]
        result.decided_at = decided_at(pred_by_step).tolist()
    if simulation.costs is not None:
        every = settle is not None and bool(settle.settled.all())  # a stop step for every sample
        result.costs = cost_report(net, simulation.costs, mode, settle.stopped_at + offset if every else None)
    return result


def _all_ranks(simulation: Simulation, qann: torch.Tensor, labels: torch.Tensor):
    """(simulation, QANN counts, labels) of all samples, from every rank's share (`loaders.Shard`: rank r has
    samples r, r + size, ...); in one process, as they are."""
    parts = distributed.gather((simulation, qann, labels))
    if len(parts) == 1:
        return simulation, qann, labels
    steps = max(part[0].steps for part in parts)  # a run until settled stops each rank's batches where they settle
    parts = [(sim.resized(steps), q, y) for sim, q, y in parts]
    simulation = parts[0][0]
    size, samples = len(parts), sum(len(part[2]) for part in parts)
    counts = torch.empty((simulation.steps, samples, simulation.output_counts.shape[2]), dtype=torch.int64)
    active = None if simulation.active is None else torch.empty((simulation.steps, samples), dtype=torch.bool)
    qann = torch.empty((samples, qann.shape[1]), dtype=qann.dtype)
    labels = torch.empty(samples, dtype=torch.int64)
    for rank, (sim, q, y) in enumerate(parts):
        counts[:, rank::size], qann[rank::size], labels[rank::size] = sim.output_counts.cpu(), q.cpu(), y
        if active is not None:
            active[:, rank::size] = sim.active.cpu()
    costs = None if simulation.costs is None else sum((part[0].costs for part in parts[1:]), parts[0][0].costs)
    return Simulation(simulation.mode, simulation.steps, simulation.pipeline_depth, counts, None, costs,
                      active), qann, labels


def _accuracy(predictions: torch.Tensor, labels: Optional[torch.Tensor]) -> Optional[float]:
    return None if labels is None else float((predictions == labels).double().mean())


def holds_from_step(flags: Sequence[bool]) -> Optional[int]:
    """The first step t (1-based) from which a condition holds at every later step measured; None if not at the
    last one."""
    if not flags[-1]:
        return None
    t = len(flags)
    while t > 1 and flags[t - 2]:
        t -= 1
    return t


def _equal_from_step(equal: torch.Tensor) -> Optional[int]:
    """The first step t from which every sample's output counts equal the QANN's at every later step."""
    return holds_from_step(equal.all(dim=1).tolist())


