"""ProcessModels of the QFFS Processes: one per tag, all calling the shared dynamics.

`fixed_pt` (also `bit_accurate_loihi`): integer Vars, v saturating at 24 bits (inside
`dynamics.neuron_step`), signed spikes as graded int32 messages. `floating_pt`: the same
arithmetic on floats.
"""

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from qffs_lava.backends.lava.procs.process import EventMaxPool, QffsNeuron, SpikeRecorder
from qffs_lava.dynamics import NeuronParams, NeuronState, PoolParams, PoolState, bias_active, neuron_step, pool_step


def local_step(time_step: int, period: int) -> int:
    """The step within the current sample, 1..period (Lava's time_step counts from 1)."""
    return (time_step - 1) % period + 1


class AbstractPyQffsNeuronModel(PyLoihiProcessModel):
    """Algorithm 1 per step, with the bias window and the per-sample reset of QffsNeuron."""

    a_in = None
    s_out = None
    v = None
    z = None
    threshold = None
    v_init = None
    z_max = None
    bias = None
    bias_start: np.ndarray = LavaPyType(np.ndarray, int, precision=24)
    bias_steps: np.ndarray = LavaPyType(np.ndarray, int, precision=24)
    period: np.ndarray = LavaPyType(np.ndarray, int, precision=24)

    def run_spk(self) -> None:
        current = self.a_in.recv()
        t = local_step(self.time_step, int(self.period[0]))
        if t == 1:  # a new sample: reset, and drop what the previous sample left in flight
            self.v[:] = self.v_init
            self.z[:] = 0
            current = current * 0
        if bias_active(t, int(self.bias_start[0]), int(self.bias_steps[0])):
            current = current + self.bias
        params = NeuronParams(threshold=self.threshold, z_max=self.z_max[0], v_init=self.v_init)
        spikes, state = neuron_step(current, NeuronState(self.v, self.z), params)
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
    threshold: np.ndarray = LavaPyType(np.ndarray, float)
    v_init: np.ndarray = LavaPyType(np.ndarray, float)
    z_max: np.ndarray = LavaPyType(np.ndarray, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)


@implements(proc=QffsNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class PyQffsNeuronModelFixed(AbstractPyQffsNeuronModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    z: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=16)
    threshold: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    v_init: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    z_max: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=16)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)


class AbstractPyEventMaxPoolModel(PyLoihiProcessModel):
    """Algorithm 2 per step over the window index, with the per-sample reset."""

    s_in = None
    s_out = None
    counts = None
    max_count = None
    window_index: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    period: np.ndarray = LavaPyType(np.ndarray, int, precision=24)

    def run_spk(self) -> None:
        spikes_in = self.s_in.recv()
        if local_step(self.time_step, int(self.period[0])) == 1:
            self.counts[:] = 0
            self.max_count[:] = 0
        state = PoolState(self.counts.reshape(-1), self.max_count.reshape(-1))
        spikes, state = pool_step(spikes_in.reshape(-1), state, PoolParams(self.window_index))
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
