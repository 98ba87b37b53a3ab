"""The network in PyTorch: the integer QANN ("qann" backend) and the batched SNN simulation ("torch").

A `TorchNetwork` is built once per network: every integer parameter is a buffer, so
`.to("cuda")` moves it to a GPU, and both backends walk the graph with the one executor
(`Network.propagate`):

- `qann(x)`: the closed form every QFFS network settles to (DESIGN.md section 7),
      z = clip(floor((sum_j W_j . z_j + K b + vInit) / th), 0, zMax),
  with K * x_int for the graded input, the max of the counts for max pooling;
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

from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qffs_lava.costs import CostCounter, Costs
from qffs_lava.dynamics import (
    ALL_MECHANISMS,
    Mechanisms,
    NeuronParams,
    PoolParams,
    bias_active,
    neuron_init,
    neuron_step,
    pool_init,
    pool_step,
    pool_windows,
    settled_count,
)
from qffs_lava.ir.layers import ConvSynapse, DenseSynapse, InputLayer, NeuronLayer
from qffs_lava.ir.loihi import count_bounds, membrane_bounds
from qffs_lava.ir.network import MODES, Network


def exact_dtype(network: Network) -> torch.dtype:
    """float32 when every count, current, membrane and QANN sum stays below 2^23 in magnitude, else float64."""
    bounds = count_bounds(network)
    worst = max(bounds)
    for i, layer in network.neuron_layers:
        low, high = membrane_bounds(network, i, bounds)
        fan_in = sum(int(np.abs(s.rows()).sum(1).max()) * bounds[j] for s, j in zip(layer.synapses, layer.inputs))
        total = fan_in + network.bias_steps * int(np.abs(layer.bias).max()) + int(layer.neurons.threshold.max())
        worst = max(worst, -low, high, total)
    return torch.float32 if worst < 2**23 else torch.float64


def encode_inputs(x, input_layer: InputLayer) -> torch.Tensor:
    """x_int = floor(x * inputScale + 1/2) as int64, for dataset values x (floats in [0, 1])."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float64)
    return input_layer.encode(x).to(torch.int64)


@dataclass
class SimResult:
    """What a simulation recorded, all in the mode's own steps (pipelined: T + D of them).

    output_counts: (steps, batch, classes) int64, the output layer's z after each step
    spikes: per layer after the input, (steps, batch, *shape) int8 spikes, if recorded
    costs: every layer's spikes and SOPs per step (costs.py), if counted
    """

    mode: str
    steps: int
    pipeline_depth: int
    output_counts: torch.Tensor
    spikes: Optional[List[torch.Tensor]] = None
    costs: Optional[Costs] = None

    def synchronous_counts(self) -> torch.Tensor:
        """Output counts per synchronous step t = 1..T (pipelined results shifted by the depth D)."""
        return self.output_counts if self.mode == "sync" else self.output_counts[self.pipeline_depth:]


class _NeuronBuffers(nn.Module):
    """A neuron layer's integers as buffers: weights w0.. (one per synapse), bias, threshold, vInit."""

    def __init__(self, layer: NeuronLayer, dtype: torch.dtype):
        super().__init__()
        channel = (-1,) + (1,) * (len(layer.shape) - 1)  # broadcast over (batch, N) or (batch, C, H, W)
        for j, synapse in enumerate(layer.synapses):
            self.register_buffer(f"w{j}", torch.as_tensor(synapse.weight, dtype=dtype))
        self.register_buffer("bias", torch.as_tensor(layer.bias, dtype=dtype).reshape(channel))
        self.register_buffer("threshold", torch.as_tensor(layer.neurons.threshold, dtype=dtype).reshape(channel))
        self.register_buffer("v_init", torch.as_tensor(layer.neurons.v_init, dtype=dtype).reshape(channel))
        self.z_max = layer.neurons.z_max

    def weight(self, j: int) -> torch.Tensor:
        return getattr(self, f"w{j}")

    def params(self) -> NeuronParams:
        return NeuronParams(threshold=self.threshold, z_max=self.z_max, v_init=self.v_init)


class _PoolBuffers(nn.Module):
    """A max pool's window index (`dynamics.pool_windows`) as a buffer."""

    def __init__(self, window_index: np.ndarray):
        super().__init__()
        self.register_buffer("window_index", torch.as_tensor(window_index, dtype=torch.int64))


