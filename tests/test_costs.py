"""Cost accounting (docs/costs.md): fan-out and MACs, spikes and SOPs counted independently, and the reports.
The same figures from Lava's recordings: test_lava_equivalence.py."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from random_nets import random_graph, random_inputs, random_network

from qffs_lava.ann.datasets import load_dataset
from qffs_lava.backends.pytorch import TorchNetwork
from qffs_lava.cli import inspect_main, run_main
from qffs_lava.costs import cost_report, fan_outs, macs
from qffs_lava.errors import QffsError
import qffs_lava as qffs
from qffs_lava.ir.layers import ConvSynapse, FlattenLayer, InputLayer, NeuronLayer, Neurons
from qffs_lava.ir.netfile import read_net
from qffs_lava.ir.network import Network


def one_conv_network(padding: int) -> Network:
    neurons = Neurons(np.full(2, 4), np.full(2, 2), 3, 3)
    conv = ConvSynapse(np.full((2, 1, 3, 3), 2), padding=(padding, padding))
    size = 4 if padding else 2
    return Network([InputLayer((1, 4, 4), 4.0), NeuronLayer((2, size, size), (conv,), np.zeros(2, np.int64), neurons)])


def test_fan_out_counts_the_connections_of_each_input_position():
    """A 3x3 conv with padding 1 on 4x4, two output channels: a corner pixel reaches 2 x 4 neurons, an edge
    pixel 2 x 6, an inner one 2 x 9. The MACs are the connections, each once: 2 x (4 x 4 + 8 x 6 + 4 x 9) =
    200; the padding adds none. Without padding, Cout*Ho*Wo*Cin*kH*kW."""
    network = one_conv_network(padding=1)
    fan_out = fan_outs(network)[1][0][0]
    assert fan_out[0, 0] == 8 and fan_out[0, 1] == 12 and fan_out[1, 1] == 18
    assert macs(network).tolist() == [0, 200]
    assert macs(one_conv_network(padding=0)).tolist() == [0, 2 * 2 * 2 * 1 * 9]


def test_macs_of_random_networks_count_each_connection_once():
    """Counted forwards: a conv of an all-one input with all-one weights sums each output's real inputs."""
    rng = np.random.default_rng(4)
    for network in (random_network(rng, "conv"), random_graph(rng)):
        expected = np.zeros(len(network.layers), dtype=np.int64)
        for i, layer in network.neuron_layers:
            for synapse, j in zip(layer.synapses, layer.inputs):
                ones = torch.ones((1,) + network.shapes[j], dtype=torch.float64)
                weight = torch.ones(synapse.weight.shape, dtype=torch.float64)
                reached = F.conv2d(ones, weight, None, synapse.stride, synapse.padding, synapse.dilation,
                                   synapse.groups) if isinstance(synapse, ConvSynapse) else ones @ weight.T
                expected[i] += int(reached.sum())
        assert macs(network).tolist() == expected.tolist()


def recount(network: Network, x_int: torch.Tensor, spikes, steps: int):
    """Spikes and SOPs from a recording, the other way round: SOPs of a synapse = sum over its outputs of a
    conv (or dense) of the source's nonzero indicator with all-one weights."""
    layers = len(network.layers)
    positive, negative, sops = (np.zeros((layers, steps), np.int64) for _ in range(3))
    for t in range(steps):
        values = [x_int.double() if t < network.bias_steps else torch.zeros_like(x_int.double())]
        values += [s[t].double() for s in spikes]
        for k, layer in enumerate(network.layers):
            if not isinstance(layer, FlattenLayer):
                positive[k, t], negative[k, t] = int((values[k] > 0).sum()), int((values[k] < 0).sum())
        for i, layer in network.neuron_layers:
            for synapse, j in zip(layer.synapses, layer.inputs):
                active = (values[j] != 0).double()
                ones = torch.ones(synapse.weight.shape, dtype=torch.float64)
                if isinstance(synapse, ConvSynapse):
                    reached = F.conv2d(active, ones, None, synapse.stride, synapse.padding, synapse.dilation,
                                       synapse.groups)
                else:
                    reached = active @ ones.T
                sops[i, t] += int(reached.sum())
    return positive, negative, sops


@pytest.mark.parametrize("mode", ["sync", "pipelined"])
def test_torch_counts_equal_an_independent_recount(mode):
    rng = np.random.default_rng(21)
    for network in (random_graph(rng), random_network(rng, "conv")):
        net = TorchNetwork(network)
        x = random_inputs(rng, network, 12)
        result = net.simulate(x, 9, mode, record_spikes=True, count_costs=True)
        positive, negative, sops = recount(network, net.encode(x), result.spikes, result.steps)
        assert np.array_equal(result.costs.positive, positive)
        assert np.array_equal(result.costs.negative, negative)
        assert np.array_equal(result.costs.sops, sops)
        assert result.costs.samples == 12 and sops.sum() > 0 and positive[1:].sum() > 0


def test_report_is_per_sample_cumulative_and_pipelined_runs_count_to_t_plus_d(digits_net):
    network = read_net(digits_net)
    x, _ = load_dataset("digits", "test")
    net = TorchNetwork(network)
    for mode, offset in (("sync", 0), ("pipelined", network.pipeline_depth)):
        costs = net.simulate(x[:10], 6, mode, count_costs=True).costs
        report = cost_report(network, costs, mode)
        total = report["total"]
        assert len(total["sops"]) == 6
        assert total["sops"][-1] == pytest.approx(costs.sops.sum() / 10)
        assert total["sops"][0] == pytest.approx(costs.sops[:, :offset + 1].sum() / 10)
        spikes = costs.positive[1:, :offset + 3].sum() + costs.negative[1:, :offset + 3].sum()
        assert total["spikes"][2] == pytest.approx(spikes / 10)
        assert total["macs"] == int(macs(network).sum())
        assert total["sops_per_mac"][-1] == pytest.approx(total["sops"][-1] / total["macs"])
        assert all(b >= a for a, b in zip(total["sops"], total["sops"][1:]))


def test_qffs_run_stats_prints_and_writes_the_costs(digits_net, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert run_main([str(digits_net), "--dataset", "digits", "--samples", "30", "--steps", "6", "--stats",
                     "--quiet", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "SOPs/MACs" in text and "cost per sample up to t = 6" in text
    costs = json.loads(out.read_text())["costs"]
    assert [layer["index"] for layer in costs["layers"]] == list(range(len(read_net(digits_net).layers)))
    assert costs["samples"] == 30 and len(costs["total"]["sops"]) == 6
    with pytest.raises(QffsError, match=r"^stats=True is for backends that count spikes .*; the qann backend does "
                                        r"not$"):
        qffs.run(read_net(digits_net), load_dataset("digits", "test")[0][:5], None, 6, "qann", stats=True)


def test_qffs_inspect_lists_neurons_synapses_and_weight_memory(digits_lenet_net, capsys):
    assert inspect_main([str(digits_lenet_net)]) == 0
    text = capsys.readouterr().out
    network = read_net(digits_lenet_net)
    total = next(line for line in text.splitlines() if line.split()[:1] == ["total"])
    neurons = sum(int(np.prod(network.shapes[i])) for i, _ in network.neuron_layers)
    assert total.split()[1:3] == [f"{neurons:,}", f"{int(macs(network).sum()):,}"]
