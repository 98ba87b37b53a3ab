"""The network in PyTorch: the integer QANN (the qann backend) and the batched SNN simulation (torch).

A `TorchNetwork` is built once per network: every integer parameter is a buffer, so
`.to("cuda")` moves it to a GPU, and both backends walk the graph with the one executor
(`Network.propagate`):

- `qann(x)`: the closed form every QFFS network settles to (`closed_form`, docs/format.md),
      z = clip(floor((sum_j W_j . z_j + K b + vInit) / th), 0, zMax),
  with K * x_int for the graded input, the max of the counts for max pooling, and for a
  read-out output (`dynamics.readout_step`) its settled potential sum_j W_j . z_j + K b; the
  exporter's and the trainer's integer network (qffs_lava.convert.integer) run through it too;
- `simulate(x, T, mode)`: Algorithm 1 and 2 (`dynamics.neuron_step`, `dynamics.pool_step`)
  step by step, synchronous (every layer sees its sources' spikes of the same step) or
  pipelined (as Lava and Loihi run it: every synapse delays by one step and a layer's
  bias window starts at its depth + 1, so step T + D equals synchronous step T).

Integers are carried in `exact_dtype(network)`: float32 where every value the network
can reach fits float32's exact integer range, else float64. On the CPU a synapse whose
source is silent is skipped (checking costs nothing there); on a GPU every step runs
without a host synchronisation.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qffs_lava.backends.base import Backend, RunOptions
from qffs_lava.costs import CostCounter
from qffs_lava.errors import ParameterError
from qffs_lava.dynamics import (
    ALL_MECHANISMS,
    Mechanisms,
    NeuronParams,
    PoolParams,
    bias_active,
    integrated,
    neuron_init,
    neuron_step,
    pool_init,
    pool_step,
    pool_windows,
    readout_init,
    readout_step,
    settled_count,
    settled_potential,
)
from qffs_lava.ir.layers import ConvSynapse, DenseSynapse, NeuronLayer
from qffs_lava.ir.loihi import count_bounds, membrane_bounds
from qffs_lava.ir.network import MODES, Network
from qffs_lava.latency import quiet_from, recorded_activity
from qffs_lava.results import CLOSED_FORM, Simulation


def exact_dtype(network: Network) -> torch.dtype:
    """float32 when every count, current, membrane and QANN sum stays below 2^23 in magnitude, else float64."""
    bounds = count_bounds(network)
    worst = max(bounds)
    for i, layer in network.neuron_layers:
        low, high = membrane_bounds(network, i, bounds)
        fan_in = sum(int(np.abs(s.rows()).sum(1).max()) * bounds[j] for s, j in zip(layer.synapses, layer.inputs))
        total = fan_in + network.bias_steps * int(np.abs(layer.bias).max()) + layer.neurons.largest_threshold
        worst = max(worst, -low, high, total)
    return torch.float32 if worst < 2**23 else torch.float64


class LayerTensors(NamedTuple):
    """A neuron layer's integers as tensors (a float dtype holding whole numbers), per channel shaped to broadcast
    over (batch, N) or (batch, C, H, W): one weight per synapse, the per-step bias and the neuron parameters
    (None for a read-out, which has none)."""

    weights: Tuple[torch.Tensor, ...]
    bias: torch.Tensor
    params: Optional[NeuronParams]


def channel_shape(shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """How a per-channel vector broadcasts over a layer of this shape, batch first: (C, 1, 1) or (N,)."""
    return (-1,) + (1,) * (len(shape) - 1)


class _Synapses:
    """W . s for each synapse type (batch first, no bias), in the dtype of the weight."""

    @staticmethod
    def dense(synapse: DenseSynapse, weight: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
        return spikes @ weight.T

    @staticmethod
    def conv(synapse: ConvSynapse, weight: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
        return F.conv2d(spikes, weight, None, synapse.stride, synapse.padding, synapse.dilation, synapse.groups)


def synaptic_current(layer: NeuronLayer, weights: Sequence[torch.Tensor], sources: Sequence[torch.Tensor]):
    """sum_j W_j . sources[j] over the layer's synapses, with the synapses' geometry from the IR."""
    total = None
    for synapse, weight, source in zip(layer.synapses, weights, sources):
        part = synapse.visit(_Synapses, weight, source)
        total = part if total is None else total + part
    return total


class _ClosedForm:
    """The executor's visitor for the closed form: each layer's settled counts."""

    def __init__(self, network: Network, tensors: Mapping[int, LayerTensors], x_int: torch.Tensor,
                 straight_through: bool, preactivations: Optional[Dict[int, torch.Tensor]]):
        self.network, self.tensors, self.x_int = network, tensors, x_int
        self.straight_through, self.pre = straight_through, preactivations

    def input(self, index, layer):
        return self.x_int * self.network.bias_steps  # the input is presented for K steps

    def _total(self, index, layer, sources):
        tensors = self.tensors[index]
        return synaptic_current(layer, tensors.weights, sources) + self.network.bias_steps * tensors.bias

    def neuron(self, index, layer, sources):
        params, total = self.tensors[index].params, self._total(index, layer, sources)
        if self.pre is not None:
            self.pre[index] = (total + params.v_init) / params.threshold
        return settled_count(total, params, self.straight_through)

    def readout(self, index, layer, sources):
        total = self._total(index, layer, sources)
        if self.pre is not None:
            self.pre[index] = total
        return settled_potential(total)

    def maxpool(self, index, layer, source):
        return F.max_pool2d(source, layer.kernel_size, layer.stride, layer.padding)

    def flatten(self, index, layer, source):
        return source.reshape(source.shape[0], -1)


def closed_form(network: Network, tensors: Mapping[int, LayerTensors], x_int: torch.Tensor,
                straight_through: bool = False,
                preactivations: Optional[Dict[int, torch.Tensor]] = None) -> List[torch.Tensor]:
    """Every layer's settled counts (batch first) for inputs x_int (`InputLayer.encode`), the integer QANN:

        z = clip(floor((sum_j W_j . z_j + K b + vInit) / th), 0, zMax)

    with K x_int for the graded input and the max of the counts for max pooling; a read-out's value is its
    settled potential, the integer pre-activation sum_j W_j . z_j + K b (`dynamics.readout_step`). `tensors` gives each
    neuron layer's integers (`network` its graph and geometry), so the trainer's integer network
    (qffs_lava.convert.integer) runs here as the exported one does; `straight_through` passes gradients
    through every floor (dynamics.settled_count). Given a dict, also fills it, per neuron layer index,
    with (sum_j W_j . z_j + K b + vInit) / th: the value whose floor, clipped, is z (a read-out's: its potential).
    """
    return network.propagate(_ClosedForm(network, tensors, x_int, straight_through, preactivations))


class _ReadoutBuffers(nn.Module):
    """A read-out layer's integers as buffers: weights w0.. (one per synapse) and the bias."""

    def __init__(self, layer: NeuronLayer, dtype: torch.dtype):
        super().__init__()
        for j, synapse in enumerate(layer.synapses):
            self.register_buffer(f"w{j}", torch.as_tensor(synapse.weight, dtype=dtype))
        self.register_buffer("bias", torch.as_tensor(layer.bias, dtype=dtype).reshape(channel_shape(layer.shape)))
        self.synapse_count = len(layer.synapses)

    def tensors(self) -> LayerTensors:
        return LayerTensors(tuple(getattr(self, f"w{j}") for j in range(self.synapse_count)), self.bias, None)


class _NeuronBuffers(_ReadoutBuffers):
    """A QFFS neuron layer's integers as buffers: weights w0.. (one per synapse), bias, threshold, vInit."""

    def __init__(self, layer: NeuronLayer, dtype: torch.dtype):
        super().__init__(layer, dtype)
        channel = channel_shape(layer.shape)
        self.register_buffer("threshold", torch.as_tensor(layer.neurons.threshold, dtype=dtype).reshape(channel))
        self.register_buffer("v_init", torch.as_tensor(layer.neurons.v_init, dtype=dtype).reshape(channel))
        self.z_max = layer.neurons.z_max

    def tensors(self) -> LayerTensors:
        return super().tensors()._replace(params=NeuronParams(threshold=self.threshold, z_max=self.z_max,
                                                              v_init=self.v_init))


class _PoolBuffers(nn.Module):
    """A max pool's window index (`dynamics.pool_windows`) as a buffer."""

    def __init__(self, window_index: np.ndarray):
        super().__init__()
        self.register_buffer("window_index", torch.as_tensor(window_index, dtype=torch.int64))


class TorchNetwork(nn.Module):
    """A net.h5 network as torch buffers, built once: the QANN closed form and the SNN, on any device.

    Example:
        >>> net = qffs.TorchNetwork(qffs.read_net("digits.h5"))
        >>> counts = net.qann(images)                     # (N, classes) settled output counts
        >>> run = net.simulate(images, 8, "pipelined")    # the SNN, T + D steps as Lava runs it
    """

    def __init__(self, network: Network, dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.network = network
        self.dtype = dtype or exact_dtype(network)
        self.layer_buffers = nn.ModuleList(network.propagate(_Buffers(network, self.dtype)))

    @property
    def device(self) -> torch.device:
        return next((b.device for b in self.buffers()), torch.device("cpu"))

    def encode(self, x) -> torch.Tensor:
        """Dataset values (batch, *input shape) as x_int (`InputLayer.encode`, in float64) in the network's
        dtype, on its device."""
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float64)
        x_int = self.network.input.encode(x).reshape(-1, *self.network.input.shape)
        return x_int.to(device=self.device, dtype=self.dtype)

    def tensors(self) -> Dict[int, LayerTensors]:
        """Every neuron layer's integers, by layer index."""
        return {i: self.layer_buffers[i].tensors() for i, _ in self.network.neuron_layers}

    def qann(self, x, all_layers: bool = False, preactivations: Optional[Dict[int, torch.Tensor]] = None):
        """Output counts (batch, classes) as int64, or every layer's counts (on the network's device), by
        `closed_form`; given a dict, also fills it with every neuron layer's pre-activation."""
        values = closed_form(self.network, self.tensors(), self.encode(x), preactivations=preactivations)
        counts = [v.to(torch.int64) for v in values]
        return counts if all_layers else counts[-1].reshape(counts[-1].shape[0], -1)

    def simulate(self, x, steps: int, mode: str = "sync", record_spikes: bool = False,
                 mechanisms: Mechanisms = ALL_MECHANISMS, count_costs: bool = False,
                 until_settled: bool = False) -> Simulation:
        """Run one batch of dataset values for `steps` synchronous steps (pipelined: steps + D of them).

        `mechanisms` leaves QFFS mechanisms out (the paper's ablations; `dynamics.Mechanisms`);
        `count_costs` counts spikes and synaptic operations (costs.py). Which samples sent a spike at each
        step is always tracked (Simulation.active); `until_settled` stops at the first step by which every
        sample has had a silent step after its input and bias windows (latency.py): nothing spikes after it,
        and the result has that many steps. The result's tensors are on the CPU.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        network = self.network
        total = steps if mode == "sync" else steps + network.pipeline_depth
        stepper = _Step(self, self.encode(x), mode, mechanisms)
        batch = stepper.x_int.shape[0]
        outputs = torch.zeros(total, batch, network.num_classes, dtype=torch.int64, device=self.device)
        recorded = [torch.zeros((total, batch) + shape, dtype=torch.int8, device=self.device)
                    for shape in network.shapes[1:]] if record_spikes else None
        counter = CostCounter(network, total, batch, self.device) if count_costs else None
        active = torch.zeros(total, batch, dtype=torch.bool, device=self.device)
        quiet, settled = quiet_from(network, mode), torch.zeros(batch, dtype=torch.bool, device=self.device)
        for t in range(1, total + 1):
            stepper.t = t
            values = network.propagate(stepper)
            stepper.previous = values
            if counter is not None:
                counter.step(t, values)
            outputs[t - 1] = stepper.outputs[network.output_index].reshape(batch, -1)
            active[t - 1] = recorded_activity(values[1:], leading=1)
            if recorded is not None:
                for i, spikes in enumerate(values[1:], start=1):
                    recorded[i - 1][t - 1] = spikes
            if until_settled and t >= quiet:
                settled |= ~active[t - 1]
                if bool(settled.all()):
                    break
        simulation = Simulation(mode, total, network.pipeline_depth, outputs.cpu(),
                                [r.cpu() for r in recorded] if recorded is not None else None,
                                counter.costs if counter is not None else None, active.cpu())
        return simulation.resized(t) if t < total else simulation

    def membrane_peaks(self, x) -> Dict[int, int]:
        """Per neuron layer index, the largest |v| (`dynamics.integrated`) any neuron reaches on a batch of dataset
        values, in synchronous time until the network settles: the first step after the input window in which
        nothing spikes (from then on no current flows and no v changes), at most `Network.settling_steps`."""
        network = self.network
        stepper = _Step(self, self.encode(x), "sync", record_membrane=True)
        for t in range(1, network.settling_steps + 1):
            stepper.t = t
            values = network.propagate(stepper)
            if t > network.bias_steps and not any(bool(v.any()) for v in values[1:]):
                break
        return {i: int(peak) for i, peak in stepper.peaks.items()}


class _Buffers:
    """The executor's visitor that gives each layer its buffers (an empty module where it has none)."""

    def __init__(self, network: Network, dtype: torch.dtype):
        self.network, self.dtype = network, dtype

    def input(self, index, layer):
        return nn.Module()

    def neuron(self, index, layer, sources):
        return _NeuronBuffers(layer, self.dtype)

    def readout(self, index, layer, sources):
        return _ReadoutBuffers(layer, self.dtype)

    def maxpool(self, index, layer, source):
        pool, _ = pool_windows(self.network.shapes[layer.inputs[0]], layer.kernel_size, layer.stride, layer.padding)
        return _PoolBuffers(pool.window_index)

    def flatten(self, index, layer, source):
        return nn.Module()


class _Step:
    """The executor's visitor for one time step t of the SNN; keeps every layer's state between steps."""

    def __init__(self, net: TorchNetwork, x_int: torch.Tensor, mode: str, mechanisms: Mechanisms = ALL_MECHANISMS,
                 record_membrane: bool = False):
        self.net, self.x_int, self.mode, self.mechanisms, self.t = net, x_int, mode, mechanisms, 0
        self.peaks: Optional[Dict[int, torch.Tensor]] = {} if record_membrane else None  # per layer, max |v| so far
        self.skip_silent = x_int.device.type == "cpu"
        batch = x_int.shape[0]
        self.silence = [torch.zeros((batch,) + shape, dtype=net.dtype, device=x_int.device)
                        for shape in net.network.shapes]
        self.previous = self.silence  # pipelined: what each layer sent one step ago
        self.states = {}  # per neuron or pool layer, from its first step on
        self.outputs = {}  # per neuron layer, its output value after the step: the net count z, or a read-out's v

    def input(self, index, layer):
        return self.x_int if self.t <= self.net.network.bias_steps else self.silence[0]

    def _current(self, index, layer, sources):
        """The layer's input current this step: its synapses' sum, and its bias in the bias window."""
        network, tensors = self.net.network, self.net.layer_buffers[index].tensors()
        if self.mode == "pipelined":  # every synapse delivers what its source sent one step ago
            sources = [self.previous[j] for j in layer.inputs]
        if self.skip_silent and not any(bool(s.any()) for s in sources):
            current = self.silence[index]  # event-driven: no spikes, no synaptic work
        else:
            current = synaptic_current(layer, tensors.weights, sources)
        if bias_active(self.t, network.bias_start(index, self.mode), network.bias_steps):
            current = current + tensors.bias
        return current, tensors

    def _peak(self, index, membrane):
        if self.peaks is not None:
            peak = membrane.abs().max()
            self.peaks[index] = torch.maximum(self.peaks.get(index, peak), peak)

    def neuron(self, index, layer, sources):
        current, tensors = self._current(index, layer, sources)
        params = self.mechanisms.params(tensors.params)
        state = self.states.get(index) or neuron_init(self.silence[index], params)
        spikes, self.states[index] = neuron_step(current, state, params, self.mechanisms.negative_spikes)
        self.outputs[index] = self.states[index].z
        if self.peaks is not None:
            self._peak(index, integrated(spikes, self.states[index], params))
        return spikes

    def readout(self, index, layer, sources):
        current, _ = self._current(index, layer, sources)
        spikes, self.states[index] = readout_step(current, self.states.get(index) or
                                                  readout_init(self.silence[index]))
        self.outputs[index] = self.states[index].v
        self._peak(index, self.states[index].v)
        return spikes

    def maxpool(self, index, layer, source):
        batch = source.shape[0]
        pool = PoolParams(self.net.layer_buffers[index].window_index)
        state = self.states.get(index) or pool_init(self.silence[layer.inputs[0]].reshape(batch, -1),
                                                    self.silence[index].reshape(batch, -1))
        flat, self.states[index] = pool_step(source.reshape(batch, -1), state, pool)
        return flat.reshape((batch,) + self.net.network.shapes[index])

    def flatten(self, index, layer, source):
        return source.reshape(source.shape[0], -1)


def check_torch_device(device: str) -> None:
    """Raise ParameterError unless PyTorch can compute on `device` here ("cpu", or "cuda" with a GPU)."""
    if device not in ("cpu", "cuda"):
        raise ParameterError("{} must be cpu or cuda", ("device", device))
    if device == "cuda" and not torch.cuda.is_available():
        raise ParameterError("{}, but PyTorch sees no CUDA GPU here; use {}", ("device", "cuda"), ("device", "cpu"))


class _TorchBackend(Backend):
    """A backend computed by TorchNetwork, on a CPU or a GPU."""

    devices = ("cpu", "cuda")

    batches = True

    def check(self, options, network, steps, loihi_check=True):
        check_torch_device(options.device)
        super().check(options, network, steps, loihi_check)


class QannBackend(_TorchBackend):
    """The integer QANN in closed form: the counts every QFFS network settles to, no time steps."""

    name = "qann"
    summary = "the integer QANN in closed form (the exact target; no time steps)"
    modes = ()

    def simulate(self, network, x, steps, mode, options=RunOptions()):
        net = TorchNetwork(network).to(options.device)
        counts = []
        for start in range(0, len(x), options.batch_size):
            counts.append(net.qann(x[start:start + options.batch_size]).cpu())
            if options.progress is not None:
                options.progress(len(counts[-1]))
        return Simulation(CLOSED_FORM, 1, 0, torch.cat(counts).unsqueeze(0))


class TorchBackend(_TorchBackend):
    """The SNN simulated in PyTorch, a batch of samples at once, on a CPU or a GPU."""

    name = "torch"
    summary = "the SNN simulated in PyTorch, batched, CPU or GPU (synchronous or pipelined)"
    ablations = True
    costs = True

    def simulate(self, network, x, steps, mode, options=RunOptions()):
        # without the count bound, counts (and currents) exceed what exact_dtype plans for
        dtype = None if options.mechanisms.count_bound else torch.float64
        net = TorchNetwork(network, dtype).to(options.device)
        parts = []
        for start in range(0, len(x), options.batch_size):
            parts.append(net.simulate(x[start:start + options.batch_size], steps, mode, options.record_spikes,
                                      options.mechanisms, options.count_costs, options.until_settled))
            if options.progress is not None:
                options.progress(parts[-1].output_counts.shape[1])
        return Simulation.concatenate(parts)
