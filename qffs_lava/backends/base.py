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
from typing import Callable, ClassVar, Optional, Tuple

import numpy as np

from qffs_lava.dynamics import ALL_MECHANISMS, Mechanisms
from qffs_lava.errors import ParameterError, QffsError
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
    progress: Optional[Callable[[int], None]] = None


class Backend(ABC):
    """One way to run a net.h5. What it needs and can do are class attributes:

    name:         its name in the registry, `--backend` and reports
    summary:      one line for --help
    devices:      where it runs (`RunOptions.device`)
    lava_tag:     the Lava ProcessModel tag it selects (None: not Lava)
    packages:     the optional packages it needs beyond the core install
    modes:        the time modes it runs (ir.network.MODES); () for a closed form without time steps
    ablations:    whether it simulates without some of QFFS's mechanisms (`RunOptions.mechanisms`)
    costs:        whether it counts spikes and synaptic operations (`RunOptions.count_costs`)
    loihi_ranges: whether it computes in Loihi 2's fixed-point ranges, so that a network outside them
                  is refused unless asked (values then saturate)
    worker_processes: whether it runs in worker processes (`RunOptions.workers`)
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    devices: ClassVar[Tuple[str, ...]] = ("cpu",)
    lava_tag: ClassVar[Optional[str]] = None
    packages: ClassVar[Tuple[str, ...]] = ()
    modes: ClassVar[Tuple[str, ...]] = MODES
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

    def check(self, options: RunOptions) -> None:
        """Raise QffsError naming what it lacks here to run with these options: a device, a package."""
        if options.device not in self.devices:
            raise ParameterError(f"{{}}: the {self.name} backend runs on {' or '.join(self.devices)}",
                                 ("device", options.device))
        for package in self.packages:
            try:
                importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                raise QffsError(f"the {self.name} backend needs the package {package}, which is not installed "
                                "here") from None

    def plan(self, network: Network, options: RunOptions, samples: int, steps: int,
             verbose: bool = False) -> RunOptions:
        """The options it will run `samples` samples of the network for T = `steps` with here: its own choices
        filled in, each said where it differs from what was asked (on stderr; with `verbose`, what it will hold
        too), ParameterError where the run cannot fit. Called once per run, before the first sample."""
        return options

    @abstractmethod
    def simulate(self, network: Network, x: np.ndarray, steps: int, mode: str,
                 options: RunOptions = RunOptions()) -> Simulation:
        """Run N samples of dataset values x (N, *input shape), floats in [0, 1], for `steps` synchronous steps
        (a pipelined run takes steps + D) in `mode`, one of `modes`."""
