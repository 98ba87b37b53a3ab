"""Cost accounting (DESIGN.md section 9): spikes, synaptic operations and the ANN's multiply-accumulates.

- A spike is a nonzero s, +1 or -1 (a negative spike counts as one); neuron and max-pool
  layers send spikes, a flatten passes its source's on. The graded input counts one event
  per nonzero value per step (row 0).
- A synaptic operation (SOP) is one spike delivered over one synapse: a spike of source
  neuron n costs fan_out(n), the number of connections (weights, zero or not, counted once
  per output neuron they reach) from n into the layer. A neuron layer's SOPs are those of
  all its synapses, counted at the step the spike is sent.
- The ANN's cost of a neuron layer is its MACs: sum_j sum_n fan_out_j(n), every connection
  once (N*M for a dense synapse; for a conv Cout*Ho*Wo*Cin/groups*kH*kW less the products
  with zero padding, which connect nothing).

Both backends count with the one `CostCounter`: the torch simulator step by step as it
runs, the Lava backend from its recorded spikes, so their figures can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from qffs_lava.ir.layers import ConvSynapse, DenseSynapse, FlattenLayer, NeuronLayer, Shape
from qffs_lava.ir.network import Network


def connections(linear_map: Callable[[torch.Tensor], torch.Tensor], source: Shape) -> torch.Tensor:
    """Per source neuron, its connections through `linear_map` written with all-one weights (and pooling that
    sums): d(sum of the outputs)/dx, each connection counting once."""
    x = torch.ones((1,) + tuple(source), dtype=torch.float64, requires_grad=True)
    linear_map(x).sum().backward()
    return x.grad[0]


class _FanOut:
    """Per source neuron (in the source's shape), how many of the layer's neurons the synapse connects it to."""

    @staticmethod
    def dense(synapse: DenseSynapse, source: Shape) -> torch.Tensor:
        return torch.full(source, float(synapse.weight.shape[0]), dtype=torch.float64)

    @staticmethod
    def conv(synapse: ConvSynapse, source: Shape) -> torch.Tensor:
        ones = torch.ones(synapse.weight.shape, dtype=torch.float64)
        return connections(lambda x: F.conv2d(x, ones, None, synapse.stride, synapse.padding, synapse.dilation,
                                              synapse.groups), source)


def fan_outs(network: Network) -> Dict[int, List[torch.Tensor]]:
    """Per neuron layer, per synapse: the fan-out of each neuron of that synapse's source."""
    return {i: [synapse.visit(_FanOut, network.shapes[j]) for synapse, j in zip(layer.synapses, layer.inputs)]
            for i, layer in network.neuron_layers}


def macs(network: Network) -> np.ndarray:
    """Per layer, the ANN's multiply-accumulates per sample (0 where a layer has no synapses)."""
    result = np.zeros(len(network.layers), dtype=np.int64)
    for i, maps in fan_outs(network).items():
        result[i] = sum(int(m.sum()) for m in maps)
    return result


def weight_counts(network: Network) -> np.ndarray:
    """Per layer, the integer weights it stores (a conv's kernel once, as net.h5 holds it)."""
    return np.array([sum(s.weight.size for s in layer.synapses) if isinstance(layer, NeuronLayer) else 0
                     for layer in network.layers], dtype=np.int64)


@dataclass
class Costs:
    """Spikes and SOPs summed over `samples` samples: int64 arrays (layers, steps), in the run's own steps
    (pipelined: T + D of them). Row 0 holds the graded input's events."""

    positive: np.ndarray
    negative: np.ndarray
    sops: np.ndarray
    samples: int

    @classmethod
    def zeros(cls, layers: int, steps: int) -> "Costs":
        return cls(*(np.zeros((layers, steps), dtype=np.int64) for _ in range(3)), samples=0)

    def __add__(self, other: "Costs") -> "Costs":
        return Costs(self.positive + other.positive, self.negative + other.negative, self.sops + other.sops,
                     self.samples + other.samples)

    def __eq__(self, other) -> bool:
        return isinstance(other, Costs) and self.samples == other.samples and all(
            np.array_equal(getattr(self, k), getattr(other, k)) for k in ("positive", "negative", "sops"))


class CostCounter:
    """Counts, one step at a time over a batch, each layer's spikes and the SOPs each neuron layer receives."""

    def __init__(self, network: Network, steps: int, samples: int, device: torch.device | str = "cpu"):
        self.network = network
        self.sends = [k for k, layer in enumerate(network.layers) if not isinstance(layer, FlattenLayer)]
        self.fan_outs = {i: [m.to(device) for m in maps] for i, maps in fan_outs(network).items()}
        self.costs = Costs.zeros(len(network.layers), steps)
        self.costs.samples = samples

    def step(self, t: int, values: Sequence[torch.Tensor]) -> None:
        """Add step t's values (every layer's, batch first: the input's graded values, spikes after it)."""
        costs = self.costs
        for k in self.sends:
            costs.positive[k, t - 1] += int((values[k] > 0).sum())
            costs.negative[k, t - 1] += int((values[k] < 0).sum())
        for i, layer in self.network.neuron_layers:
            for j, fan_out in zip(layer.inputs, self.fan_outs[i]):
                active = (values[j] != 0).sum(dim=0)  # per source neuron, over the batch
                costs.sops[i, t - 1] += int((active.to(torch.float64) * fan_out).sum())


def count_recording(network: Network, x_int: torch.Tensor, spikes: Dict[int, torch.Tensor]) -> Costs:
    """Costs of a recorded run: x_int (batch, *input shape) sent for the first K steps, and every later
    layer's spikes (steps, batch, *shape), as the Lava backend records them."""
    steps, batch = spikes[1].shape[:2]
    counter = CostCounter(network, steps, batch)
    silence = torch.zeros_like(x_int)
    for t in range(1, steps + 1):
        values = [x_int if t <= network.bias_steps else silence]
        counter.step(t, values + [spikes[k][t - 1] for k in range(1, len(network.layers))])
    return counter.costs


def cost_report(network: Network, costs: Costs, mode: str) -> Dict:
    """Per layer and in total, per sample (mean over the samples), for each synchronous step t = 1..T:
    the cumulative spikes, SOPs and, with the MACs, SOPs / MACs. Pipelined runs are reported at t + D, the
    step at which they give synchronous step t's result."""
    offset = network.pipeline_depth if mode == "pipelined" else 0
    samples = max(costs.samples, 1)

    def per_sample(counts: np.ndarray) -> np.ndarray:
        return counts.cumsum(axis=-1)[..., offset:] / samples

    positive, negative, sops = per_sample(costs.positive), per_sample(costs.negative), per_sample(costs.sops)
    layer_macs, weights = macs(network), weight_counts(network)
    layers = []
    for k, layer in enumerate(network.layers):
        layers.append({
            "index": k, "type": layer.describe(),
            "neurons": int(np.prod(network.shapes[k])) if isinstance(layer, NeuronLayer) else 0,
            "weights": int(weights[k]), "macs": int(layer_macs[k]),
            "positive_spikes": positive[k].tolist(), "negative_spikes": negative[k].tolist(),
            "sops": sops[k].tolist(),
        })
    spikes = positive[1:].sum(axis=0) + negative[1:].sum(axis=0)
    total_sops, total_macs = sops.sum(axis=0), int(layer_macs.sum())
    return {
        "samples": costs.samples, "mode": mode, "pipeline_depth": network.pipeline_depth,
        "definition": "DESIGN.md section 9: spikes +1 or -1 each; SOP = spike x fan-out; MACs of the same network",
        "layers": layers,
        "total": {"input_events": (positive[0] + negative[0]).tolist(), "spikes": spikes.tolist(),
                  "positive_spikes": positive[1:].sum(axis=0).tolist(),
                  "negative_spikes": negative[1:].sum(axis=0).tolist(),
                  "sops": total_sops.tolist(), "macs": total_macs,
                  "sops_per_mac": (total_sops / max(total_macs, 1)).tolist()},
    }

