"""Each sample's exact latency: the step its network falls silent for good, and the step its prediction is final.

Once its input and bias windows are over, a QFFS network that sends no spike in a step has none
in flight and never spikes again: with no current, a neuron's membrane stays where it is, and
a neuron that did not spike at that membrane does not spike at it later (Algorithm 1 decides
from v and z alone; an event max pool sends only when its inputs do). So every count is final
from the last spike on. This module reads that from what a simulator already tracks, whether
each sample sent any spike at each step (`active`), and is shared by every backend:

- `quiet_from(network, mode)`: the run's own step from which a silent step proves a sample
  settled: the last step at which input or bias current enters a neuron layer (sync: K;
  pipelined: the deepest neuron layer's depth + K, since a layer at depth d has its bias
  window at d+1 .. d+K and the input sent at steps 1..K arrives by K+1). Pipelined, a spike
  sent at step s arrives at s+1: a silent step s leaves nothing in flight.
- `settling(active, ...)`: per sample, `settled_at`, the step of the last spike any layer
  sent (0: none), and `stopped_at`, the first silent step from `quiet_from` on, where a run
  that watches for silence stops (`max(quiet_from, settled_at + 1)`); -1 (NOT_SETTLED) where
  the run ended before such a step. Both in the reported convention: synchronous steps for a
  sync run; for a pipelined run, Lava step s is reported as s - D (as its counts are), and a
  last spike at Lava step s <= D as 0.
- `decided_at(predictions)`: per sample, the first step t >= 1 from which its prediction is
  the final one at every later step of the run.
- `spike_bound(network, mode)`: a step by which every sample of the full QFFS dynamics has
  settled (each neuron spikes last at most zMax steps after its current stops), the default
  bound of a run until settled.
"""

from __future__ import annotations

import math
from typing import Dict, List, NamedTuple, Optional, Sequence

import torch

from qffs_lava.ir.layers import NeuronLayer
from qffs_lava.ir.network import Network

#: settled_at and stopped_at of a sample the run ended before it was known to have settled.
NOT_SETTLED = -1


def quiet_from(network: Network, mode: str) -> int:
    """The run's own step from which a step without spikes proves that none follow: the last step any neuron
    layer receives input or bias current (sync: K; pipelined: the deepest neuron layer's depth + K)."""
    K = network.bias_steps
    if mode != "pipelined":
        return K
    return max(network.bias_start(i, mode) + K - 1 for i, _ in network.neuron_layers)


def spike_bound(network: Network, mode: str) -> int:
    """The run's own step by which every neuron has sent its last spike, for the full QFFS dynamics: a neuron
    whose current has stopped moves its count to where it settles one spike a step, so it spikes last at most
    zMax steps after its last current, which comes with its bias window's end or its sources' last spikes (one
    step later, pipelined). `Network.settling_steps` is the synchronous one."""
    delay = 1 if mode == "pipelined" else 0
    K, last = network.bias_steps, []
    for i, layer in enumerate(network.layers):
        if i == 0:
            last.append(K)  # the graded input is sent at steps 1..K
        elif isinstance(layer, NeuronLayer):
            current = max([network.bias_start(i, mode) + K - 1] + [last[j] + delay for j in layer.inputs])
            last.append(current + int(layer.neurons.z_max))
        else:
            last.append(last[layer.inputs[0]])
    return max(last)


def auto_bound(network: Network, mode: str) -> int:
    """The default bound of a run until settled, in synchronous steps (reported T): the step at which a run
    that watches for silence has stopped every sample, for the full dynamics (`spike_bound`)."""
    offset = network.pipeline_depth if mode == "pipelined" else 0
    return max(quiet_from(network, mode), spike_bound(network, mode) + 1) - offset


def recorded_activity(recordings: Sequence, leading: int = 2):
    """Per leading index (e.g. (samples, steps) of a Lava recording, (steps, samples) of a Simulation's spikes,
    or with leading=1 (samples,) of one step's layer outputs), whether any of the layers holds a nonzero value
    there. Torch tensors or numpy arrays."""
    active = None
    for spikes in recordings:
        part = (spikes.reshape(*spikes.shape[:leading], -1) != 0).any(-1)
        active = part if active is None else active | part
    return active


class Settling(NamedTuple):
    """Per sample (N,) int64, in the run's reported convention (module docstring); NOT_SETTLED where unknown."""

    settled_at: torch.Tensor  # the step of the last spike any layer sent (0: none)
    stopped_at: torch.Tensor  # the first silent step from quiet_from on

    @property
    def settled(self) -> torch.Tensor:
        return self.stopped_at != NOT_SETTLED


def settling(active: torch.Tensor, quiet: int, offset: int = 0) -> Settling:
    """Settle steps from `active` (steps, N) bool, which samples sent any spike at each of the run's own steps
    1..steps; `quiet` = quiet_from(network, mode); `offset` = D for a pipelined run (0 sync). A sample is known
    to have settled where the run reached a silent step after its last spike and no earlier than `quiet`."""
    active = torch.as_tensor(active, dtype=torch.bool).cpu()
    steps = active.shape[0]
    index = torch.arange(1, steps + 1).unsqueeze(1)
    last = (active * index).max(dim=0).values if steps else torch.zeros(active.shape[1], dtype=torch.int64)
    stopped = (last + 1).clamp(min=quiet)
    known = stopped <= steps
    unknown = torch.full_like(last, NOT_SETTLED)
    return Settling(torch.where(known, (last - offset).clamp(min=0), unknown).to(torch.int64),
                    torch.where(known, stopped - offset, unknown).to(torch.int64))


def decided_at(predicted: torch.Tensor) -> torch.Tensor:
    """(N,) int64: for predictions (T, N) per step (the argmax of the output counts, lowest index on ties, as
    everywhere), the first step t >= 1 from which each sample's prediction equals its prediction at T at every
    later step."""
    steps = predicted.shape[0]
    differs = predicted != predicted[-1:]
    index = torch.arange(1, steps + 1).unsqueeze(1)
    return ((differs * index).max(dim=0).values + 1).to(torch.int64)


def summary(values: Sequence[int]) -> Optional[Dict[str, float]]:
    """mean, p99 (nearest rank: the smallest value at or above 99% of them) and max of step numbers; None
    for none."""
    values = sorted(int(v) for v in values)
    if not values:
        return None
    rank = max(1, math.ceil(0.99 * len(values)))
    return {"mean": sum(values) / len(values), "p99": values[rank - 1], "max": values[-1]}


def confusion_matrix(predicted: Sequence[int], labels: Sequence[int], classes: int) -> List[List[int]]:
    """[true class][predicted class] -> samples."""
    matrix = [[0] * classes for _ in range(classes)]
    for p, y in zip(predicted, labels):
        matrix[int(y)][int(p)] += 1
    return matrix


def class_accuracy(confusion: Sequence[Sequence[int]]) -> List[Optional[float]]:
    """Per true class, the share of its samples predicted as it (None for a class without samples)."""
    return [row[c] / sum(row) if sum(row) else None for c, row in enumerate(confusion)]
