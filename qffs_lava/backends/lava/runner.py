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
import ctypes
import os
import queue
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from qffs_lava.backends.base import RunOptions
from qffs_lava.backends.lava.layout import from_lava_layout, lava_shape
from qffs_lava.costs import CostCounter, Costs, tally
from qffs_lava.errors import ParameterError, QffsError
from qffs_lava.ir.network import Network
from qffs_lava.results import Simulation
from qffs_lava.signals import STOP_SIGNALS, interrupt

#: Seconds a run of Lava steps takes between two progress reports.
SLICE_SECONDS = 0.5

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
    """Ctrl-C, SIGTERM and SIGHUP while Lava's worker processes live: an interrupt (signals.interrupt) in this
    process only.

    A terminal's Ctrl-C or SIGHUP, and `timeout`'s SIGTERM, go to the whole process group, and
    Lava's workers are forked from this process into that group. Killed mid-message, they leave
    Lava's `Runtime.stop()` waiting for replies that never come. The handler installed here is
    inherited by every worker forked while it is in place; there it ignores the signal, so only
    this process is interrupted, and it stops the workers (`stop_runtime`). Inside `held()` an
    interrupt is kept until the block ends, then raised. Installed only from the main thread
    (Python delivers signals there).
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.previous: Dict[int, object] = {}
        self.holding = False
        self.pending: Optional[int] = None

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self.pid:
            return  # a forked Lava worker: the main process stops it
        if self.holding:
            self.pending = self.pending or signum
            return
        raise interrupt(signum)

    def install(self) -> None:
        if not self.previous and threading.current_thread() is threading.main_thread():
            self.previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}

    def uninstall(self) -> None:
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)
        self.previous = {}

    @contextlib.contextmanager
    def held(self):
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending:
            signum, self.pending = self.pending, None
            raise interrupt(signum)


@contextlib.contextmanager
def resource_tracker():
    """multiprocessing's resource tracker (it unlinks the shared memory of a process that died before releasing
    it) for the block, if none runs yet: started with SIGHUP ignored, which it keeps across exec (it ignores SIGINT
    and SIGTERM itself), so a closed terminal does not end it before the runtimes are stopped; ended and waited
    for when the block ends, so nothing of the run outlives it. Its stderr is /dev/null: after an interrupt it
    warns of segments that Lava's killed workers had attached to, which stop_runtime has unlinked already."""
    from multiprocessing.resource_tracker import _resource_tracker as tracker

    if tracker._fd is not None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous, stderr = signal.signal(signal.SIGHUP, signal.SIG_IGN), os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            tracker.ensure_running()
    finally:
        os.dup2(stderr, 2)
        os.close(stderr)
        signal.signal(signal.SIGHUP, previous)
    try:
        yield
    finally:
        tracker._stop()  # closes its pipe: it unlinks what is left, exits, and is waited for


PR_SET_PDEATHSIG = 1
_forks_die_with_parent = False


def _die_with_parent() -> None:
    """In a child forked inside `forks_die_with_parent()`: be killed when the process that forked it dies, however
    it dies (even by SIGKILL). Linux's prctl; elsewhere nothing."""
    if not _forks_die_with_parent:
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl: the signal will never come
        os._exit(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_die_with_parent)


@contextlib.contextmanager
def forks_die_with_parent():
    """Processes forked inside this block (Lava's workers, the runner's) die with the process that forked them,
    so none outlives a run whose process was killed."""
    global _forks_die_with_parent
    previous, _forks_die_with_parent = _forks_die_with_parent, True
    try:
        yield
    finally:
        _forks_die_with_parent = previous


