"""QFFS Lava Processes: they declare ports and Vars only; models.py implements them per tag."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var


class QffsNeuron(AbstractProcess):
    """QFFS neurons (the paper's Algorithm 1, `dynamics.neuron_step`) with a per-step bias window.

    Every `period` steps (one sample) the state resets: v = v_init, z = 0, and the input
    of that first local step is dropped (only spikes of the previous sample can arrive
    then). At local step t (1-based) the current is

        I = a_in + (bias if bias_start <= t < bias_start + bias_steps else 0)

    Ports: a_in (synaptic input), s_out (signed spikes in {-1, 0, +1}, graded messages).
    """

    def __init__(self, *, shape: Tuple[int, ...], threshold, v_init, z_max: int, bias, bias_start: int,
                 bias_steps: int, period: int, name: Optional[str] = None) -> None:
        super().__init__(shape=shape, name=name)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.v = Var(shape=shape, init=np.broadcast_to(v_init, shape).copy())
        self.z = Var(shape=shape, init=0)
        self.threshold = Var(shape=shape, init=np.broadcast_to(threshold, shape).copy())
        self.v_init = Var(shape=shape, init=np.broadcast_to(v_init, shape).copy())
        self.z_max = Var(shape=(1,), init=z_max)
        self.bias = Var(shape=shape, init=np.broadcast_to(bias, shape).copy())
        self.bias_start = Var(shape=(1,), init=bias_start)
        self.bias_steps = Var(shape=(1,), init=bias_steps)
        self.period = Var(shape=(1,), init=period)


class EventMaxPool(AbstractProcess):
    """Event-based max pooling (the paper's Algorithm 2, `dynamics.pool_step`), no delay.

    window_index (n_out, k) lists, for each flat output position, the flat input positions
    of its window (flat in the ports' own layout). Counts reset every `period` steps.
    Ports: s_in (signed spikes), s_out (signed spikes).
    """

    def __init__(self, *, in_shape: Tuple[int, ...], out_shape: Tuple[int, ...], window_index: np.ndarray,
                 period: int, name: Optional[str] = None) -> None:
        super().__init__(in_shape=in_shape, out_shape=out_shape, name=name)
        self.s_in = InPort(shape=in_shape)
        self.s_out = OutPort(shape=out_shape)
        self.window_index = Var(shape=window_index.shape, init=window_index)
        self.counts = Var(shape=in_shape, init=0)
        self.max_count = Var(shape=out_shape, init=0)
        self.period = Var(shape=(1,), init=period)


class SpikeRecorder(AbstractProcess):
    """Records what arrives at a_in each step into a file-backed array of shape (buffer, *shape).

    The file (`path`, created by the caller) is memory-mapped by the model, so the host
    reads the recording without copying it through Lava's Var channel.
    """

    def __init__(self, *, shape: Tuple[int, ...], buffer: int, path: str, name: Optional[str] = None) -> None:
        super().__init__(shape=shape, buffer=buffer, path=path, name=name)
        self.a_in = InPort(shape=shape)
