"""What runs return, apart from any backend: a backend's `Simulation`, and `RunResult`, what `qffs.run` and
`qffs-run` report.

`Simulation` holds what every backend produces for N samples: the output layer's net spike
count after each of the run's own steps (pipelined runs have T + D of them), and, where
asked for, every layer's spikes and the run's costs. `RunResult` compares a simulation with
the integer QANN after every synchronous step t = 1..T; `to_json()` is the `--json` report.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from qffs_lava.costs import Costs

#: The mode of a closed-form result (the qann backend), which has no time steps.
CLOSED_FORM = "closed form"


@dataclass
class Simulation:
    """A backend's output for N samples, in its own steps.

    mode:           "sync", "pipelined", or CLOSED_FORM (one row: the settled counts)
    steps:          rows of output_counts (pipelined: T + D)
    pipeline_depth: D, the steps a pipelined run lags the synchronous one
    output_counts:  (steps, N, classes) int64, the output layer's net count z after each step (a read-out
                    output's potential v; the closed form: the QANN's counts, or a read-out's pre-activation)
    spikes:         per layer after the input, (steps, N, *shape) int8 spikes, if recorded
    costs:          spikes and synaptic operations per layer and step (costs.py), if counted
    active:         (steps, N) bool, whether the sample sent any spike (any layer) at each step, where tracked
                    (latency.py reads the settle steps from it)
    """

    mode: str
    steps: int
    pipeline_depth: int
    output_counts: torch.Tensor
    spikes: Optional[List[torch.Tensor]] = None
    costs: Optional[Costs] = None
    active: Optional[torch.Tensor] = None

    def synchronous_counts(self) -> torch.Tensor:
        """Output counts per synchronous step t = 1..T (a pipelined run's rows shifted by D)."""
        return self.output_counts[self.pipeline_depth:] if self.mode == "pipelined" else self.output_counts

    def resized(self, steps: int) -> "Simulation":
        """The simulation cut to its first `steps` steps, or extended to them as a settled run continues: the
        counts held, no spikes, no costs (only right for a run whose every sample has settled)."""
        more = steps - self.steps
        if more <= 0:
            cut = None if self.costs is None else Costs(self.costs.positive[:, :steps], self.costs.negative[:, :steps],
                                       self.costs.sops[:, :steps], self.costs.samples)
            return Simulation(self.mode, steps, self.pipeline_depth, self.output_counts[:steps],
                              None if self.spikes is None else [s[:steps] for s in self.spikes], cut,
                              None if self.active is None else self.active[:steps])

        def pad(tensor: torch.Tensor) -> torch.Tensor:
            return torch.cat([tensor, tensor.new_zeros((more,) + tuple(tensor.shape[1:]))])

        costs = None if self.costs is None else Costs(*(np.pad(getattr(self.costs, k), ((0, 0), (0, more)))
                                       for k in ("positive", "negative", "sops")), samples=self.costs.samples)
        return Simulation(self.mode, steps, self.pipeline_depth,
                          torch.cat([self.output_counts, self.output_counts[-1:].expand(more, -1, -1)]),
                          None if self.spikes is None else [pad(s) for s in self.spikes], costs,
                          None if self.active is None else pad(self.active))

    @classmethod
    def concatenate(cls, parts: Sequence["Simulation"]) -> "Simulation":
        """The simulations of consecutive batches of samples as one; a batch that stopped early (settled, a run
        until settled) is extended to the longest (`resized`)."""
        steps = max(p.steps for p in parts)
        parts = [p if p.steps == steps else p.resized(steps) for p in parts]
        first = parts[0]
        spikes = None if first.spikes is None else [torch.cat([p.spikes[i] for p in parts], dim=1)
                                                    for i in range(len(first.spikes))]
        costs = None if first.costs is None else sum((p.costs for p in parts[1:]), first.costs)
        active = None if first.active is None else torch.cat([p.active for p in parts], dim=1)
        return cls(first.mode, steps, first.pipeline_depth,
                   torch.cat([p.output_counts for p in parts], dim=1), spikes, costs, active)


@dataclass
class RunResult:
    """A net.h5 run on N samples, compared with its integer QANN (`qffs.run`, `qffs-run`).

    Accuracies are shares in [0, 1] (None without labels); the per-step lists have one entry per
    synchronous step t = 1..T (None for the qann backend, which has no steps):

        accuracy_by_step[t-1]      share of predictions at t equal to the labels
        agreement_by_step[t-1]     share of predictions at t equal to the QANN's
        equal_counts_by_step[t-1]  share of samples whose output counts at t equal the QANN's
        equal_from_step            the first t from which every sample's counts equal the QANN's

    output_counts (N, classes), predictions, labels and qann_predictions are per sample, at T.
    costs is the cost report (costs.cost_report) when counted. output says what the network's output is:
    "spiking" (output_counts are net spike counts) or "read-out" (they are the read-out's potentials, and
    the QANN's values its integer pre-activations; the output sends no spikes).

    Per sample, with time steps (latency.py; the run's reported convention, synchronous steps):
        settled_at[i]   the step of the last spike any layer sent (0: none): every count is final from it on;
                        None where the run ended before the sample was seen to have settled
        decided_at[i]   the first step from which its prediction is the one at T
    steps_bound is the bound of a run until settled (steps="auto"; steps is then the T it reached), else None.
    With labels, at T: confusion[true][predicted] (sample counts) and class_accuracy (per true class; None for
    a class without samples).
    """

    backend: str
    mode: str
    steps: int
    samples: int
    device: str
    pipeline_depth: int
    bias_steps: int
    ablated: List[str]
    qann_accuracy: Optional[float]
    accuracy: Optional[float]
    seconds: float
    output_counts: List[List[int]]
    predictions: List[int]
    labels: Optional[List[int]]
    qann_predictions: List[int]
    accuracy_by_step: Optional[List[Optional[float]]] = None
    agreement_by_step: Optional[List[float]] = None
    equal_counts_by_step: Optional[List[float]] = None
    equal_from_step: Optional[int] = None
    costs: Optional[Dict[str, Any]] = None
    net: Optional[str] = None
    inputs: Optional[str] = None
    settled_at: Optional[List[Optional[int]]] = None
    decided_at: Optional[List[int]] = None
    steps_bound: Optional[int] = None
    confusion: Optional[List[List[int]]] = None
    class_accuracy: Optional[List[Optional[float]]] = None
    output: str = "spiking"

    @property
    def time_steps(self) -> bool:
        """Whether the run has time steps (every backend but qann)."""
        return self.agreement_by_step is not None

    def to_dict(self) -> Dict[str, Any]:
        """The report as plain data (what --json writes); costs only where counted."""
        data = dataclasses.asdict(self)
        if data["costs"] is None:
            del data["costs"]
        if not self.time_steps:
            for key in ("accuracy_by_step", "agreement_by_step", "equal_counts_by_step", "equal_from_step",
                        "settled_at", "decided_at", "steps_bound"):
                del data[key]
        if self.confusion is None:
            del data["confusion"], data["class_accuracy"]
        return data

    def to_json(self) -> str:
        """The report as `qffs-run --json` writes it."""
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "RunResult":
        """A result from its `to_dict()`, or from a --json file's content."""
        return cls(**data)
