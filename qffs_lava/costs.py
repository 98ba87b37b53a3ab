"""Cost accounting (docs/costs.md): spikes, synaptic operations and the ANN's multiply-accumulates.

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
runs, the Lava backend from tallies of its recorded spikes, so their figures can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

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


def sends_spikes(layer) -> bool:
    """Whether a layer's values count as sent events: all but a flatten's, which passes its source's on, and a
    read-out's, which never fires."""
    return not isinstance(layer, FlattenLayer) and (not isinstance(layer, NeuronLayer) or layer.neurons.fires)


class CostCounter:
    """Counts each layer's spikes and the SOPs each neuron layer receives, from per-neuron tallies.

    A tally of layer k at step t is, per neuron of k, how many of the samples sent a positive and
    how many a negative value. The torch simulator tallies every step of a batch as it runs
    (`step`); the Lava backend tallies its recordings in its workers (`tally`, numpy only) and
    the parent adds them here (`add`), so fan-outs and sums stay in this process.
    """

    def __init__(self, network: Network, steps: int, samples: int, device: torch.device | str = "cpu"):
        self.network = network
        self.sends = [sends_spikes(layer) for layer in network.layers]
        self.readers: List[List[tuple]] = [[] for _ in network.layers]  # per layer: (reader, fan-out) per synapse
        for i, maps in fan_outs(network).items():
            for j, fan_out in zip(network.layers[i].inputs, maps):
                self.readers[j].append((i, fan_out.to(device)))
        self.costs = Costs.zeros(len(network.layers), steps)
        self.costs.samples = samples

    def add(self, t: int, k: int, positive, negative) -> None:
        """Add layer k's tally at step t: per neuron (in its shape), how many samples sent +, how many -."""
        positive, negative = torch.as_tensor(positive), torch.as_tensor(negative)
        if self.sends[k]:
            self.costs.positive[k, t - 1] += int(positive.sum())
            self.costs.negative[k, t - 1] += int(negative.sum())
        for i, fan_out in self.readers[k]:
            active = (positive + negative).to(device=fan_out.device, dtype=torch.float64)
            self.costs.sops[i, t - 1] += int((active.reshape(fan_out.shape) * fan_out).sum())

    def step(self, t: int, values: Sequence[torch.Tensor]) -> None:
        """Add step t's values (every layer's, batch first: the input's graded values, spikes after it)."""
        for k, value in enumerate(values):
            self.add(t, k, *tally(value))


def tally(values, axis: int = 0):
    """(positive, negative): per neuron, how many of the values along `axis` (the samples) are > 0 and < 0.

    Numpy arrays and torch tensors alike: the Lava workers tally their recordings with numpy."""
    return (values > 0).sum(axis), (values < 0).sum(axis)


def cost_report(network: Network, costs: Costs, mode: str, stop_steps: Optional[Sequence[int]] = None) -> Dict:
    """Per layer and in total, per sample (mean over the samples), for each synchronous step t = 1..T:
    the cumulative spikes, SOPs and, with the MACs, SOPs / MACs. Pipelined runs are reported at t + D, the
    step at which they give synchronous step t's result.

    With `stop_steps` (per sample, in the run's own steps: where a run that stops a silent network stops it,
    latency.Settling.stopped_at + D pipelined), also `until_settled`: per sample, what the run costs up to its
    stop step against up to the run's last: steps and neuron updates (every neuron once a step); the spikes,
    SOPs and input events are the run's own, since nothing is sent after a sample's settle step and its input
    ends before its stop step."""
    offset = network.pipeline_depth if mode == "pipelined" else 0
    samples = max(costs.samples, 1)

    def per_sample(counts: np.ndarray) -> np.ndarray:
        return counts.cumsum(axis=-1)[..., offset:] / samples

    positive, negative, sops = per_sample(costs.positive), per_sample(costs.negative), per_sample(costs.sops)
    layer_macs, weights = macs(network), weight_counts(network)
    layers = []
    for k, layer in enumerate(network.layers):
        layers.append({
            "index": k, "type": layer.describe(), "sends": sends_spikes(layer),
            "neurons": int(np.prod(network.shapes[k])) if isinstance(layer, NeuronLayer) else 0,
            "weights": int(weights[k]), "macs": int(layer_macs[k]),
            "positive_spikes": positive[k].tolist(), "negative_spikes": negative[k].tolist(),
            "sops": sops[k].tolist(),
        })
    spikes = positive[1:].sum(axis=0) + negative[1:].sum(axis=0)
    total_sops, total_macs = sops.sum(axis=0), int(layer_macs.sum())
    report = {
        "samples": costs.samples, "mode": mode, "pipeline_depth": network.pipeline_depth,
        "definition": "docs/costs.md: spikes +1 or -1 each; SOP = spike x fan-out; MACs of the same network",
        "layers": layers,
        "total": {"input_events": (positive[0] + negative[0]).tolist(), "spikes": spikes.tolist(),
                  "positive_spikes": positive[1:].sum(axis=0).tolist(),
                  "negative_spikes": negative[1:].sum(axis=0).tolist(),
                  "sops": total_sops.tolist(), "macs": total_macs,
                  "sops_per_mac": (total_sops / max(total_macs, 1)).tolist()},
    }
    if stop_steps is not None:
        neurons = sum(layer["neurons"] for layer in layers)
        stops = np.asarray(stop_steps, dtype=np.float64)
        steps = costs.positive.shape[1]
        report["until_settled"] = {
            "definition": "per sample, up to its stop step (its first silent step after the input and bias windows, "
                          "in the run's own steps) against up to the run's last step; spikes, SOPs and input events "
                          "are the same (nothing is sent after the settle step)",
            "steps": float(stops.mean()), "steps_fixed": steps,
            "neuron_updates": float(stops.mean() * neurons), "neuron_updates_fixed": steps * neurons,
            "spikes": float(spikes[-1]), "sops": float(total_sops[-1]),
            "input_events": float(positive[0][-1] + negative[0][-1]),
        }
    return report

