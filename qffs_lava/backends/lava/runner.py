"""The Lava runner: a QffsNetwork (procs/network.py) with a source and recorders attached, run for many samples.

A chunk of samples runs back to back in one runtime: the source ring buffer holds each
sample's K steps of graded input followed by silence, one sample per reset interval of
`period = T + D` steps (time is pipelined: each Dense/Conv hop delays one step), and the
output layer's spikes (every layer's, with record_spikes or count_costs) are recorded to files. Chunks
run in several runtimes at once, one per worker process. Every runtime is stopped, also
on errors and Ctrl-C. Workers use numpy only (PyTorch does not support autograd in a process
forked after its parent started autograd threads): with count_costs they return tallies of
their recordings (costs.tally), and this process counts the costs from them.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from qffs_lava.backends.base import RunOptions
from qffs_lava.backends.lava.layout import from_lava_layout, lava_shape
from qffs_lava.costs import CostCounter, Costs, tally
from qffs_lava.errors import ParameterError, QffsError
from qffs_lava.ir.network import Network
from qffs_lava.results import Simulation

#: Per recorded layer, a chunk's (samples, period, *shape) spikes; with costs, per layer (positive, negative)
#: tallies (period, *shape) over the chunk's samples.
Recorded = Dict[int, np.ndarray]
Tallies = Dict[int, Tuple[np.ndarray, np.ndarray]]


def import_lava():
    """Import Lava's runtime, which sets multiprocessing's start method to 'fork' on import.

    If something (tqdm's lock, for one) already fixed the start method, Lava's import
    fails; resetting it first lets Lava set 'fork' itself.
    """
    import multiprocessing

    if multiprocessing.get_start_method(allow_none=True) is not None:
        multiprocessing.set_start_method(None, force=True)
    import lava.magma.core.process.process  # noqa: F401


class MainProcessInterrupts:
    """SIGINT while Lava's worker processes live: KeyboardInterrupt in this process only.

    A terminal's Ctrl-C goes to its whole foreground process group, and Lava's workers are
    forked from this process into that group. Killed mid-message, they leave Lava's
    `Runtime.stop()` waiting for replies that never come. The handler installed here is
    inherited by every worker forked while it is in place; there it ignores the signal,
    so only this process gets KeyboardInterrupt and stops the workers in order. Inside
    `held()` an interrupt is kept until the block ends, then raised.
    Installed only from the main thread (Python delivers signals there).
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.previous = None
        self.holding = self.pending = False

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self.pid:
            return  # a forked Lava worker: the main process stops it
        if self.holding:
            self.pending = True
            return
        raise KeyboardInterrupt

    def install(self) -> None:
        if self.previous is None and threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def uninstall(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    @contextlib.contextmanager
    def held(self):
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


def stop_runtime(runtime) -> None:
    """Stop a Lava runtime in any state: its worker processes ended, its shared memory released.

    Lava's own stop() asks every worker to terminate and waits for each reply, so it is
    used as such only when the runtime has started and all workers are alive. Otherwise
    (stopped before the run began, or a worker died) the workers are terminated first
    and stop() only joins them and releases the shared memory.
    """
    if runtime is None:
        return
    infrastructure = runtime._messaging_infrastructure
    actors = list(infrastructure.actors) if infrastructure is not None else []
    if not (runtime._is_started and all(actor.is_alive() for actor in actors)):
        for actor in actors:
            if actor.is_alive():
                actor.terminate()
        runtime._is_started = False
        manager = getattr(getattr(infrastructure, "smm", None), "_manager", None)
        if not hasattr(manager, "shutdown"):  # multiprocessing adds it once the manager has started
            return  # stopped before Lava allocated any shared memory
    runtime.stop()


class LavaRun:
    """One Lava runtime for a chunk of samples: a QffsNetwork with a source and recorders attached.

    A context manager: the runtime is stopped and the recordings deleted however the block
    ends. The input is the source ring buffer's initial data (K steps of graded input per
    sample, then silence; one sample per reset interval, `period` = T + D steps), so nothing
    large travels through Lava's Var channels; spikes are read from file-backed
    recordings (SpikeRecorder).
    """

    def __init__(self, network: Network, x: np.ndarray, steps: int, backend, record_spikes: bool = False):
        """backend: a Lava backend (qffs_lava.backends.lava), whose run_config() the runtime runs with."""
        import_lava()
        from lava.proc.io.source import RingBuffer as Source

        from qffs_lava.backends.lava.procs.network import QffsNetwork
        from qffs_lava.backends.lava.procs.process import SpikeRecorder

        self.network, self.backend, self.samples = network, backend, len(x)
        self.period = steps + network.pipeline_depth
        self.total_steps = self.samples * self.period
        self.started = False
        self.interrupts = MainProcessInterrupts()
        self.net = QffsNetwork(network, reset_interval=self.period)
        self.source = Source(data=self.net.source_data(x))
        self.source.s_out.connect(self.net.inp)
        self.recorders = []
        self.folder = Path(tempfile.mkdtemp(prefix="qffs-lava-"))
        try:  # until __init__ returns, nothing else would delete the folder
            for i in range(1, len(network.layers)):
                if record_spikes or i == network.output_index:
                    path = self.folder / f"layer{i}.i32"
                    shape = lava_shape(network.shapes[i])
                    np.memmap(path, dtype=np.int32, mode="w+", shape=(self.total_steps,) + shape).flush()
                    recorder = SpikeRecorder(shape=shape, buffer=self.total_steps, path=str(path))
                    (self.net.out if i == network.output_index else self.net.layer_out[i]).connect(recorder.a_in)
                    self.recorders.append((i, path, shape))
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def __enter__(self) -> "LavaRun":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the runtime (its processes and shared memory) and delete the recordings; idempotent.

        A Ctrl-C that arrives meanwhile is held back until everything is stopped, then raised.
        """
        with self.interrupts.held():
            try:
                if self.started:
                    self.started = False
                    stop_runtime(self.source.runtime)
            finally:
                shutil.rmtree(self.folder, ignore_errors=True)
                self.interrupts.uninstall()

    def run(self) -> Dict[int, np.ndarray]:
        """Run every sample; per recorded layer, (samples, period, *shape_chw) int8 spikes."""
        from lava.magma.core.run_conditions import RunSteps

        executable = self.source.compile(self.backend.run_config())
        self.interrupts.install()  # before Lava forks its workers, which inherit the handler
        self.started = True
        with self.interrupts.held():  # a Ctrl-C while the workers are forked waits until all exist
            self.source.create_runtime(executable=executable)
        self.source.run(condition=RunSteps(num_steps=self.total_steps))
        recorded = {}
        for i, path, shape in self.recorders:
            got = np.array(np.memmap(path, dtype=np.int32, mode="r", shape=(self.total_steps,) + shape))
            got = got.reshape((self.samples, self.period) + shape)
            recorded[i] = from_lava_layout(got, self.network.shapes[i], self.net.flat_order[i]).astype(np.int8)
        return recorded


def default_workers() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _run_chunk(network: Network, x: np.ndarray, steps: int, backend, record_spikes: bool,
               count_costs: bool) -> Tuple[Recorded, Optional[Tallies]]:
    """Per recorded layer, (samples, period, *shape) spikes; with count_costs every layer is recorded and
    tallied (costs.tally over the samples), then only the layers asked for are returned. Numpy only."""
    with LavaRun(network, x, steps, backend, record_spikes or count_costs) as lava:
        recorded = lava.run()
    tallies = None
    if count_costs:
        tallies = {i: tally(spikes) for i, spikes in recorded.items()}
        if not record_spikes:
            recorded = {network.output_index: recorded[network.output_index]}
    return recorded, tallies


def _worker(network, chunks, run_args, tasks, results) -> None:
    """A worker process: run the chunks named on `tasks` (None ends), put (index, result, error) on `results`.

    SIGINT (a terminal's Ctrl-C, or the parent) stops the runtime in use, then the worker
    ends quietly; Lava's workers forked from here ignore it, as in the parent (LavaRun).
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    finished = False
    try:
        for index in iter(tasks.get, None):
            try:
                results.put((index, _run_chunk(network, chunks[index], *run_args), None))
            except Exception as err:  # noqa: BLE001 - the parent raises it
                results.put((index, None, err if _picklable(err) else QffsError(f"{type(err).__name__}: {err}")))
                break
        finished = True
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the exit
        if not finished:
            results.cancel_join_thread()  # the parent has stopped reading


def _picklable(err: BaseException) -> bool:
    import pickle

    try:
        pickle.loads(pickle.dumps(err))
        return True
    except Exception:  # noqa: BLE001
        return False


def _in_parallel(network, chunks, run_args, workers, progress):
    """Run the chunks in `workers` forked processes, one Lava runtime each at a time; `_run_chunk`'s result
    per chunk, in order.

    On an error in a worker, or a Ctrl-C or any exception here, every worker still running after
    a second (a terminal's Ctrl-C reaches them too) is interrupted (SIGINT: it stops its runtime,
    then exits), and all are waited for before the error is raised.
    """
    import multiprocessing

    context = multiprocessing.get_context("fork")
    tasks, results = context.Queue(), context.Queue()
    for index in range(len(chunks)):
        tasks.put(index)
    for _ in range(workers):
        tasks.put(None)
    processes = [context.Process(target=_worker, args=(network, chunks, run_args, tasks, results))
                 for _ in range(workers)]
    done: Dict[int, tuple] = {}
    interrupts = MainProcessInterrupts()
    interrupts.install()  # Ctrl-C raises here as with one worker, even where SIGINT was inherited ignored
    try:
        with interrupts.held():  # a Ctrl-C raised inside os.fork's handlers would be lost: it waits till all exist
            for process in processes:
                process.start()
        while len(done) < len(chunks):
            try:
                index, result, err = results.get(timeout=0.5)
            except queue.Empty:
                if not any(process.is_alive() for process in processes) and results.empty():
                    raise QffsError("every Lava worker process ended before the run was complete "
                                    f"({len(done)} of {len(chunks)} chunks done)") from None
                continue
            if err is not None:
                raise err
            done[index] = result
            if progress is not None:
                progress(len(chunks[index]))
    finally:
        if len(done) < len(chunks):  # after a terminal's Ctrl-C the workers are stopping already
            for process in processes:
                if process.pid is not None:
                    process.join(timeout=1)
            for process in processes:
                if process.is_alive():
                    os.kill(process.pid, signal.SIGINT)
        for process in processes:
            if process.pid is not None:
                process.join(timeout=60)
                if process.is_alive():
                    process.kill()
                    process.join()
        for channel in (tasks, results):
            channel.cancel_join_thread()
            channel.close()
        interrupts.uninstall()
    return [done[index] for index in range(len(chunks))]


def run_lava(network: Network, x, steps: int, backend, options: RunOptions = RunOptions()) -> Simulation:
    """Run dataset values x (N, *input shape) through Lava with a Lava backend's run configuration, one
    runtime per `options.chunk` samples.

    `options.workers` runtimes run at once, each in its own process (default: the cores here, at
    most the number of chunks); 1 runs the chunks one after another in this process. The
    results do not depend on it. Returns what the torch simulator's pipelined mode returns
    (steps 1..T+D), with count_costs its spikes and SOPs counted here from the workers' tallies.
    """
    if options.workers is not None and options.workers < 1:
        raise ParameterError("{} must be at least 1, got " + str(options.workers), "workers")
    if options.chunk < 1:
        raise ParameterError("{} must be at least 1, got " + str(options.chunk), "chunk")
    x = np.asarray(x, dtype=np.float64).reshape(-1, *network.input.shape)
    chunks = [x[start:start + options.chunk] for start in range(0, len(x), options.chunk)]
    workers = min(options.workers or default_workers(), len(chunks))
    run_args = (steps, backend, options.record_spikes, options.count_costs)
    if workers > 1:
        results = _in_parallel(network, chunks, run_args, workers, options.progress)
    else:
        results = []
        for part in chunks:
            results.append(_run_chunk(network, part, *run_args))
            if options.progress is not None:
                options.progress(len(part))
    parts = [recorded for recorded, _ in results]
    layers = {i: torch.from_numpy(np.concatenate([p[i] for p in parts])).transpose(0, 1) for i in parts[0]}
    last, period = network.output_index, steps + network.pipeline_depth
    counts = layers[last].reshape(period, len(x), -1).to(torch.int64).cumsum(dim=0)
    spikes = [layers[i] for i in range(1, last + 1)] if options.record_spikes else None
    costs = _count_costs(network, x, period, [t for _, t in results]) if options.count_costs else None
    return Simulation("pipelined", period, network.pipeline_depth, counts, spikes, costs)


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
