"""QffsNetwork, the net.h5 as one Lava Process: in a user's own graph, in the example, and in parallel workers."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from processes import Snapshot
from random_nets import random_graph, random_inputs

from qffs_lava.ann.datasets import load_dataset
from qffs_lava.backends.lava.layout import from_lava_layout
from qffs_lava.backends import simulate
from qffs_lava.backends.lava.adapter import import_lava
from qffs_lava.backends.lava.runner import LavaRun
from qffs_lava.backends.pytorch import TorchNetwork
from qffs_lava.ir.layers import MaxPoolLayer, NeuronLayer
from qffs_lava.ir.netfile import read_net, write_net

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lava_network.py"
STEPS = 8


def example():
    import_lava()
    spec = importlib.util.spec_from_file_location("lava_network_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def residual_net(tmp_path_factory):
    rng = np.random.default_rng(5)
    network = random_graph(rng, layers_wanted=8)
    assert not network.is_chain()
    path = tmp_path_factory.mktemp("residual") / "residual.h5"
    write_net(path, network)
    return path, random_inputs(rng, network, 6)


def output_spikes_by_sample(net, spikes, samples):
    """The sink's (*out shape, N * interval) spikes as (interval, N, classes) in net.h5's order."""
    steps = np.moveaxis(np.asarray(spikes), -1, 0).reshape((samples, net.reset_interval) + net.out.shape)
    chw = from_lava_layout(steps, net.network.shapes[-1], net.flat_order[-1])
    return torch.from_numpy(chw.reshape(samples, net.reset_interval, -1).transpose(1, 0, 2).astype(np.int64))


def assert_example_equals_pipelined(net_path, x):
    """The example's output spikes are the torch simulator's, pipelined (which the runner's are:
    test_lava_equivalence.py)."""
    net, spikes = example().run_network(net_path, x, STEPS)
    got = output_spikes_by_sample(net, spikes, len(x))
    expected = TorchNetwork(read_net(net_path)).simulate(x, STEPS, "pipelined")
    assert torch.equal(got.cumsum(dim=0), expected.output_counts)
    assert int(got.abs().sum()) > 0
    counts = net.output_counts(spikes).reshape(len(x), -1)
    assert torch.equal(torch.from_numpy(counts), expected.output_counts[-1])


def test_the_example_gives_the_pipelined_output_spikes_on_a_chain(digits_net):
    x, _ = load_dataset("digits", "test")
    assert_example_equals_pipelined(digits_net, x[:6].numpy())


def test_the_example_gives_the_pipelined_output_spikes_on_a_residual_network(residual_net):
    path, x = residual_net
    assert_example_equals_pipelined(path, np.asarray(x))


def test_the_examples_command_line_prints_the_network_and_its_accuracy(digits_net, capsys, data_dir):
    """Its main(), as `python examples/lava_network.py NET --samples 4 --steps 6` calls it (in this process: the
    Lava run in a fresh Python is what qffs-run's command tests do)."""
    example().main([str(digits_net), "--samples", "4", "--steps", "6", "--data-dir", str(data_dir)])
    out = capsys.readouterr().out
    assert "QffsNeuron" in out and "accuracy" in out and "on 4 digits test images, 6 steps each" in out


def test_a_user_graph_with_its_own_source_sink_and_probe(digits_lenet_net):
    """Own RingBuffer source, own sink on `out`, and a Monitor on a hidden layer's spikes: the torch simulator's
    pipelined spikes, which are the runner's (test_lava_equivalence.py)."""
    import_lava()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.monitor.process import Monitor

    from qffs_lava.backends.lava.procs.network import QffsNetwork

    network = read_net(digits_lenet_net)
    x, _ = load_dataset("digits", "test")
    x = x[:3].numpy()
    expected = TorchNetwork(network).simulate(x, STEPS, "pipelined", record_spikes=True)
    net = QffsNetwork(net_config=digits_lenet_net, reset_interval=STEPS + network.pipeline_depth)
    source = Source(data=net.source_data(x))
    steps = source.data.shape[-1]
    sink = Sink(shape=net.out.shape, buffer=steps)
    monitor = Monitor()
    hidden = 2  # net.h5 layer 2, the first max pool
    source.s_out.connect(net.inp)
    net.out.connect(sink.a_in)
    monitor.probe(net.layer_out[hidden], steps)
    try:
        sink.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        out = sink.data.get()
        probed = monitor.get_data()[net.layer_out[hidden].process.name][net.layer_out[hidden].name]
    finally:
        sink.stop()
    got = output_spikes_by_sample(net, out, len(x))
    assert torch.equal(got.cumsum(dim=0), expected.output_counts)
    probed = probed.reshape((len(x), net.reset_interval) + net.layer_out[hidden].shape)  # (N, t, W, H, C)
    probed = from_lava_layout(probed, network.shapes[hidden], net.flat_order[hidden])[:, :, 0].swapaxes(0, 1)
    assert torch.equal(torch.from_numpy(probed.astype(np.int8)), expected.spikes[hidden - 1])
    assert int(np.abs(probed).sum()) > 0


def test_an_error_in_a_worker_is_raised_and_every_worker_stopped(residual_net, monkeypatch, own_tmpdir):
    path, x = residual_net

    def broken(self, progress):
        raise ValueError("broken on purpose")

    monkeypatch.setattr(LavaRun, "run", broken)  # the forked workers inherit it
    before = Snapshot()
    with pytest.raises(ValueError, match="broken on purpose"):
        simulate(read_net(path), x, STEPS, "lava", chunk=2, workers=2)
    assert not before.left()


def test_the_process_checks_its_parameters_and_prints_the_lava_view(digits_lenet_net):
    import_lava()
    from qffs_lava.backends.lava.procs.network import QffsNetwork

    network = read_net(digits_lenet_net)
    D, K = network.pipeline_depth, network.bias_steps
    with pytest.raises(ValueError, match=f"give at least {D + K}"):
        QffsNetwork(net_config=digits_lenet_net, reset_interval=D + K - 1)
    with pytest.raises(ValueError, match="input_shape"):
        QffsNetwork(net_config=digits_lenet_net, input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="reset_offset"):
        QffsNetwork(net_config=digits_lenet_net, reset_offset=-1)
    with pytest.raises(FileNotFoundError, match="qffs-export"):
        QffsNetwork(net_config="missing.h5")
    net = QffsNetwork(net_config=digits_lenet_net, input_shape=(8, 8, 1))
    assert len(net) == sum(1 for layer in network.layers if isinstance(layer, (NeuronLayer, MaxPoolLayer)))
    view = str(net)
    for text in ("Conv -> QffsNeuron", "EventMaxPool", "OutPort.reshape", "Dense -> QffsNeuron", "8x8x16",
                 "24 (signed spikes)"):
        assert text in view
    first = QffsNetwork(net_config=digits_lenet_net, num_layers=2)
    assert len(first) == 1 and first.out.shape == net.layers[0].s_out.shape


def test_reset_offset_delays_every_sample(digits_net):
    """With reset_offset = 3 and three silent steps first, the output is the same, three steps later."""
    import_lava()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    from qffs_lava.backends.lava.procs.network import QffsNetwork

    x, _ = load_dataset("digits", "test")
    x = x[:2].numpy()
    outputs = []
    for offset in (0, 3):
        network = read_net(digits_net)
        net = QffsNetwork(net_config=network, reset_interval=STEPS + network.pipeline_depth, reset_offset=offset)
        data = net.source_data(x)
        data = np.concatenate([np.zeros(data.shape[:-1] + (offset,), np.int32), data], axis=-1)
        source, sink = Source(data=data), Sink(shape=net.out.shape, buffer=data.shape[-1])
        source.s_out.connect(net.inp)
        net.out.connect(sink.a_in)
        try:
            sink.run(condition=RunSteps(num_steps=data.shape[-1]), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
            outputs.append(sink.data.get()[..., offset:])
        finally:
            sink.stop()
    assert np.array_equal(outputs[0], outputs[1]) and np.abs(outputs[0]).sum() > 0


def test_qffs_inspect_prints_the_lava_view(digits_lenet_net, capsys):
    from qffs_lava.cli import inspect_main

    assert inspect_main([str(digits_lenet_net), "--lava"]) == 0
    out = capsys.readouterr().out
    assert "Lava view (QffsNetwork)" in out and "EventMaxPool" in out and "shape (W, H, C)" in out
