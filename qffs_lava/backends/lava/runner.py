"""The Lava runner: a QffsNetwork (procs/network.py) with a source and recorders attached, run for many samples.

A chunk of samples runs back to back in one runtime: the source ring buffer holds each
sample's K steps of graded input followed by silence, one sample per reset interval of
`period = T + D` steps (time is pipelined: each Dense/Conv hop delays one step), and the
output layer's spikes (every layer's, with record_spikes or count_costs) are recorded to files.
Every runtime runs in a worker process, several at once (workers.py, which also ends them on
errors and stop signals). Workers use numpy only: with count_costs they return tallies of their
recordings (costs.tally), and this process counts the costs from them; with activity, which
samples sent any spike at each step (latency.recorded_activity), whence the settle steps.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from qffs_lava.backends.base import RunOptions
from qffs_lava.backends.lava.adapter import create_runtime, import_lava
from qffs_lava.backends.lava.layout import from_lava_layout, lava_shape
from qffs_lava.backends.lava.workers import run_in_workers
from qffs_lava.distributed import usable_cores
from qffs_lava.costs import CostCounter, Costs, tally
from qffs_lava.ir.network import Network
from qffs_lava.latency import recorded_activity
from qffs_lava.results import Simulation

#: Seconds a run of Lava steps takes between two progress reports.
SLICE_SECONDS = 0.5


#: Per recorded layer, a chunk's (samples, period, *shape) spikes; with costs, per layer (positive, negative)
#: tallies (period, *shape) over the chunk's samples.
Recorded = Dict[int, np.ndarray]
Tallies = Dict[int, Tuple[np.ndarray, np.ndarray]]
#: With activity, (samples, period) bool: which samples sent any spike (any layer) at each step.
Active = np.ndarray


class LavaRun:
    """One Lava runtime for a chunk of samples: a QffsNetwork with a source and recorders attached.

    The input is the source ring buffer's initial data (K steps of graded input per sample,
    then silence; one sample per reset interval, `period` = T + D steps), so nothing large
    travels through Lava's Var channels; spikes are recorded to files in `folder`
    (SpikeRecorder). A context manager: a complete run is stopped by Lava's own stop(). It runs
    inside a worker process (workers.py), which is what ends an incomplete one, with every
    process and segment of it.
    """

    def __init__(self, network: Network, x: np.ndarray, steps: int, backend, folder: Path,
                 record_spikes: bool = False, batch: int = 1):
        """backend: a Lava backend (qffs_lava.backends.lava), whose run_config() the runtime runs with; folder: where
        the recordings go (a new folder of the caller's); batch: the samples side by side in the network
        (QffsNetwork's batch), the chunk's groups of them back to back."""
        import_lava()
        from lava.proc.io.source import RingBuffer as Source

        from qffs_lava.backends.lava.procs.network import QffsNetwork
        from qffs_lava.backends.lava.procs.process import SpikeRecorder

        self.network, self.backend, self.samples = network, backend, len(x)
        self.period = steps + network.pipeline_depth
        self.groups = -(-self.samples // batch)
        self.total_steps = self.groups * self.period
        self.completed = False
        self.net = QffsNetwork(network, reset_interval=self.period, batch=batch)
        self.source = Source(data=self.net.source_data(x))
        self.source.s_out.connect(self.net.inp)
        self.recorders = []
        for i in range(1, len(network.layers)):
            if record_spikes or i == network.output_index:
                path = Path(folder) / f"layer{i}.i32"
                shape = lava_shape(network.shapes[i], batch)
                np.memmap(path, dtype=np.int32, mode="w+", shape=(self.total_steps,) + shape).flush()
                recorder = SpikeRecorder(shape=shape, buffer=self.total_steps, path=str(path))
                (self.net.out if i == network.output_index else self.net.layer_out[i]).connect(recorder.a_in)
                self.recorders.append((i, path, shape))

    def __enter__(self) -> "LavaRun":
        return self

    def __exit__(self, *exc) -> None:
        if self.completed:
            self.source.stop()

    def run(self, progress: Optional[Callable[[int], None]] = None) -> Dict[int, np.ndarray]:
        """Run every sample; per recorded layer, (samples, period, *shape_chw) int8 spikes (a read-out output: its
        int32 potentials). `progress` is called
        with the samples done since its last call, as the steps pass (runs of about SLICE_SECONDS each)."""
        from lava.magma.core.run_conditions import RunSteps

        create_runtime(self.source, self.backend.run_config())
        done, reported, steps = 0, 0, self.total_steps if progress is None else 1
        while done < self.total_steps:
            steps = min(steps, self.total_steps - done)
            started = time.monotonic()
            self.source.run(condition=RunSteps(num_steps=steps))
            done += steps
            if progress is not None:  # the next run takes about SLICE_SECONDS
                samples = min(self.samples, done * self.net.batch // self.period)
                if samples > reported:
                    progress(samples - reported)
                    reported = samples
                steps = max(1, min(2 * steps, int(steps * SLICE_SECONDS / max(time.monotonic() - started, 1e-3))))
        self.completed = True
        recorded = {}
        for i, path, shape in self.recorders:
            got = np.memmap(path, dtype=np.int32, mode="r", shape=(self.groups, self.period) + shape)
            got = from_lava_layout(got, self.network.shapes[i], self.net.flat_order[i]).swapaxes(1, 2)
            got = got.reshape((-1, self.period) + self.network.shapes[i])[:self.samples]
            potential = i == self.network.output_index and not self.network.output_fires
            recorded[i] = got.astype(np.int32 if potential else np.int8)
        return recorded


def _spikes(network: Network, index: int, recorded):
    """A recorded layer's spikes: what was recorded, but for a read-out output, which records its potential and
    sends no spikes (zeros)."""
    if index == network.output_index and not network.output_fires:
        return recorded * 0
    return recorded


def _run_chunk(network: Network, x: np.ndarray, folder: Path, progress, steps: int, backend, record_spikes: bool,
               count_costs: bool, activity: bool, batch: int) -> Tuple[Recorded, Optional[Tallies], Optional[Active]]:
    """Per recorded layer, (samples, period, *shape) spikes, recorded in `folder` (made here, deleted after);
    with count_costs or activity every layer is recorded, and tallied (costs.tally over the samples) or read for
    which samples sent a spike at each step ((samples, period) bool), then only the layers asked for are returned.
    Numpy only."""
    Path(folder).mkdir()
    with LavaRun(network, x, steps, backend, folder, record_spikes or count_costs or activity, batch) as lava:
        recorded = lava.run(progress)
    shutil.rmtree(folder)
    sent = {i: _spikes(network, i, values) for i, values in recorded.items()}  # what each layer sent
    tallies = {i: tally(spikes) for i, spikes in sent.items()} if count_costs else None
    active = recorded_activity(list(sent.values())) if activity else None
    if not record_spikes:
        recorded = {network.output_index: recorded[network.output_index]}
    return recorded, tallies, active


def run_lava(network: Network, x, steps: int, backend, options: RunOptions = RunOptions()) -> Simulation:
    """Run dataset values x (N, *input shape) through Lava with a Lava backend's run configuration, one
    runtime per `options.chunk` samples.

    `options.workers` runtimes run at once, each in its own process (default: the cores here, at
    most the number of chunks). The results do not depend on it. Returns what the torch
    simulator's pipelined mode returns (steps 1..T+D), with count_costs its spikes and SOPs
    counted here from the workers' tallies.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1, *network.input.shape)
    batch = backend.lava_batch(network, len(x), options)
    chunk = -(-options.chunk // batch) * batch  # whole groups of B samples
    chunks = [x[start:start + chunk] for start in range(0, len(x), chunk)]
    workers = min(options.workers or usable_cores(), len(chunks))
    run_args = (steps, backend, options.record_spikes, options.count_costs, options.activity, batch)

    def work(index: int, scratch: Path, progress):
        return _run_chunk(network, chunks[index], scratch / f"chunk{index}", progress, *run_args)

    results = run_in_workers(work, len(chunks), workers, options.progress)
    parts = [recorded for recorded, _, _ in results]
    layers = {i: torch.from_numpy(np.concatenate([p[i] for p in parts])).transpose(0, 1) for i in parts[0]}
    last, period = network.output_index, steps + network.pipeline_depth
    values = layers[last].reshape(period, len(x), -1).to(torch.int64)
    counts = values.cumsum(dim=0) if network.output_fires else values  # a read-out records its potential
    spikes = [_spikes(network, i, layers[i]).to(torch.int8) for i in range(1, last + 1)] \
        if options.record_spikes else None
    costs = _count_costs(network, x, period, [t for _, t, _ in results]) if options.count_costs else None
    active = torch.from_numpy(np.concatenate([a for _, _, a in results])).T if options.activity else None
    return Simulation("pipelined", period, network.pipeline_depth, counts, spikes, costs, active)


def _count_costs(network: Network, x: np.ndarray, period: int, chunk_tallies) -> Costs:
    """The run's costs from the workers' tallies, and the input's graded events (x_int for the first K steps)."""
    counter = CostCounter(network, period, len(x))
    x_int = network.input.encode(x)
    for t in range(1, network.bias_steps + 1):
        counter.add(t, 0, *tally(x_int))
    for i in range(1, len(network.layers)):
        positive = sum(t[i][0] for t in chunk_tallies)
        negative = sum(t[i][1] for t in chunk_tallies)
        for step in range(period):
            counter.add(step + 1, i, positive[step], negative[step])
    return counter.costs


def lava_view(network: Network) -> str:
    """The network built as a QffsNetwork Process (not run), described layer by layer."""
    import_lava()
    from qffs_lava.backends.lava.procs.network import QffsNetwork

    return "Lava view (QffsNetwork):\n" + str(QffsNetwork(network))
