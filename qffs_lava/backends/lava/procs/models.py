"""ProcessModels of the QFFS Processes: one per tag, all calling the shared dynamics.

`fixed_pt` (also `bit_accurate_loihi`): integer state, v saturating at 24 bits (inside
`dynamics.neuron_step`), signed spikes as graded int32 messages. `floating_pt`: the same
arithmetic on floats. The constants are read once, from the process parameters.
"""

from typing import Optional

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.model.sub.model import AbstractSubProcessModel
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from qffs_lava.backends.lava.procs.network import QffsNetwork
from qffs_lava.backends.lava.procs.process import BatchConv, EventMaxPool, QffsNeuron, QffsReadout, SpikeRecorder
from qffs_lava.dynamics import (NeuronParams, NeuronState, PoolParams, PoolState, ReadoutState, bias_active,
                                neuron_step, pool_step, readout_step)


def local_step(time_step: int, reset_interval: Optional[int], reset_offset: int) -> int:
    """The step within the current sample (1 at its start), 0 before the first sample.

    Samples start at time steps reset_offset + 1 + k * reset_interval (Lava counts from 1);
    with reset_interval None there is one sample.
    """
    since_start = time_step - 1 - reset_offset
    if since_start < 0:
        return 0
    return since_start % reset_interval + 1 if reset_interval else since_start + 1


class AbstractPyQffsNeuronModel(PyLoihiProcessModel):
    """Algorithm 1 per step, with the bias window and the per-sample reset of QffsNeuron."""

    a_in = None
    s_out = None
    v = None
    z = None
    dtype = None

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        p = proc_params
        self.params = NeuronParams(threshold=p["threshold"].astype(self.dtype), z_max=p["z_max"],
                                   v_init=p["v_init"].astype(self.dtype))
        self.bias = p["bias"].astype(self.dtype)
        self.window = (p["bias_start"], p["bias_steps"])
        self.reset = (p["reset_interval"], p["reset_offset"])

    def run_spk(self) -> None:
        current = self.a_in.recv()
        t = local_step(self.time_step, *self.reset)
        if t == 1:  # a new sample: reset, and drop what the previous sample left in flight
            self.v[:] = self.params.v_init
            self.z[:] = 0
            current = current * 0
        if bias_active(t, *self.window):
            current = current + self.bias
        spikes, state = neuron_step(current, NeuronState(self.v, self.z), self.params)
        self.v[:] = state.v
        self.z[:] = state.z
        self.s_out.send(spikes)


