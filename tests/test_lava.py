"""The Lava backend's runtimes: clean after many runs and after errors, fitted to the memory free, and written
for the lava-nc installed. Its spikes against the torch simulator's: test_lava_equivalence.py."""

import numpy as np
import pytest
from processes import Snapshot

from qffs_lava.ann.datasets import load_dataset
import qffs_lava.backends.lava.runner as runner
from qffs_lava.backends import simulate
from qffs_lava.ir.netfile import read_net


@pytest.mark.slow  # every case of test_lava_equivalence.py checks one run leaves nothing
def test_twenty_lava_runs_leak_no_processes_or_shared_memory(digits_net, own_tmpdir):
    network = read_net(digits_net)
    x, _ = load_dataset("digits", "test")
    before = Snapshot()
    for _ in range(20):
        simulate(network, x[:2], 4, "lava")
    assert not before.left()


def test_an_error_after_the_runtime_ran_leaves_nothing(digits_net, monkeypatch, own_tmpdir):
    """Reading the recordings fails in the worker, its Lava runtime still up: the error is raised here, and no
    process, segment or scratch folder of the run is left."""
    def broken(*args):
        raise ValueError("failure while reading the recordings")

    monkeypatch.setattr(runner, "from_lava_layout", broken)  # the forked workers inherit it
    network = read_net(digits_net)
    before = Snapshot()
    with pytest.raises(ValueError, match="failure while reading"):
        simulate(network, np.zeros((2, 1, 8, 8)), 4, "lava")
    assert not before.left()


def test_workers_are_fitted_to_the_memory_free(digits_net, monkeypatch):
    """The Lava backend estimates a worker's processes and memory before starting (footprint.py): fewer workers
    than the default where they would not fit, saying so; asked-for workers that do not fit, or not even one,
    refused in one line."""
    from qffs_lava.backends import BACKENDS, RunOptions
    from qffs_lava.backends.lava import footprint
    from qffs_lava.errors import ParameterError
    from qffs_lava.messages import QffsNote

    network, lava = read_net(digits_net), BACKENDS["lava"]
    one = footprint.worker_footprint(network, 32, 128, 8, False)
    assert one.processes == 11  # the worker, source, runtime service, memory manager, 3 x (synapse, neurons), recorder
    monkeypatch.setattr(footprint, "available_memory", lambda: (int(2.5 * one.bytes), 2**40))
    monkeypatch.setattr("qffs_lava.distributed.usable_cores", lambda: 4)
    with pytest.warns(QffsNote, match="^2 Lava workers instead of 4: each Lava worker holds a runtime of 11 processes"):
        plan = lava.plan(network, RunOptions(), 450, 8)
    assert plan.workers == 2 and plan.lava_batch == 32
    with pytest.raises(ParameterError, match="do not fit: each Lava worker holds .* enough for 2"):
        lava.plan(network, RunOptions(workers=3), 450, 8)
    monkeypatch.setattr(footprint, "available_memory", lambda: (one.bytes // 2, 2**40))
    with pytest.raises(ParameterError, match="not even one Lava runtime fits here"):
        lava.plan(network, RunOptions(), 450, 8)
    monkeypatch.setattr(footprint, "available_memory", lambda: (2**40, one.shared_memory // 2))  # /dev/shm
    with pytest.raises(ParameterError, match="not even one Lava runtime fits here"):
        lava.plan(network, RunOptions(), 450, 8)


def test_the_lava_adapter_was_written_for_the_versions_installed():
    """What the backend takes from lava-nc beyond its API is in backends/lava/adapter.py, checked for these
    versions: another lava-nc or Python fails here, pointing at the file to read again."""
    import importlib.metadata
    import sys

    from qffs_lava.backends.lava.adapter import WRITTEN_FOR

    installed = {"lava-nc": importlib.metadata.version("lava-nc"), "python": "%d.%d" % sys.version_info[:2]}
    assert installed == WRITTEN_FOR, "read qffs_lava/backends/lava/adapter.py again for these versions"
