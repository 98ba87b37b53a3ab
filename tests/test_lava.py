"""The Lava backends against the torch simulator, spike for spike, and clean runtimes."""


import numpy as np
import pytest
import torch
from processes import Snapshot
from random_nets import random_inputs, random_network

from qffs_lava.ann.datasets import load_dataset
import qffs_lava.backends.lava.runner as runner
from qffs_lava.backends import simulate
from qffs_lava.backends.pytorch import TorchNetwork
import qffs_lava as qffs
from qffs_lava.ir.netfile import read_net

STEPS = 10


def assert_same_spike_trains(network, x, steps=STEPS, lava_batch=1):
    """Every layer's spikes from Lava (fixed_pt and floating_pt, `lava_batch` samples side by side) == the torch
    simulator's pipelined mode."""
    torch_run = TorchNetwork(network).simulate(x, steps, "pipelined", record_spikes=True)
    fixed = simulate(network, x, steps, "lava", chunk=8, record_spikes=True, lava_batch=lava_batch)
    floating = simulate(network, x, steps, "lava-float", chunk=8, record_spikes=True, lava_batch=lava_batch)
    assert len(fixed.spikes) == len(torch_run.spikes) == len(network.layers) - 1
    for i, (a, b, c) in enumerate(zip(fixed.spikes, torch_run.spikes, floating.spikes), start=1):
        assert a.shape == b.shape, f"layer {i}"
        assert torch.equal(a, b), f"layer {i}: {int((a != b).sum())} spikes differ from torch"
        assert torch.equal(a, c), f"layer {i}: fixed_pt and floating_pt differ"
    assert torch.equal(fixed.output_counts, torch_run.output_counts)
    assert any(int(s.abs().sum()) for s in fixed.spikes)  # not trivially silent
    return fixed


def test_digits_mlp_spikes_equal_torch_pipelined(digits_net):
    network = read_net(digits_net)
    x, _ = load_dataset("digits", "test")
    assert_same_spike_trains(network, x[:20])


def test_conv_net_with_max_pooling_spikes_equal_torch_pipelined(digits_lenet_net):
    network = read_net(digits_lenet_net)
    x, _ = load_dataset("digits", "test")
    result = assert_same_spike_trains(network, x[20:40], lava_batch=3)  # groups of 3: 9, 9 and 2 samples a runtime
    assert result.spikes[0].shape == (STEPS + 4, 20, 16, 8, 8)


def test_strided_grouped_conv_and_padded_pool_equal_torch(tmp_path):
    rng = np.random.default_rng(11)
    network = random_network(rng, "conv")
    assert_same_spike_trains(network, random_inputs(rng, network, 20), steps=14, lava_batch=4)


def test_qffs_run_lava_backend_matches_torch_backend(digits_net):
    network = read_net(digits_net)
    x, y = load_dataset("digits", "test")
    lava = qffs.run(network, x[:60], y[:60], 8, "lava", progress=False)
    torch_report = qffs.run(network, x[:60], y[:60], 8, "torch", progress=False)
    assert lava.mode == "pipelined"
    assert lava.output_counts == torch_report.output_counts
    assert lava.accuracy_by_step == torch_report.accuracy_by_step
    assert lava.predictions == torch_report.predictions


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
    monkeypatch.setattr("qffs_lava.backends.lava.workers.default_workers", lambda: 4)
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