@implements(proc=QffsNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyQffsNeuronModelFloat(AbstractPyQffsNeuronModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    v: np.ndarray = LavaPyType(np.ndarray, float)
    z: np.ndarray = LavaPyType(np.ndarray, float)
    dtype = float


@implements(proc=QffsNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class PyQffsNeuronModelFixed(AbstractPyQffsNeuronModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    z: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=16)
    dtype = np.int32


class AbstractPyQffsReadoutModel(PyLoihiProcessModel):
    """The read-out per step (`dynamics.readout_step`), with QffsNeuron's bias window and per-sample reset."""

    a_in = None
    v_out = None
    v = None
    dtype = None

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        p = proc_params
        self.bias = p["bias"].astype(self.dtype)
        self.window = (p["bias_start"], p["bias_steps"])
        self.reset = (p["reset_interval"], p["reset_offset"])

    def run_spk(self) -> None:
        current = self.a_in.recv()
        t = local_step(self.time_step, *self.reset)
        if t == 1:  # a new sample: reset, and drop what the previous sample left in flight
            self.v[:] = 0
            current = current * 0
        if bias_active(t, *self.window):
            current = current + self.bias
        _, state = readout_step(current, ReadoutState(self.v))
        self.v[:] = state.v
        self.v_out.send(self.v)


@implements(proc=QffsReadout, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyQffsReadoutModelFloat(AbstractPyQffsReadoutModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    v_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    v: np.ndarray = LavaPyType(np.ndarray, float)
    dtype = float


@implements(proc=QffsReadout, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class PyQffsReadoutModelFixed(AbstractPyQffsReadoutModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    v_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    dtype = np.int32


class AbstractPyEventMaxPoolModel(PyLoihiProcessModel):
    """Algorithm 2 per step over the window index, with the per-sample reset."""

    s_in = None
    s_out = None
    counts = None
    max_count = None

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.params = PoolParams(proc_params["window_index"])
        self.reset = (proc_params["reset_interval"], proc_params["reset_offset"])

    def run_spk(self) -> None:
        spikes_in = self.s_in.recv()
        if local_step(self.time_step, *self.reset) == 1:
            self.counts[:] = 0
            self.max_count[:] = 0
        state = PoolState(self.counts.reshape(-1), self.max_count.reshape(-1))
        spikes, state = pool_step(spikes_in.reshape(-1), state, self.params)
        self.counts[:] = state.counts.reshape(self.counts.shape)
        self.max_count[:] = state.max_count.reshape(self.max_count.shape)
        self.s_out.send(spikes.reshape(self.max_count.shape))


@implements(proc=EventMaxPool, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyEventMaxPoolModelFloat(AbstractPyEventMaxPoolModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    counts: np.ndarray = LavaPyType(np.ndarray, float)
    max_count: np.ndarray = LavaPyType(np.ndarray, float)


@implements(proc=EventMaxPool, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class PyEventMaxPoolModelFixed(AbstractPyEventMaxPoolModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    counts: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=16)
    max_count: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=16)


def conv2d(x: np.ndarray, weight: np.ndarray, stride, padding, dilation, groups: int) -> np.ndarray:
    """torch's conv2d (cross-correlation) of x (B, Cin, H, W) with weight (Cout, Cin / groups, kH, kW), as one
    float64 matrix product per group: exact for integers while every sum stays below 2^53."""
    cout, cin, kh, kw = weight.shape
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    span = ((kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1)
    windows = np.lib.stride_tricks.sliding_window_view(x, span, axis=(2, 3))
    windows = windows[:, :, ::stride[0], ::stride[1], ::dilation[0], ::dilation[1]]  # (B, Cin, Ho, Wo, kH, kW)
    w = weight.astype(np.float64).reshape(groups, cout // groups, cin, kh, kw)
    out = [np.tensordot(windows[:, g * cin:(g + 1) * cin], w[g], axes=([1, 4, 5], [1, 2, 3])) for g in range(groups)]
    return np.concatenate(out, axis=3).transpose(0, 3, 1, 2)  # (B, Ho, Wo, Cout) -> (B, Cout, Ho, Wo)


class AbstractPyBatchConvModel(PyLoihiProcessModel):
    """conv2d per sample on the (W, H, B * C) ports: the input sent on one step later, as lava-nc's Conv does."""

    s_in = None
    a_out = None
    a_buf = None
    dtype = None

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        p = proc_params
        self.weight, self.batch, self.groups = p["weight"], p["batch"], p["groups"]
        self.geometry = (p["stride"], p["padding"], p["dilation"])

    def run_spk(self) -> None:
        s_in = self.s_in.recv()
        self.a_out.send(self.a_buf)
        w, h, channels = s_in.shape
        x = s_in.reshape(w, h, self.batch, channels // self.batch).transpose(2, 3, 1, 0)  # (B, Cin, H, W)
        out = conv2d(x, self.weight, *self.geometry, self.groups).transpose(3, 2, 0, 1)  # (Wo, Ho, B, Cout)
        self.a_buf[:] = np.rint(out.reshape(self.a_buf.shape)).astype(self.dtype)


@implements(proc=BatchConv, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyBatchConvModelFloat(AbstractPyBatchConvModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    a_buf: np.ndarray = LavaPyType(np.ndarray, float)
    dtype = float


@implements(proc=BatchConv, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class PyBatchConvModelFixed(AbstractPyBatchConvModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    a_buf: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    dtype = np.int32


class AbstractPySpikeRecorderModel(PyLoihiProcessModel):
    """Writes each step's input to row (t - 1) % buffer of the memory-mapped recording."""

    a_in = None

    def run_spk(self) -> None:
        data = self.a_in.recv()
        if not hasattr(self, "recording"):
            shape = (self.proc_params["buffer"],) + tuple(self.proc_params["shape"])
            self.recording = np.memmap(self.proc_params["path"], dtype=np.int32, mode="r+", shape=shape)
        self.recording[(self.time_step - 1) % self.recording.shape[0]] = np.rint(data)


@implements(proc=SpikeRecorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySpikeRecorderModelFloat(AbstractPySpikeRecorderModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)


@implements(proc=SpikeRecorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class PySpikeRecorderModelFixed(AbstractPySpikeRecorderModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)


@implements(proc=QffsNetwork, protocol=LoihiProtocol)
class QffsNetworkModel(AbstractSubProcessModel):
    """The network is its layers: the Processes QffsNetwork built and connected (any tag)."""

    def __init__(self, proc: QffsNetwork) -> None:
        for i, process in enumerate(proc.processes):
            setattr(self, f"process{i}", process)
