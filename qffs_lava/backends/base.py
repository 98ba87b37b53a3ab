"""The backend interface: what a backend needs, and how it runs a network (docs/backends.md).

A backend is one subclass of `Backend`: class attributes say what it needs and can do, and
`simulate` runs a network on N samples for T steps in one of its modes, returning a
`results.Simulation`. The registry (`qffs_lava.backends.BACKENDS`) holds one instance of each;
nothing outside it tests a backend's name.
"""

from __future__ import annotations

import importlib.metadata
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, Dict, List, Optional, Tuple

import numpy as np

from qffs_lava.dynamics import ALL_MECHANISMS, Mechanisms
from qffs_lava.errors import ParameterError, QffsError, QffsFormatError
from qffs_lava.ir.loihi import loihi_problems
from qffs_lava.ir.network import MODES, Network
from qffs_lava.results import CLOSED_FORM, Simulation


@dataclass(frozen=True)
class RunOptions:
    """How to run, beyond the network, the inputs, T and the mode; each backend uses what applies to it.

    batch_size:    samples per batch (qann, torch)
    device:        where it runs, one of the backend's `devices`
    workers:       Lava runtimes at once, each in its own process (None: one per core)
    chunk:         samples per Lava runtime (rounded up to whole groups of lava_batch)
    lava_batch:    Lava backends: samples side by side in one network (None: the backend's choice)
    mechanisms:    QFFS mechanisms to simulate (backends with `ablations`; dynamics.Mechanisms)
    record_spikes: keep every layer's spikes (Simulation.spikes)
    count_costs:   count spikes and synaptic operations (Simulation.costs; backends with `costs`)
    activity:      track which samples send a spike at each step (Simulation.active, whence latency.py reads
                   each sample's settle step; the torch backend always does, the Lava backends record every
                   layer for it)
    until_settled: a batch may stop stepping once every sample in it has settled (latency.py; the torch
                   backend does, the Lava backends run every step): `steps` is then a bound, and the result
                   has as many steps as the longest batch ran
    progress:      called with the number of samples each time some are done
    """

    batch_size: int = 256
    device: str = "cpu"
    workers: Optional[int] = None
    chunk: int = 100
    lava_batch: Optional[int] = None
    mechanisms: Mechanisms = ALL_MECHANISMS
    record_spikes: bool = False
    count_costs: bool = False
    activity: bool = False
    until_settled: bool = False
    progress: Optional[Callable[[int], None]] = None


#: The RunOptions fields a backend may not honour: the capability (a `Backend` attribute) that honours each, and
#: what the backends with it do, for the refusal of the others. `device` is checked against `Backend.devices`,
#: `progress` is honoured by every backend.
OPTION_NEEDS: Dict[str, Tuple[str, str]] = {
    "batch_size": ("batches", "run samples in batches"),
    "workers": ("worker_processes", "run in worker processes"),
    "chunk": ("worker_processes", "hand samples to worker processes in chunks"),
    "lava_batch": ("lava_tag", "build Lava networks"),
    "mechanisms": ("ablations", "simulate without some of QFFS's mechanisms"),
    "record_spikes": ("time_steps", "run time steps, whose spikes they record"),
    "count_costs": ("costs", "count spikes and synaptic operations"),
    "activity": ("time_steps", "run time steps, in which samples settle"),
    "until_settled": ("time_steps", "run time steps, until every sample has settled"),
}

#: How a refused option's value reads where the argument that sets it is not the option itself (steps="auto").
SHOWN_AS = {"until_settled": "auto"}


def installed(distribution: str) -> bool:
    """Whether a package of that distribution name (as pip installs it) is installed."""
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


#: The RunOptions fields that must be positive where given.
POSITIVE = ("batch_size", "workers", "chunk", "lava_batch")


