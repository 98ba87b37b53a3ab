"""Graph networks (net.h5 version 2): shortcuts, fan-out and several synapses per layer, in the torch simulator
and the file (on the Lava backends: test_lava_equivalence.py)."""


import h5py
import numpy as np
import pytest
import torch
from random_nets import random_graph, random_inputs
from spikes import final_counts, settle_steps

from qffs_lava.backends.pytorch import TorchNetwork
from qffs_lava.errors import QffsFormatError
import qffs_lava as qffs
from qffs_lava.ir.layers import ConvSynapse, MaxPoolLayer, NeuronLayer
from qffs_lava.ir.netfile import read_net, write_net

SEEDS = range(12)


@pytest.mark.parametrize("mode", ["sync", "pipelined"])
@pytest.mark.parametrize("seed", SEEDS)
def test_random_graphs_settle_at_the_qann_per_neuron(seed, mode):
    rng = np.random.default_rng(seed)
    network = random_graph(rng)
    x = random_inputs(rng, network, 12)
    net = TorchNetwork(network)
    result = net.simulate(x, settle_steps(network, mode), mode, record_spikes=True)
    expected = net.qann(x, all_layers=True)[1:]
    for i, (got, want) in enumerate(zip(final_counts(result), expected), start=1):
        assert torch.equal(got.reshape(want.shape), want), f"seed {seed}, layer {i}"
    assert any(int(s.abs().sum()) for s in result.spikes[:-1])  # not silent


def test_the_random_graphs_cover_shortcuts_fan_out_and_pools_in_branches():
    seen = set()
    for seed in SEEDS:
        network = random_graph(np.random.default_rng(seed))
        consumers = network.consumers()
        for i, layer in enumerate(network.layers):
            if len(consumers[i]) > 1:
                seen.add("fan-out")
            if isinstance(layer, MaxPoolLayer) and any(isinstance(network.layers[c], NeuronLayer)
                                                       for c in consumers[i]):
                seen.add("max pool inside a branch")
            if isinstance(layer, NeuronLayer) and len(layer.synapses) > 1:
                seen.add(f"{layer.kind} layer of several synapses")
                for synapse, source in zip(layer.synapses, layer.inputs):
                    if isinstance(synapse, ConvSynapse) and synapse.groups == layer.channels > 1:
                        seen.add("identity shortcut")
                    if isinstance(synapse, ConvSynapse) and synapse.stride == (2, 2):
                        seen.add("strided projection shortcut")
                    if network.depths[source] < max(network.depths[j] for j in layer.inputs):
                        seen.add("a shortcut that arrives earlier")
    assert seen == {"fan-out", "max pool inside a branch", "conv layer of several synapses",
                    "dense layer of several synapses", "identity shortcut", "strided projection shortcut",
                    "a shortcut that arrives earlier"}


def test_graph_results_do_not_depend_on_batch_size():
    rng = np.random.default_rng(3)
    network = random_graph(rng)
    x = random_inputs(rng, network, 23)
    for mode in ("sync", "pipelined"):
        a = qffs.run(network, x, None, 12, "torch", mode, batch_size=23, progress=False)
        b = qffs.run(network, x, None, 12, "torch", mode, batch_size=5, progress=False)
        assert a.output_counts == b.output_counts and a.agreement_by_step == b.agreement_by_step


def test_pipeline_depth_is_the_longest_path_and_sets_the_bias_window():
    network = random_graph(np.random.default_rng(0))
    for i, layer in enumerate(network.layers[1:], start=1):
        sources = max(network.depths[j] for j in layer.inputs)
        assert network.depths[i] == sources + isinstance(layer, NeuronLayer)
    i, _ = network.neuron_layers[-1]
    assert network.pipeline_depth == network.depths[i]
    assert network.bias_start(i, "pipelined") == network.depths[i] + 1 and network.bias_start(i, "sync") == 1


