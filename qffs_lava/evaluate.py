"""Accuracy against time steps: run a net.h5 on a backend and compare every step with the integer QANN.

`run` is `qffs.run` and what `qffs-run` reports: it checks the arguments, runs the backend
(one of `backends.BACKENDS`) and the QANN (the closed form, the target every backend
converges to), and compares their output counts after every synchronous step.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from qffs_lava import distributed
from qffs_lava.ann.loaders import Shard, Tensors, loader
from qffs_lava.backends import RunOptions, get_backend, names_with
from qffs_lava.backends.pytorch import QannBackend
from qffs_lava.costs import cost_report
from qffs_lava.dynamics import ABLATIONS, without
from qffs_lava.errors import ParameterError, QffsFormatError
from qffs_lava.ir.loihi import loihi_problems
from qffs_lava.ir.netfile import read_net
from qffs_lava.ir.network import Network
from qffs_lava.results import CLOSED_FORM, RunResult, Simulation


def check_inputs(network: Network, x) -> torch.Tensor:
    """Dataset values shaped (N, *input shape) (or (N, prod(shape))) as a float64 tensor; ParameterError otherwise."""
    try:
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ParameterError(f"inputs are not a numeric array: {err}") from None
    shape = tuple(network.input.shape)
    if x.dtype.is_complex or not (x.dtype.is_floating_point or x.dtype in (torch.uint8, torch.int64, torch.int32)):
        raise ParameterError(f"inputs must be real numbers, got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ParameterError("no input samples")
    if tuple(x.shape[1:]) != shape and not (x.ndim == 2 and x.shape[1] == int(np.prod(shape))):
        resized = x.ndim == 4 and len(shape) == 3 and x.shape[1] == shape[0] and shape[1] == shape[2]
        trained = f", augment={network.meta['augment']!r}" if "augment" in network.meta else ""
        raise ParameterError(f"inputs have shape {tuple(x.shape)}; this network takes "
                             f"(N, {', '.join(map(str, shape))})"
                             + (f": images of another size; an image folder loads as the network was trained with "
                                f"qffs.load_dataset('folder:PATH', split, input_size={shape[1]}{trained})"
                                if resized else ""))
    x = x.to(torch.float64).reshape(-1, *shape)
    if not torch.isfinite(x).all():
        raise ParameterError("inputs contain NaN or infinite values")
    if x.min() < 0 or x.max() > 1:
        raise ParameterError(f"inputs must be dataset values in [0, 1], got [{float(x.min()):g}, "
                             f"{float(x.max()):g}]")
    return x


def check_labels(labels, samples: int, classes: int) -> torch.Tensor:
    """N class indices in 0..classes-1 as int64; ParameterError naming what is wrong otherwise."""
    values = np.asarray(labels)
    if values.ndim == 2 and values.shape == (samples, classes) and np.isin(values, (0, 1)).all() \
            and (values.sum(axis=1) == 1).all():
        raise ParameterError(f"labels are one-hot {values.shape}; give the {samples} class indices instead "
                             "(labels.argmax(axis=1))")
    if values.ndim != 1:
        raise ParameterError(f"labels must be one class index per sample, shape ({samples},); got shape "
                             f"{values.shape}")
    if len(values) != samples:
        raise ParameterError(f"{len(values)} labels for {samples} inputs")
    if values.dtype.kind not in "iuf" or (values.dtype.kind == "f" and not (
            np.isfinite(values).all() and (values == np.round(values)).all())):
        fraction = values[values != np.round(values)] if values.dtype.kind == "f" else []
        raise ParameterError(f"labels must be whole numbers (class indices), got dtype {values.dtype}"
                             + (f" with value {fraction[0]}" if len(fraction) else ""))
    outside = (values < 0) | (values >= classes)
    if outside.any():
        index = int(np.argmax(outside))
        raise ParameterError(f"labels must be class indices 0..{classes - 1} (the network has {classes} outputs); "
                             f"labels[{index}] is {values[index]:g}")
    return torch.as_tensor(values.astype(np.int64))


def run(net: Union[Network, str, Path], x, labels=None, steps: int = 16, backend: str = "torch",
        mode: Optional[str] = None, *, batch_size: int = 256, device: str = "cpu", workers: Optional[int] = None,
        lava_batch: Optional[int] = None, ablate: Sequence[str] = (), stats: bool = False, loihi_check: bool = True,
        progress: bool = True, description: Optional[str] = None) -> RunResult:
    """Run a network on samples for T = `steps` synchronous steps and compare every step with its integer QANN.

    net:         a net.h5 path (as qffs-export wrote it) or a Network (`read_net`)
    x, labels:   dataset values (N, *input shape), floats in [0, 1]; optional class indices (N,); or x a
                 torch Dataset of (image, class index), read a batch at a time (`open_split` gives one)
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

    Under torchrun the ranks share the samples, and each returns the result for all of them.

    Example:
        >>> result = qffs.run("digits.h5", images, labels, steps=8, backend="lava")
        >>> result.accuracy_by_step[-1], result.equal_from_step
    """
    path = None
    if not isinstance(net, Network):
        path, net = str(net), read_net(net)
    runner = get_backend(backend)
    mode = runner.mode_for(mode)
    if workers is not None and not runner.worker_processes:
        raise ParameterError(f"{{}} is for the {', '.join(names_with('worker_processes'))} backends, which run in "
                             f"worker processes; the {backend} backend runs in this one", ("workers", workers))
    if lava_batch is not None and not runner.lava_tag:
        raise ParameterError(f"{{}} is for the {', '.join(names_with('lava_tag'))} backends, which build Lava "
                             f"networks; the {backend} backend builds none", ("lava_batch", lava_batch))
    if runner.time_steps and steps < net.bias_steps:
        raise ParameterError(f"{{}}: T must cover the network's K = {net.bias_steps} steps, the steps over which "
                             "its input is presented", ("steps", steps))
    if batch_size < 1:
        raise ParameterError("{} must be at least 1", ("batch_size", batch_size))
    unknown = [name for name in ablate if name not in ABLATIONS]
    if unknown:
        raise ParameterError(f"{{}}: unknown ablation {unknown[0]!r} (choose from {', '.join(ABLATIONS)})", "ablate")
    if ablate and not runner.ablations:
        raise ParameterError(f"{{}} runs on the {' and '.join(names_with('ablations'))} backend only, not {backend}",
                             "ablate")
    if stats and not runner.costs:
        raise ParameterError(f"{{}} counts spikes over time steps, which the {backend} backend has not (choose "
                             f"{' or '.join(names_with('costs'))})", "stats")
    options = RunOptions(batch_size=batch_size, device=device, workers=workers, lava_batch=lava_batch,
                         mechanisms=without(*ablate), count_costs=stats)
    runner.check(options)
    if runner.loihi_ranges:
        problems = loihi_problems(net)
        if problems and loihi_check:
            raise QffsFormatError(f"the network leaves Loihi 2's ranges, which the {backend} backend computes in "
                                  "({} runs it anyway): " + "; ".join(problems), ("loihi_check", False))
    if isinstance(x, Dataset):
        if labels is not None:
            raise ParameterError("{} come from the dataset: give them with tensors x, not with a Dataset", "labels")
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
    options = runner.plan(net, options, len(dataset), steps, verbose=progress and ranks.main)
    piece = (len(dataset) if isinstance(dataset, Tensors) else
             options.chunk * (options.workers or 1) * 4 if runner.worker_processes else batch_size)
    pieces = loader(dataset, piece, Shard(len(dataset), ranks),
                    0 if isinstance(dataset, Tensors) or runner.worker_processes else 2)
    with tqdm(total=len(pieces.sampler), desc=f"{backend} ({mode})", unit="sample", leave=False,
              disable=not progress or not ranks.main) as bar:
        for xs, ys in pieces:
            xs = xs if isinstance(dataset, Tensors) else check_inputs(net, xs)
            given.append(check_labels(ys, len(xs), net.num_classes) if labelled else ys)
            simulations.append(runner.simulate(net, xs, steps, mode, dataclasses.replace(options,
                                                                                          progress=bar.update)))
            closed = simulations[-1] if runner.name == reference.name else reference.simulate(
                net, xs, steps, CLOSED_FORM, options)
            qann.append(closed.output_counts[0])
    simulation, qann, labels = _all_ranks(Simulation.concatenate(simulations), torch.cat(qann), torch.cat(given))
    labels = labels if labelled else None
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
        net=path, inputs=description)
    if runner.time_steps:
        equal = (by_step == qann.unsqueeze(0)).all(dim=2)  # (steps, N): counts equal the QANN's
        pred_by_step = by_step.argmax(dim=2)
        result.accuracy_by_step = [_accuracy(p, labels) for p in pred_by_step]
        result.agreement_by_step = [float((p == qann_pred).double().mean()) for p in pred_by_step]
        result.equal_counts_by_step = [float(e.double().mean()) for e in equal]
        result.equal_from_step = _equal_from_step(equal)
    if simulation.costs is not None:
        result.costs = cost_report(net, simulation.costs, mode)
    return result


def _all_ranks(simulation: Simulation, qann: torch.Tensor, labels: torch.Tensor):
    """(simulation, QANN counts, labels) of all samples, from every rank's share (`loaders.Shard`: rank r has
    samples r, r + size, ...); in one process, as they are."""
    parts = distributed.gather((simulation, qann, labels))
    if len(parts) == 1:
        return simulation, qann, labels
    size, samples = len(parts), sum(len(part[2]) for part in parts)
    counts = torch.empty((simulation.steps, samples, simulation.output_counts.shape[2]), dtype=torch.int64)
    qann = torch.empty((samples, qann.shape[1]), dtype=qann.dtype)
    labels = torch.empty(samples, dtype=torch.int64)
    for rank, (sim, q, y) in enumerate(parts):
        counts[:, rank::size], qann[rank::size], labels[rank::size] = sim.output_counts.cpu(), q.cpu(), y
    costs = None if simulation.costs is None else sum((part[0].costs for part in parts[1:]), parts[0][0].costs)
    return Simulation(simulation.mode, simulation.steps, simulation.pipeline_depth, counts, None, costs), qann, labels


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