class Backend(ABC):
    """One way to run a net.h5. What it needs and can do are class attributes:

    name:         its name in the registry, `--backend` and reports
    summary:      one line for --help
    devices:      where it runs (`RunOptions.device`)
    lava_tag:     the Lava ProcessModel tag it selects (None: not Lava)
    packages:     the optional packages it needs beyond the core install
    modes:        the time modes it runs (ir.network.MODES); () for a closed form without time steps
    batches:      whether it runs samples in batches of `RunOptions.batch_size`
    ablations:    whether it simulates without some of QFFS's mechanisms (`RunOptions.mechanisms`)
    costs:        whether it counts spikes and synaptic operations (`RunOptions.count_costs`)
    loihi_ranges: whether it computes in Loihi 2's fixed-point ranges, so that a network outside them
                  is refused unless asked (values then saturate)
    worker_processes: whether it runs in worker processes (`RunOptions.workers`)

    `OPTION_NEEDS` says which capability honours which option; `check` refuses the others.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    devices: ClassVar[Tuple[str, ...]] = ("cpu",)
    lava_tag: ClassVar[Optional[str]] = None
    packages: ClassVar[Tuple[str, ...]] = ()
    modes: ClassVar[Tuple[str, ...]] = MODES
    batches: ClassVar[bool] = False
    ablations: ClassVar[bool] = False
    costs: ClassVar[bool] = False
    loihi_ranges: ClassVar[bool] = False
    worker_processes: ClassVar[bool] = False

    @property
    def time_steps(self) -> bool:
        """Whether it runs step by step (every backend but a closed form)."""
        return bool(self.modes)

    def mode_for(self, mode: Optional[str]) -> str:
        """The mode it runs: `mode`, or its own first (CLOSED_FORM without time steps) when None; ParameterError for
        a mode it does not run."""
        if mode is None:
            return self.modes[0] if self.modes else CLOSED_FORM
        if mode not in MODES:
            raise ParameterError(f"{{}}: unknown mode {mode!r} (choose from {', '.join(MODES)})", "mode")
        if mode not in self.modes:
            runs = f"runs {' or '.join(self.modes)} only" if self.modes else "has no time steps"
            raise ParameterError(f"{{}}: the {self.name} backend {runs}", ("mode", mode))
        return mode

    def check(self, options: RunOptions, network: Network, steps: int, loihi_check: bool = True) -> None:
        """Raise QffsError, before anything runs, where it cannot run the network for T = `steps` with these
        options here: an option it does not honour (`OPTION_NEEDS`) or out of range, T shorter than the K steps
        the input lasts, a device or package it lacks, or (`loihi_check`) a network outside Loihi 2's ranges
        where it computes in them."""
        from qffs_lava.backends import names_with  # the registry, which imports this module

        defaults = RunOptions()
        for field in POSITIVE:
            value = getattr(options, field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ParameterError("{} must be a whole number of at least 1", (field, value))
        for field, (capability, what) in OPTION_NEEDS.items():
            value = getattr(options, field)
            if value != getattr(defaults, field) and not getattr(self, capability):
                shown = (field, SHOWN_AS.get(field, value)) if isinstance(value, (bool, int)) else field
                raise ParameterError(f"{{}} is for backends that {what} ({', '.join(names_with(capability))}); "
                                     f"the {self.name} backend does not", shown)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ParameterError("{} must be a whole number of at least 1", ("steps", steps))
        if self.time_steps and steps < network.bias_steps:
            raise ParameterError(f"{{}}: T must cover the network's K = {network.bias_steps} steps, the steps over "
                                 "which its input is presented", ("steps", steps))
        if options.device not in self.devices:
            raise ParameterError(f"{{}}: the {self.name} backend runs on {' or '.join(self.devices)}",
                                 ("device", options.device))
        missing = self.missing()
        if missing:
            raise QffsError(f"the {self.name} backend cannot run here: it needs " + "; and ".join(missing))
        problems = loihi_problems(network) if self.loihi_ranges and loihi_check else []
        if problems:
            raise QffsFormatError(f"the network leaves Loihi 2's ranges, which the {self.name} backend computes in "
                                  "({} runs it anyway): " + "; ".join(problems), ("loihi_check", False))

    def missing(self) -> List[str]:
        """What it needs that this machine lacks, one phrase each (none where it can run here)."""
        return [f"the package {package}, which is not installed here" for package in self.packages
                if not installed(package)]

    def plan(self, network: Network, options: RunOptions, samples: int, steps: int) -> RunOptions:
        """The options it will run `samples` samples of the network for T = `steps` with here: its own choices
        filled in, each a QffsNote where it differs from what was asked (what it will hold logged at INFO),
        ParameterError where the run cannot fit. Called once per run, before the first sample."""
        return options

    @abstractmethod
    def simulate(self, network: Network, x: np.ndarray, steps: int, mode: str,
                 options: RunOptions = RunOptions()) -> Simulation:
        """Run N samples of dataset values x (N, *input shape), floats in [0, 1], for `steps` synchronous steps
        (a pipelined run takes steps + D) in `mode`, one of `modes`."""
