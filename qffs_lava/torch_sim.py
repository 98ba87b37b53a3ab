"""The QFFS network simulated in PyTorch, batched: the "torch" backend.

Every neuron and pool update is `dynamics.neuron_step` / `dynamics.pool_step`; this
module only wires layers together in time (DESIGN.md section 3):

- synchronous ("sync", the paper's steps t = 1..T): within a step every layer sees the
  previous layer's spikes of the same step;
- pipelined (as Lava and Loihi run it): every synaptic hop delays spikes by one step and
  layer d's bias window is steps d+1 .. d+K, so step T + D equals synchronous step T.

Integers are carried in `qann.exact_dtype(network)`: float32 where every value fits its
exact integer range, else float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch

from qffs_lava.dynamics import PoolParams, neuron_init, neuron_step, pool_init, pool_step, pool_windows
from qffs_lava.netfile import SYNAPTIC, FlattenLayer, MaxPoolLayer, Network
from qffs_lava.qann import encode_inputs, exact_dtype, layer_bias, neuron_params, synaptic_input

MODES = ("sync", "pipelined")


@dataclass
class SimResult:
    """What a simulation recorded, all in the mode's own steps (pipelined: T + D of them).

    output_counts: (steps, batch, classes) int64, the output layer's z after each step
    spikes: per layer after the input, (steps, batch, *shape) int8 spikes, if recorded
    """

    mode: str
    steps: int
    pipeline_depth: int
    output_counts: torch.Tensor
    spikes: Optional[List[torch.Tensor]] = None

    def synchronous_counts(self) -> torch.Tensor:
        """Output counts per synchronous step t = 1..T (pipelined results shifted by the depth D)."""
        return self.output_counts if self.mode == "sync" else self.output_counts[self.pipeline_depth:]


class _Wiring:
    """Per layer, what the time loop needs: integer parameters as tensors, pool windows, shapes."""

    def __init__(self, network: Network, dtype: torch.dtype):
        self.shapes = network.shapes()
        self.params, self.weight, self.bias, self.pools, self.depth = {}, {}, {}, {}, {}
        for i, layer in enumerate(network.layers):
            if isinstance(layer, SYNAPTIC):
                self.depth[i] = len(self.depth) + 1  # d: this layer's synaptic hop count
                self.params[i] = neuron_params(layer, dtype)
                self.weight[i] = torch.as_tensor(layer.weight, dtype=dtype)
                self.bias[i] = layer_bias(layer, dtype)
            elif isinstance(layer, MaxPoolLayer):
                pool, _ = pool_windows(self.shapes[i - 1], layer.kernel_size, layer.stride, layer.padding)
                self.pools[i] = PoolParams(torch.as_tensor(pool.window_index))


def simulate(network: Network, x, steps: int, mode: str = "sync", record_spikes: bool = False) -> SimResult:
    """Run one batch (dataset values, (batch, *input shape)) for `steps` synchronous steps.

    Pipelined mode runs steps + D steps so that its last step equals synchronous step `steps`.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    dtype = exact_dtype(network)
    wiring = _Wiring(network, dtype)
    depth = network.pipeline_depth
    total_steps = steps if mode == "sync" else steps + depth
    x_int = encode_inputs(x, network.input).reshape(-1, *network.input.shape).to(dtype)
    batch = x_int.shape[0]
    K = network.bias_steps

    states = {}
    for i, layer in enumerate(network.layers):
        if isinstance(layer, SYNAPTIC):
            states[i] = neuron_init(torch.zeros((batch,) + wiring.shapes[i], dtype=dtype), wiring.params[i])
        elif isinstance(layer, MaxPoolLayer):
            n_in, n_out = int(np.prod(wiring.shapes[i - 1])), int(np.prod(wiring.shapes[i]))
            states[i] = pool_init(torch.zeros(batch, n_in, dtype=dtype), torch.zeros(batch, n_out, dtype=dtype))
    # pipelined: what each synaptic layer received at the previous step
    delayed = {i: torch.zeros((batch,) + wiring.shapes[i - 1], dtype=dtype)
               for i, layer in enumerate(network.layers) if isinstance(layer, SYNAPTIC)}

    silent = {i: torch.zeros((batch,) + wiring.shapes[i], dtype=dtype) for i in delayed}
    outputs = torch.zeros(total_steps, batch, network.num_classes, dtype=torch.int64)
    recorded = [torch.zeros((total_steps, batch) + shape, dtype=torch.int8) for shape in wiring.shapes[1:]] \
        if record_spikes else None
    zero_input = torch.zeros_like(x_int)
    for t in range(1, total_steps + 1):
        spikes = x_int if t <= K else zero_input
        for i, layer in enumerate(network.layers[1:], start=1):
            if isinstance(layer, SYNAPTIC):
                if mode == "pipelined":  # this hop delivers what arrived one step ago
                    spikes, delayed[i] = delayed[i], spikes
                window_start = wiring.depth[i] + 1 if mode == "pipelined" else 1
                if spikes.any():
                    current = synaptic_input(layer, spikes, wiring.weight[i])
                else:  # event-driven: no spikes, no synaptic work
                    current = silent[i]
                if window_start <= t < window_start + K:
                    current = current + wiring.bias[i]
                spikes, states[i] = neuron_step(current, states[i], wiring.params[i])
                spikes = spikes.to(dtype)
            elif isinstance(layer, MaxPoolLayer):
                flat, states[i] = pool_step(spikes.reshape(batch, -1), states[i], wiring.pools[i])
                spikes = flat.reshape((batch,) + wiring.shapes[i])
            elif isinstance(layer, FlattenLayer):
                spikes = spikes.reshape(batch, -1)
            if recorded is not None:
                recorded[i - 1][t - 1] = spikes.to(torch.int8)
        outputs[t - 1] = states[len(network.layers) - 1].z.reshape(batch, -1).to(torch.int64)
    return SimResult(mode, total_steps, depth, outputs, recorded)