class _Synapses:
    """W . s for each synapse type (batch first, no bias), in the dtype of the weight."""

    @staticmethod
    def dense(synapse: DenseSynapse, weight: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
        return spikes @ weight.T

    @staticmethod
    def conv(synapse: ConvSynapse, weight: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
        return F.conv2d(spikes, weight, None, synapse.stride, synapse.padding, synapse.dilation, synapse.groups)


class TorchNetwork(nn.Module):
    """A net.h5 network as torch buffers, built once: the QANN closed form and the SNN, on any device."""

    def __init__(self, network: Network, dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.network = network
        self.dtype = dtype or exact_dtype(network)
        self.layer_buffers = nn.ModuleList(network.propagate(_Buffers(network, self.dtype)))

    @property
    def device(self) -> torch.device:
        return next((b.device for b in self.buffers()), torch.device("cpu"))

    def encode(self, x) -> torch.Tensor:
        """Dataset values (batch, *input shape) as x_int in the network's dtype, on its device."""
        x_int = encode_inputs(x, self.network.input).reshape(-1, *self.network.input.shape)
        return x_int.to(device=self.device, dtype=self.dtype)

    def current(self, index: int, sources: List[torch.Tensor]) -> torch.Tensor:
        """sum_j W_j . sources[j] for neuron layer `index`."""
        layer, buffers = self.network.layers[index], self.layer_buffers[index]
        total = None
        for j, (synapse, source) in enumerate(zip(layer.synapses, sources)):
            part = synapse.visit(_Synapses, buffers.weight(j), source)
            total = part if total is None else total + part
        return total

    def qann(self, x, all_layers: bool = False, preactivations: Optional[Dict[int, torch.Tensor]] = None):
        """Output counts (batch, classes) as int64, or every layer's counts (on the network's device).

        Given a dict, also fills it, per neuron layer index, with (sum_j W_j . z_j + K b + vInit) / th:
        the value whose floor, clipped, is z.
        """
        values = self.network.propagate(_Settle(self, self.encode(x), preactivations))
        counts = [v.to(torch.int64) for v in values]
        return counts if all_layers else counts[-1].reshape(counts[-1].shape[0], -1)

    def simulate(self, x, steps: int, mode: str = "sync", record_spikes: bool = False,
                 mechanisms: Mechanisms = ALL_MECHANISMS, count_costs: bool = False) -> SimResult:
        """Run one batch of dataset values for `steps` synchronous steps (pipelined: steps + D of them).

        `mechanisms` leaves QFFS mechanisms out (the paper's ablations; `dynamics.Mechanisms`);
        `count_costs` counts spikes and synaptic operations (costs.py). The result's tensors are on the CPU.
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
        for t in range(1, total + 1):
            stepper.t = t
            values = network.propagate(stepper)
            stepper.previous = values
            if counter is not None:
                counter.step(t, values)
            outputs[t - 1] = stepper.states[network.output_index].z.reshape(batch, -1)
            if recorded is not None:
                for i, spikes in enumerate(values[1:], start=1):
                    recorded[i - 1][t - 1] = spikes
        return SimResult(mode, total, network.pipeline_depth, outputs.cpu(),
                         [r.cpu() for r in recorded] if recorded is not None else None,
                         counter.costs if counter is not None else None)


class _Buffers:
    """The executor's visitor that gives each layer its buffers (an empty module where it has none)."""

    def __init__(self, network: Network, dtype: torch.dtype):
        self.network, self.dtype = network, dtype

    def input(self, index, layer):
        return nn.Module()

    def neuron(self, index, layer, sources):
        return _NeuronBuffers(layer, self.dtype)

    def maxpool(self, index, layer, source):
        pool, _ = pool_windows(self.network.shapes[layer.inputs[0]], layer.kernel_size, layer.stride, layer.padding)
        return _PoolBuffers(pool.window_index)

    def flatten(self, index, layer, source):
        return nn.Module()


class _Settle:
    """The executor's visitor for the closed form: each layer's settled counts (and, given `pre`, each neuron
    layer's pre-activation)."""

    def __init__(self, net: TorchNetwork, x_int: torch.Tensor, pre: Optional[Dict[int, torch.Tensor]] = None):
        self.net, self.x_int, self.pre = net, x_int, pre

    def input(self, index, layer):
        return self.x_int * self.net.network.bias_steps  # the input is presented for K steps

    def neuron(self, index, layer, sources):
        buffers = self.net.layer_buffers[index]
        total = self.net.current(index, sources) + self.net.network.bias_steps * buffers.bias
        if self.pre is not None:
            self.pre[index] = (total + buffers.v_init) / buffers.threshold
        return settled_count(total, buffers.params())

    def maxpool(self, index, layer, source):
        return F.max_pool2d(source, layer.kernel_size, layer.stride, layer.padding)

    def flatten(self, index, layer, source):
        return source.reshape(source.shape[0], -1)


class _Step:
    """The executor's visitor for one time step t of the SNN; keeps every layer's state between steps."""

    def __init__(self, net: TorchNetwork, x_int: torch.Tensor, mode: str, mechanisms: Mechanisms = ALL_MECHANISMS):
        self.net, self.x_int, self.mode, self.mechanisms, self.t = net, x_int, mode, mechanisms, 0
        self.skip_silent = x_int.device.type == "cpu"
        batch = x_int.shape[0]
        self.silence = [torch.zeros((batch,) + shape, dtype=net.dtype, device=x_int.device)
                        for shape in net.network.shapes]
        self.previous = self.silence  # pipelined: what each layer sent one step ago
        self.states = {}  # per neuron or pool layer, from its first step on

    def input(self, index, layer):
        return self.x_int if self.t <= self.net.network.bias_steps else self.silence[0]

    def neuron(self, index, layer, sources):
        network, buffers = self.net.network, self.net.layer_buffers[index]
        if self.mode == "pipelined":  # every synapse delivers what its source sent one step ago
            sources = [self.previous[j] for j in layer.inputs]
        if self.skip_silent and not any(bool(s.any()) for s in sources):
            current = self.silence[index]  # event-driven: no spikes, no synaptic work
        else:
            current = self.net.current(index, sources)
        if bias_active(self.t, network.bias_start(index, self.mode), network.bias_steps):
            current = current + buffers.bias
        params = self.mechanisms.params(buffers.params())
        state = self.states.get(index) or neuron_init(self.silence[index], params)
        spikes, self.states[index] = neuron_step(current, state, params, self.mechanisms.negative_spikes)
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