def stop_runtime(runtime, interrupted: bool) -> None:
    """Stop a Lava runtime in any state: its worker processes ended, its shared memory released.

    After a complete run Lava's own stop() ends it in order. After an interrupt or an error (or
    before the run began) that is not safe: stop() waits without a timeout for replies a busy or
    interrupted worker may never send, and raises where a reply of the run is still in flight.
    Then the workers are killed and waited for, and Lava's shared memory manager released.
    """
    if runtime is None:
        return
    infrastructure = runtime._messaging_infrastructure
    actors = list(infrastructure.actors) if infrastructure is not None else []
    if runtime._is_started and not interrupted and all(actor.is_alive() for actor in actors):
        runtime.stop()
        return
    for actor in actors:
        if actor.pid is not None:
            actor.kill()
            actor.join()
    runtime._is_started = False
    manager = getattr(getattr(infrastructure, "smm", None), "_manager", None)
    if hasattr(manager, "shutdown"):  # multiprocessing adds it once the manager has started
        infrastructure.smm.shutdown()  # unlinks every shared memory segment of the run


class LavaRun:
    """One Lava runtime for a chunk of samples: a QffsNetwork with a source and recorders attached.

    A context manager: the runtime is stopped and the recordings deleted however the block
    ends. The input is the source ring buffer's initial data (K steps of graded input per
    sample, then silence; one sample per reset interval, `period` = T + D steps), so nothing
    large travels through Lava's Var channels; spikes are read from file-backed
    recordings (SpikeRecorder).
    """

    def __init__(self, network: Network, x: np.ndarray, steps: int, backend, record_spikes: bool = False,
                 batch: int = 1):
        """backend: a Lava backend (qffs_lava.backends.lava), whose run_config() the runtime runs with; batch: the
        samples side by side in the network (QffsNetwork's batch), the chunk's groups of them back to back."""
        import_lava()
        from lava.proc.io.source import RingBuffer as Source

        from qffs_lava.backends.lava.procs.network import QffsNetwork
        from qffs_lava.backends.lava.procs.process import SpikeRecorder

        self.network, self.backend, self.samples = network, backend, len(x)
        self.period = steps + network.pipeline_depth
        self.groups = -(-self.samples // batch)
        self.total_steps = self.groups * self.period
        self.started = self.completed = False
        self.interrupts = MainProcessInterrupts()
        self.net = QffsNetwork(network, reset_interval=self.period, batch=batch)
        self.source = Source(data=self.net.source_data(x))
        self.source.s_out.connect(self.net.inp)
        self.recorders = []
        self.folder = Path(tempfile.mkdtemp(prefix="qffs-lava-"))
        try:  # until __init__ returns, nothing else would delete the folder
            for i in range(1, len(network.layers)):
                if record_spikes or i == network.output_index:
                    path = self.folder / f"layer{i}.i32"
                    shape = lava_shape(network.shapes[i], batch)
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

        A stop signal that arrives meanwhile is held back until everything is stopped, then raised.
        """
        with self.interrupts.held():
            try:
                if self.started:
                    self.started = False
                    stop_runtime(self.source.runtime, interrupted=not self.completed)
            finally:
                shutil.rmtree(self.folder, ignore_errors=True)
                self.interrupts.uninstall()

    def run(self, progress: Optional[Callable[[int], None]] = None) -> Dict[int, np.ndarray]:
        """Run every sample; per recorded layer, (samples, period, *shape_chw) int8 spikes. `progress` is called
        with the samples done since its last call, as the steps pass (runs of about SLICE_SECONDS each)."""
        from lava.magma.core.run_conditions import RunSteps

        executable = self.source.compile(self.backend.run_config())
        self.interrupts.install()  # before Lava forks its workers, which inherit the handler
        self.started = True
        with self.interrupts.held(), forks_die_with_parent():  # a stop signal waits until all workers exist
            self.source.create_runtime(executable=executable)
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
            recorded[i] = got.reshape((-1, self.period) + self.network.shapes[i])[:self.samples].astype(np.int8)
        return recorded


def default_workers() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _run_chunk(network: Network, x: np.ndarray, progress, steps: int, backend, record_spikes: bool,
               count_costs: bool, batch: int) -> Tuple[Recorded, Optional[Tallies]]:
    """Per recorded layer, (samples, period, *shape) spikes; with count_costs every layer is recorded and
    tallied (costs.tally over the samples), then only the layers asked for are returned. Numpy only."""
    with LavaRun(network, x, steps, backend, record_spikes or count_costs, batch) as lava:
        recorded = lava.run(progress)
    tallies = None
    if count_costs:
        tallies = {i: tally(spikes) for i, spikes in recorded.items()}
        if not record_spikes:
            recorded = {network.output_index: recorded[network.output_index]}
    return recorded, tallies


def _worker(network, chunks, run_args, tasks, results, stopping, report: bool) -> None:
    """A worker process: run the chunks named on `tasks` (None ends) until the parent sets `stopping`; put
    ("progress", samples) on `results` as they pass (if `report`), and ("done", index, result, error) for each
    chunk.

    A stop signal (the group's, or SIGINT from the parent) stops the runtime in use, then the
    worker ends quietly; Lava's workers forked from here ignore it, as in the parent (LavaRun).
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda signum, frame: _raise_interrupt(signum))
    finished = False
    try:
        for index in iter(tasks.get, None):
            if stopping.is_set():  # no new runtime once the parent stops the run
                break
            try:
                progress = (lambda n: results.put(("progress", n))) if report else None
                result = _run_chunk(network, chunks[index], progress, *run_args)
                results.put(("done", index, result, None))
            except Exception as err:  # noqa: BLE001 - the parent raises it
                results.put(("done", index, None,
                             err if _picklable(err) else QffsError(f"{type(err).__name__}: {err}")))
                break
        finished = True
    except KeyboardInterrupt:
        pass
    finally:
        for signum in STOP_SIGNALS:  # a second signal must not interrupt the exit
            signal.signal(signum, signal.SIG_IGN)
        if not finished:
            results.cancel_join_thread()  # the parent has stopped reading


def _raise_interrupt(signum: int) -> None:
    raise interrupt(signum)


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

    On an error in a worker, or a stop signal or any exception here, no worker starts another chunk,
    every worker still running after a second (a terminal's Ctrl-C reaches them too) is interrupted
    (SIGINT: it stops its runtime, then exits), and all are waited for before the error is raised.
    """
    import multiprocessing

    context = multiprocessing.get_context("fork")
    tasks, results, stopping = context.Queue(), context.Queue(), context.Event()
    for index in range(len(chunks)):
        tasks.put(index)
    for _ in range(workers):
        tasks.put(None)
    processes = [context.Process(target=_worker, args=(network, chunks, run_args, tasks, results, stopping,
                                                       progress is not None)) for _ in range(workers)]
    done: Dict[int, tuple] = {}
    interrupts = MainProcessInterrupts()
    interrupts.install()  # a stop signal raises here as with one worker, even where SIGINT was inherited ignored
    try:
        with interrupts.held(), forks_die_with_parent():  # a signal inside os.fork's handlers would be lost
            for process in processes:
                process.start()
        while len(done) < len(chunks):
            try:
                message = results.get(timeout=0.5)
            except queue.Empty:
                if not any(process.is_alive() for process in processes) and results.empty():
                    raise QffsError("every Lava worker process ended before the run was complete "
                                    f"({len(done)} of {len(chunks)} chunks done)") from None
                continue
            if message[0] == "progress":
                progress(message[1])
                continue
            _, index, result, err = message
            if err is not None:
                raise err
            done[index] = result
    finally:
        stopping.set()
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
        for channel in (tasks, results):  # not closed here: its feeder thread may still hold the pipe
            channel.cancel_join_thread()
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
    for name in ("workers", "chunk", "lava_batch"):
        if getattr(options, name) is not None and getattr(options, name) < 1:
            raise ParameterError("{} must be at least 1, got " + str(getattr(options, name)), name)
    x = np.asarray(x, dtype=np.float64).reshape(-1, *network.input.shape)
    batch = backend.lava_batch(network, len(x), options)
    chunk = -(-options.chunk // batch) * batch  # whole groups of B samples
    chunks = [x[start:start + chunk] for start in range(0, len(x), chunk)]
    workers = min(options.workers or default_workers(), len(chunks))
    run_args = (steps, backend, options.record_spikes, options.count_costs, batch)
    with resource_tracker():
        if workers > 1:
            results = _in_parallel(network, chunks, run_args, workers, options.progress)
        else:
            results = [_run_chunk(network, part, options.progress, *run_args) for part in chunks]
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
