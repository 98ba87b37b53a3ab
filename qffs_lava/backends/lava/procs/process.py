"""QFFS Lava Processes: they declare ports, state Vars and constant process parameters;
models.py implements them per tag, network.py composes them into a whole net.h5."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var


def check_reset(reset_interval: Optional[int], reset_offset: int) -> None:
    """reset_interval: None (never) or >= 1 steps; reset_offset >= 0 steps (ValueError otherwise)."""
    if reset_interval is not None and (int(reset_interval) != reset_interval or reset_interval < 1):
        raise ValueError(f"reset_interval must be None or a whole number of steps >= 1, got {reset_interval!r}")
    if int(reset_offset) != reset_offset or reset_offset < 0:
        raise ValueError(f"reset_offset must be a whole number of steps >= 0, got {reset_offset!r}")


class QffsNeuron(AbstractProcess):
    """QFFS neurons (the paper's Algorithm 1, `dynamics.neuron_step`) with a per-step bias window.

    Samples start at time steps reset_offset + 1 + k * reset_interval (k = 0, 1, ...; with
    reset_interval None only the first). There the state resets, v = v_init and z = 0, and
    the input of that step is dropped (only spikes of the previous sample can arrive then).
    At local step t (1 at a sample's start) the current is

        I = a_in + (bias if bias_start <= t < bias_start + bias_steps else 0)

    Before the first sample (time steps <= reset_offset) the neurons only integrate a_in.
    threshold, v_init, bias (broadcast to `shape`; per channel is the last axis), z_max,
    bias_start and bias_steps are constants (process parameters). State Vars: v, z.
    Ports: a_in (synaptic input), s_out (signed spikes in {-1, 0, +1}, graded messages).
    """

    def __init__(self, *, shape: Tuple[int, ...], threshold, v_init, z_max: int, bias, bias_start: int,
                 bias_steps: int, reset_interval: Optional[int] = None, reset_offset: int = 0,
                 name: Optional[str] = None) -> None:
        constants = {key: np.broadcast_to(value, shape).copy()
                     for key, value in (("threshold", threshold), ("v_init", v_init), ("bias", bias))}
        super().__init__(shape=shape, z_max=int(z_max), bias_start=int(bias_start), bias_steps=int(bias_steps),
                         reset_interval=reset_interval, reset_offset=reset_offset, name=name, **constants)
        check_reset(reset_interval, reset_offset)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.v = Var(shape=shape, init=constants["v_init"])
        self.z = Var(shape=shape, init=0)


class QffsReadout(AbstractProcess):
    """The read-out output (the paper's Figure 7, `dynamics.readout_step`): it integrates, never fires, never resets
    within a sample, so its potential v is the sum of its current so far and the prediction is argmax v.

    The current is QffsNeuron's, a_in plus the bias in its window; samples start (v = 0, that step's input
    dropped) as in QffsNeuron. bias, bias_start, bias_steps are constants. State Var: v, which a Lava user reads
    like any Var (`v.get()`, or a Monitor on it). Ports: a_in (synaptic input), v_out (v after each step, a 24-bit
    graded message: the simulator's view of a probe on v; on Loihi 2 see docs/lava.md for how to read it).
    """

    def __init__(self, *, shape: Tuple[int, ...], bias, bias_start: int, bias_steps: int,
                 reset_interval: Optional[int] = None, reset_offset: int = 0, name: Optional[str] = None) -> None:
        super().__init__(shape=shape, bias=np.broadcast_to(bias, shape).copy(), bias_start=int(bias_start),
                         bias_steps=int(bias_steps), reset_interval=reset_interval, reset_offset=reset_offset,
                         name=name)
        check_reset(reset_interval, reset_offset)
        self.a_in = InPort(shape=shape)
        self.v_out = OutPort(shape=shape)
        self.v = Var(shape=shape, init=0)


class EventMaxPool(AbstractProcess):
    """Event-based max pooling (the paper's Algorithm 2, `dynamics.pool_step`), no delay.

    window_index (n_out, k), a constant, lists for each flat output position the flat input
    positions of its window (flat in the ports' own layout). Counts reset where a sample
    starts (reset_interval, reset_offset as in QffsNeuron). State Vars: counts, max_count.
    Ports: s_in (signed spikes), s_out (signed spikes).
    """

    def __init__(self, *, in_shape: Tuple[int, ...], out_shape: Tuple[int, ...], window_index: np.ndarray,
                 reset_interval: Optional[int] = None, reset_offset: int = 0, name: Optional[str] = None) -> None:
        super().__init__(in_shape=in_shape, out_shape=out_shape, window_index=np.asarray(window_index, np.int32),
                         reset_interval=reset_interval, reset_offset=reset_offset, name=name)
        check_reset(reset_interval, reset_offset)
        self.s_in = InPort(shape=in_shape)
        self.s_out = OutPort(shape=out_shape)
        self.counts = Var(shape=in_shape, init=0)
        self.max_count = Var(shape=out_shape, init=0)


class BatchConv(AbstractProcess):
    """One conv synapse for B samples side by side (layout.py: sample-major channels), one step of delay:

        a_out(t + 1) = conv2d(s_in(t), weight) per sample

    lava-nc's Conv loops over every (group, output, input) channel triple, so B samples would cost B
    times one; this computes all of them with one matrix product. weight (Cout, Cin / groups, kH, kW)
    as net.h5 holds it (torch's cross-correlation), stride, padding, dilation as (H, W) pairs, groups
    per sample, batch: constants. Ports: s_in (W, H, B * Cin), a_out (W, H, B * Cout), graded.
    """

    def __init__(self, *, weight: np.ndarray, in_shape: Tuple[int, ...], out_shape: Tuple[int, ...], batch: int,
                 stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int], groups: int,
                 name: Optional[str] = None) -> None:
        super().__init__(weight=np.asarray(weight, np.int32), in_shape=in_shape, out_shape=out_shape,
                         batch=int(batch), stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation),
                         groups=int(groups), name=name)
        self.s_in = InPort(shape=in_shape)
        self.a_out = OutPort(shape=out_shape)
        self.a_buf = Var(shape=out_shape, init=0)


class SpikeRecorder(AbstractProcess):
    """Records what arrives at a_in each step into a file-backed array of shape (buffer, *shape).

    The file (`path`, created by the caller) is memory-mapped by the model, so the host
    reads the recording without copying it through Lava's Var channel.
    """

    def __init__(self, *, shape: Tuple[int, ...], buffer: int, path: str, name: Optional[str] = None) -> None:
        super().__init__(shape=shape, buffer=buffer, path=path, name=name)
        self.a_in = InPort(shape=shape)