def test_a_graph_survives_the_file_round_trip(tmp_path):
    network = random_graph(np.random.default_rng(4))
    write_net(tmp_path / "g.h5", network)
    again = read_net(tmp_path / "g.h5")
    assert again.meta["version"] == 2 and not again.is_chain()
    assert [layer.inputs for layer in again.layers] == [layer.inputs for layer in network.layers]
    for (_, a), (_, b) in zip(network.neuron_layers, again.neuron_layers):
        assert [type(s) for s in a.synapses] == [type(s) for s in b.synapses]
        for s, t in zip(a.synapses, b.synapses):
            np.testing.assert_array_equal(s.weight, t.weight)
    x = random_inputs(np.random.default_rng(0), network, 5)
    assert torch.equal(TorchNetwork(network).simulate(x, 10, "pipelined").output_counts,
                       TorchNetwork(again).simulate(x, 10, "pipelined").output_counts)


def first_residual_layer(network):
    return next(i for i, layer in network.neuron_layers
                if len(layer.synapses) > 1 and isinstance(layer.synapses[0], ConvSynapse))


def edit(path, change):
    with h5py.File(path, "r+") as f:
        change(f)


def replace(f, key, value):
    del f[key]
    f[key] = value


@pytest.mark.parametrize("change, message", [
    (lambda f, i: replace(f, f"layer/{i}/inputs", np.array([i, 0, 0][:len(f[f'layer/{i}/inputs'])])),
     r"key 'inputs': expected earlier layers in 0\.\.{i1} \(the layers are in topological order, so a cycle"),
    (lambda f, i: replace(f, f"layer/{i}/inputs", np.full(len(f[f"layer/{i}/inputs"]), 99)),
     r"key 'inputs': expected earlier layers in 0\.\.{i1}.*got \[99"),
    (lambda f, i: replace(f, f"layer/{i}/inputs", np.full(len(f[f"layer/{i}/inputs"]), -1)),
     r"got \[-1"),
    (lambda f, i: replace(f, f"layer/{i}/inputs", np.array([1])), r"key 'inputs': expected one per synapse"),
    (lambda f, i: replace(f, f"layer/{i}/synapse/1/weight", f[f"layer/{i}/synapse/1/weight"][()][:1]),
     r"layer {i} \(conv\) key 'shape': synapse 1 \(conv\) maps its input .* but the layer's shape is"),
    (lambda f, i: replace(f, f"layer/{i}/synapse/1/type", np.array([b"pool"])),
     r"layer {i} \(conv\) synapse 1 key 'type': expected one of dense, conv, got 'pool'"),
    (lambda f, i: f[f"layer/{i}/synapse"].move("1", "7"),
     r"layer {i} \(conv\) key 'synapse': expected subgroups 1\.\.2"),
    (lambda f, i: f["meta"].attrs.__setitem__("version", 1), r"key 'inputs': expected no 'inputs' in a version 1"),
])
def test_the_validator_names_the_layer_and_key_of_a_broken_graph(tmp_path, change, message):
    network = random_graph(np.random.default_rng(4))
    i = first_residual_layer(network)
    path = tmp_path / "g.h5"
    write_net(path, network)
    edit(path, lambda f: change(f, i))
    with pytest.raises(QffsFormatError, match=message.format(i=i, i1=i - 1)):
        read_net(path)


def test_a_pool_or_flatten_with_two_inputs_is_refused(tmp_path):
    network = random_graph(np.random.default_rng(0))
    pool = next(i for i, layer in enumerate(network.layers) if isinstance(layer, MaxPoolLayer))
    path = tmp_path / "g.h5"
    write_net(path, network)
    edit(path, lambda f: replace(f, f"layer/{pool}/inputs", np.array([1, 2])))
    with pytest.raises(QffsFormatError, match=rf"layer {pool} \(maxpool\) key 'inputs': expected exactly one"):
        read_net(path)
