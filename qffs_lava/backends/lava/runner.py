"""The Lava backends: a net.h5 built as real Lava Processes and run in one runtime for many samples.

Layout: Lava holds images as (W, H, C) arrays, so conv weights (Cout, Cin, kH, kW) become
`w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)` (Lava's Conv convolves and takes (Cout, kW,
kH, Cin)), (H, W) pairs are reversed, flatten is an `OutPort.reshape` in W, H, C order,
and the next dense layer's columns are permuted from torch's C, H, W order to match.

The network is built by the one executor (`Network.propagate`): a neuron layer is a
QffsNeuron whose `a_in` receives one Dense or Conv Process per synapse (Lava sums the
messages of every OutPort connected to an InPort), a max pool is an EventMaxPool, and
a layer read by several others connects its OutPort to each. Time is pipelined (each
Dense/Conv hop delays one step; docs/format.md): a layer at depth d starts its bias
window at local step d + 1, and a sample occupies `period = T + D` steps.
A chunk of samples runs back to back in one runtime: the input ring buffer holds each
sample's K steps of graded input followed by silence, and every QffsNeuron and
EventMaxPool resets itself at the start of each period. The runtime is always stopped,
also on errors and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from qffs_lava.backends.pytorch import SimResult, encode_inputs
from qffs_lava.dynamics import pool_windows
from qffs_lava.errors import QffsError
from qffs_lava.ir.layers import MaxPoolLayer
from qffs_lava.ir.network import Network

TAGS = {"lava": "fixed_pt", "lava-float": "floating_pt", "loihi2": "fixed_pt"}
MESSAGE_BITS = 24  # graded messages carry signed spikes and the integer input


def import_lava():
    """Import Lava's runtime, which sets multiprocessing's start method to 'fork' on import.

    If something (tqdm's lock, for one) already fixed the start method, Lava's import
    fails; resetting it first lets Lava set 'fork' itself.
    """
    import multiprocessing

    if multiprocessing.get_start_method(allow_none=True) is not None:
        multiprocessing.set_start_method(None, force=True)
    import lava.magma.core.process.process  # noqa: F401


def whc_order(shape_chw: Tuple[int, ...]) -> np.ndarray:
    """For each flat position in Lava's (W, H, C) order, the flat position in torch's (C, H, W) order."""
    if len(shape_chw) == 1:
        return np.arange(shape_chw[0])
    return np.arange(int(np.prod(shape_chw))).reshape(shape_chw).transpose(2, 1, 0).reshape(-1)


def lava_shape(shape_chw: Tuple[int, ...]) -> Tuple[int, ...]:
    return tuple(reversed(shape_chw)) if len(shape_chw) == 3 else tuple(shape_chw)


def to_lava_layout(values: np.ndarray, shape_chw: Tuple[int, ...]) -> np.ndarray:
    """(..., *shape_chw) arrays to (..., *lava_shape): the spatial axes reversed."""
    if len(shape_chw) != 3:
        return values
    n = values.ndim
    return values.transpose(*range(n - 3), n - 1, n - 2, n - 3)


def lava_pool_windows(in_chw, layer: MaxPoolLayer) -> np.ndarray:
    """The pool's window index with inputs and outputs flattened in (W, H, C) order."""
    params, out_chw = pool_windows(in_chw, layer.kernel_size, layer.stride, layer.padding)
    in_whc = whc_order(tuple(in_chw))
    chw_to_whc = np.empty_like(in_whc)
    chw_to_whc[in_whc] = np.arange(in_whc.size)
    rows = params.window_index[whc_order(out_chw)]
    return chw_to_whc[rows].astype(np.int32)


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


class _Builder:
    """The executor's visitor that builds the Lava Processes; a layer's value is (OutPort, flat order).

    The flat order lists, for each flat position of the port in Lava's layout, the flat
    position in torch's (C, H, W) order (a dense synapse's columns are permuted by it).
    """

    def __init__(self, network: Network, source, period: int):
        from lava.proc.conv.process import Conv
        from lava.proc.dense.process import Dense

        from qffs_lava.backends.lava.procs.process import EventMaxPool, QffsNeuron

        self.network, self.source, self.period = network, source, period
        self.Conv, self.Dense, self.EventMaxPool, self.QffsNeuron = Conv, Dense, EventMaxPool, QffsNeuron

    def input(self, index, layer):
        return self.source.s_out, whc_order(layer.shape)

    def neuron(self, index, layer, sources):
        shape = self.network.shapes[index]
        channel = (slice(None),) if len(shape) == 1 else (None, None, slice(None))  # channels last in Lava
        n = layer.neurons
        neurons = self.QffsNeuron(
            shape=lava_shape(shape), threshold=n.threshold[channel], v_init=n.v_init[channel], z_max=n.z_max,
            bias=layer.bias[channel], bias_start=self.network.bias_start(index, "pipelined"),
            bias_steps=n.bias_steps, period=self.period, name=f"layer{index}-qffs")
        for j, (synapse, source, (port, flat_order)) in enumerate(zip(layer.synapses, layer.inputs, sources)):
            process = synapse.visit(self, flat_order, self.network.shapes[source], f"layer{index}-synapse{j}")
            port.connect(process.s_in)
            process.a_out.connect(neurons.a_in)  # Lava sums what every connected OutPort sends
        return neurons.s_out, whc_order(shape)

    def dense(self, synapse, flat_order, source_shape, name):
        return self.Dense(weights=synapse.weight[:, flat_order], num_message_bits=MESSAGE_BITS, name=name)

    def conv(self, synapse, flat_order, source_shape, name):
        return self.Conv(weight=synapse.weight[:, :, ::-1, ::-1].transpose(0, 3, 2, 1),
                         input_shape=lava_shape(source_shape), stride=synapse.stride[::-1],
                         padding=synapse.padding[::-1], dilation=synapse.dilation[::-1], groups=synapse.groups,
                         num_message_bits=MESSAGE_BITS, name=name)

    def maxpool(self, index, layer, source):
        port, _ = source
        in_shape, out_shape = self.network.shapes[layer.inputs[0]], self.network.shapes[index]
        pool = self.EventMaxPool(in_shape=lava_shape(in_shape), out_shape=lava_shape(out_shape),
                                 window_index=lava_pool_windows(in_shape, layer), period=self.period,
                                 name=f"layer{index}-maxpool")
        port.connect(pool.s_in)
        return pool.s_out, whc_order(out_shape)

    def flatten(self, index, layer, source):
        port, flat_order = source  # the order before flattening is the order after it
        return port.reshape(lava_shape(self.network.shapes[index])), flat_order


class LavaRun:
    """One Lava runtime for a chunk of samples: the network's Processes, built, run, read, and stopped.

    A context manager: the runtime is stopped and the recordings deleted however the block
    ends. The input is the source ring buffer's initial data (K steps of graded input per
    sample, then silence), so nothing large travels through Lava's Var channels; spikes
    are read from file-backed recordings (SpikeRecorder).
    """

    def __init__(self, network: Network, x_int: np.ndarray, steps: int, backend: str = "lava",
                 record_spikes: bool = False):
        if backend not in TAGS:
            raise QffsError(f"unknown Lava backend {backend!r} (choose from {', '.join(TAGS)})")
        if backend == "loihi2":
            require_lava_loihi()
        import_lava()
        from lava.proc.io.source import RingBuffer as Source

        from qffs_lava.backends.lava.procs.process import SpikeRecorder

        self.network, self.backend, self.samples = network, backend, len(x_int)
        self.period = steps + network.pipeline_depth
        self.total_steps = self.samples * self.period
        self.folder = Path(tempfile.mkdtemp(prefix="qffs-lava-"))
        self.started = False
        self.interrupts = MainProcessInterrupts()
        self.source = Source(data=self._input_buffer(x_int))
        ports = network.propagate(_Builder(network, self.source, self.period))
        self.recorders = []
        for i in range(1, len(network.layers)):
            if record_spikes or i == network.output_index:
                path = self.folder / f"layer{i}.i32"
                shape = lava_shape(network.shapes[i])
                np.memmap(path, dtype=np.int32, mode="w+", shape=(self.total_steps,) + shape).flush()
                recorder = SpikeRecorder(shape=shape, buffer=self.total_steps, path=str(path))
                port, flat_order = ports[i]
                port.connect(recorder.a_in)
                self.recorders.append((i, path, shape, flat_order))

    def _input_buffer(self, x_int: np.ndarray) -> np.ndarray:
        """(*lava input shape, samples * period) int32: each sample's x_int for K steps, then zeros."""
        input_shape = self.network.shapes[0]
        data = np.zeros((self.samples, self.period) + lava_shape(input_shape), dtype=np.int32)
        data[:, :self.network.bias_steps] = to_lava_layout(x_int, input_shape)[:, None]
        return np.moveaxis(data.reshape((self.total_steps,) + data.shape[2:]), 0, -1)

    def _run_config(self):
        from lava.magma.core.run_configs import Loihi2SimCfg

        if self.backend == "loihi2":
            from lava.magma.core.run_configs import Loihi2HwCfg

            return Loihi2HwCfg(select_tag=TAGS[self.backend])
        return Loihi2SimCfg(select_tag=TAGS[self.backend])

    def __enter__(self) -> "LavaRun":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the runtime (its processes and shared memory) and delete the recordings; idempotent.

        A Ctrl-C that arrives meanwhile is held back until everything is stopped, then raised.
        """
        try:
            with self.interrupts.held():
                if self.started:
                    self.started = False
                    stop_runtime(self.source.runtime)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.interrupts.uninstall()

    def run(self) -> Dict[int, np.ndarray]:
        """Run every sample; per recorded layer, (samples, period, *shape_chw) int8 spikes."""
        from lava.magma.core.run_conditions import RunSteps

        executable = self.source.compile(self._run_config())
        self.interrupts.install()  # before Lava forks its workers, which inherit the handler
        self.started = True
        with self.interrupts.held():  # a Ctrl-C while the workers are forked waits until all exist
            self.source.create_runtime(executable=executable)
        self.source.run(condition=RunSteps(num_steps=self.total_steps))
        recorded = {}
        for i, path, shape, flat_order in self.recorders:
            got = np.array(np.memmap(path, dtype=np.int32, mode="r", shape=(self.total_steps,) + shape))
            got = got.reshape((self.samples, self.period) + shape)
            if got.ndim == 5:  # (N, steps, W, H, C) -> (N, steps, C, H, W)
                got = got.transpose(0, 1, 4, 3, 2)
            else:  # flat in Lava's order -> torch's
                got = got[..., np.argsort(flat_order)]
            recorded[i] = got.astype(np.int8)
        return recorded


def run_lava(network: Network, x, steps: int, backend: str = "lava", chunk: int = 100,
             record_spikes: bool = False, progress: Optional[Callable[[int], None]] = None) -> SimResult:
    """Run dataset values x (N, *input shape) through Lava, one runtime per `chunk` samples.

    Returns what the torch simulator's pipelined mode returns (steps 1..T+D).
    """
    x_int = encode_inputs(x, network.input).reshape(-1, *network.input.shape).numpy()
    parts: Dict[int, List[np.ndarray]] = {}
    for start in range(0, len(x_int), chunk):
        with LavaRun(network, x_int[start:start + chunk], steps, backend, record_spikes) as lava:
            for i, spikes in lava.run().items():
                parts.setdefault(i, []).append(spikes)
        if progress is not None:
            progress(len(x_int[start:start + chunk]))
    layers = {i: torch.from_numpy(np.concatenate(p)).transpose(0, 1) for i, p in parts.items()}
    last = network.output_index
    counts = layers[last].reshape(steps + network.pipeline_depth, len(x_int), -1).to(torch.int64).cumsum(dim=0)
    spikes = [layers[i] for i in range(1, last + 1)] if record_spikes else None
    return SimResult("pipelined", steps + network.pipeline_depth, network.pipeline_depth, counts, spikes)


def require_lava_loihi() -> None:
    """Raise a clear QffsError unless lava-loihi (Loihi 2 hardware support) is installed."""
    try:
        from lava.utils.loihi import is_installed
    except ImportError:
        is_installed = None
    if is_installed is None or not is_installed():
        raise QffsError(
            "the loihi2 backend needs lava-loihi (Intel's Loihi 2 extension of Lava, available to INRC "
            "members) and access to a Loihi 2 system; it is not installed here. Run --backend lava for "
            "the bit-accurate CPU simulation of the same network.")
