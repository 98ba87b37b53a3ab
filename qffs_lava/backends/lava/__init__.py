"""The Lava backends: the network built as Lava Processes (procs/) and run by Lava's runtime (runner.py).

    lava        Loihi2SimCfg with the fixed_pt ProcessModels: bit-accurate integers, on the CPU
    lava-float  Loihi2SimCfg with the floating_pt ProcessModels
    loihi2      Loihi2HwCfg on a Loihi 2 system (needs lava-loihi)

Lava is imported when a network is first run, not when this module is.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings

from qffs_lava.backends.base import Backend, RunOptions
from qffs_lava.errors import ParameterError
from qffs_lava.messages import QffsNote

log = logging.getLogger(__name__)

#: Bytes of a value in the ProcessModels of each tag (footprint.py).
VALUE_BYTES = {"fixed_pt": 4, "floating_pt": 8}

#: Samples side by side in one Lava network where not chosen: the fastest B of bench/lava_batch.py on the MNIST
#: LeNet (2026-12-01: 66 samples/s, 14 times B = 1; 64 gave 65, 16 gave 53).
DEFAULT_BATCH = 32


class LavaBackend(Backend):
    """Lava's CPU simulator with the fixed_pt ProcessModels: the network as Loihi 2 computes it."""

    name = "lava"
    summary = "Lava's CPU simulator, bit-accurate fixed_pt models (pipelined)"
    lava_tag = "fixed_pt"
    modes = ("pipelined",)
    costs = True
    loihi_ranges = True
    worker_processes = True

    def run_config(self):
        """The Lava run configuration a runtime of this backend compiles with."""
        from lava.magma.core.run_configs import Loihi2SimCfg

        return Loihi2SimCfg(select_tag=self.lava_tag)

    def lava_batch(self, network, samples: int, options: RunOptions) -> int:
        """The samples side by side in one network: options.lava_batch, or DEFAULT_BATCH (at most `samples`).

        The batched network computes its conv currents exactly where lava-nc's Conv, in the per-sample
        network, wraps them at 24 bits: where a current could reach 2^23 (a network outside Loihi 2's
        ranges) only the per-sample network is what Loihi 2 computes. Then an asked-for batch is refused
        and the default falls back to 1, with a QffsNote."""
        from qffs_lava.ir.loihi import STATE_LIMIT, step_current_bound

        batch = options.lava_batch or min(DEFAULT_BATCH, samples)
        bound = step_current_bound(network) if batch > 1 else 0
        if bound >= STATE_LIMIT:
            why = (f"a synaptic current could reach {bound}, beyond the 24-bit messages the per-sample network wraps "
                   "at 2^23")
            if options.lava_batch:
                raise ParameterError(f"{{}}: {why}; only the per-sample network (1) computes as Loihi 2 would",
                                     ("lava_batch", options.lava_batch))
            warnings.warn(f"running one sample per Lava network: {why}", QffsNote)
            return 1
        return batch

    def plan(self, network, options, samples, steps):
        """The batch (`lava_batch`) and the workers: as many as asked, or one per core and chunk, but no more than
        the memory and /dev/shm free now hold (footprint.py), logged at INFO; fewer where the workers were not
        asked for, with a QffsNote, and a refusal where they were, or where not even one fits."""
        from qffs_lava.backends.lava.footprint import available_memory, gib, worker_footprint
        from qffs_lava.distributed import usable_cores

        batch = self.lava_batch(network, samples, options)
        chunk = min(-(-options.chunk // batch) * batch, samples)
        footprint = worker_footprint(network, batch, chunk, steps,
                                     options.record_spikes or options.count_costs or options.activity,
                                     VALUE_BYTES[self.lava_tag])
        memory, shm = available_memory()
        fit = min(memory // footprint.bytes, shm // max(footprint.shared_memory, 1))
        wanted = options.workers or min(usable_cores(), -(-samples // chunk))
        each = (f"each Lava worker holds a runtime of {footprint.processes} processes ({batch} samples side by "
                f"side), about {gib(footprint.bytes)} by estimate, and {gib(memory)} of memory ({gib(shm)} of "
                "/dev/shm) are free")
        if fit < 1:
            raise ParameterError(f"not even one Lava runtime fits here: {each}; give a smaller {{}} (its processes "
                                 "stay, its channels and weights shrink), or free memory", ("lava_batch", batch))
        if wanted > fit:
            if options.workers:
                raise ParameterError(f"{{}} do not fit: {each}, enough for {fit}", ("workers", options.workers))
            warnings.warn(f"{fit} Lava worker{'s' if fit > 1 else ''} instead of {wanted}: {each}", QffsNote)
            wanted = fit
        else:
            log.info(f"Lava: {wanted} worker{'s' if wanted > 1 else ''}; {each}")
        return dataclasses.replace(options, lava_batch=batch, workers=wanted)

    def simulate(self, network, x, steps, mode, options=RunOptions()):
        from qffs_lava.backends.lava.runner import run_lava

        return run_lava(network, x, steps, self, options)


class LavaFloatBackend(LavaBackend):
    """Lava's CPU simulator with the floating_pt ProcessModels."""

    name = "lava-float"
    summary = "Lava's CPU simulator, floating_pt models (pipelined)"
    lava_tag = "floating_pt"


class Loihi2Backend(LavaBackend):
    """A Loihi 2 system through lava-loihi (Loihi2HwCfg)."""

    name = "loihi2"
    summary = "Loihi 2 hardware, Loihi2HwCfg (needs lava-loihi from INRC and chip models that do not exist yet)"
    packages = ("lava-loihi",)

    def missing(self):
        """lava-loihi where it is not installed, and (always, today) the chip models: the QFFS neuron, the read-out
        and the event max pool have CPU ProcessModels only."""
        from qffs_lava.backends.lava.adapter import loihi_installed

        missing = [] if loihi_installed() else [
            "lava-loihi (Intel's Loihi 2 extension of Lava, for INRC members) and a Loihi 2 system, which this "
            "machine does not have"]
        return missing + ["Loihi 2 ProcessModels (microcode) for the QFFS neuron, the read-out and the event max "
                          "pool, which do not exist yet: they have CPU models only (docs/lava.md), so installing "
                          "lava-loihi is not enough. The lava backend runs the same network bit-accurately on the "
                          "CPU"]

    def lava_batch(self, network, samples: int, options: RunOptions) -> int:
        """1: Loihi 2 runs the per-sample network."""
        if options.lava_batch not in (None, 1):
            raise ParameterError("{}: the loihi2 backend runs the per-sample network, one sample at a time",
                                 ("lava_batch", options.lava_batch))
        return 1

    def run_config(self):
        from lava.magma.core.run_configs import Loihi2HwCfg

        return Loihi2HwCfg(select_tag=self.lava_tag)
