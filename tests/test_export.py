"""qffs-export: hand-computed integers, netx compatibility, fidelity, Loihi ranges, and bad input."""

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from qffs_export.exporter import export
from spikes import qann_forward
from tiny import TINY_ARCH, tiny_model

from qffs_lava.ann.modelfile import MODEL_FORMAT, load_model_file
from qffs_lava.ann.models import arch_from_v1, build_model, set_quantized
from qffs_lava.backends.pytorch import TorchNetwork
from qffs_lava.convert.network import convert
from qffs_lava.errors import ModelFileError, QffsError
from qffs_lava.ir.layers import DenseSynapse, InputLayer, NeuronLayer
from qffs_lava.ir.loihi import loihi_problems
from qffs_lava.ir.netfile import read_net


def test_tiny_model_integers_match_hand_computation():
    network = convert(*tiny_model())
    first, second = network.layers[2], network.layers[3]
    assert network.bias_steps == 3
    # layer 1 sees x_int = 16 x for K = 3 steps: A = W / 16, rows scaled by mu = 2032 and 2048
    np.testing.assert_array_equal(first.synapses[0].weight, [[128, -64, 0, 254], [-256, 128, 64, 0]])
    np.testing.assert_array_equal(first.neurons.threshold, [6096, 6144])  # 2 mu * K * 0.5
    np.testing.assert_array_equal(first.neurons.v_init, [3048, 3072])
    np.testing.assert_array_equal(first.bias, [406, -819])  # 2 mu * K * B / K
    assert first.neurons.z_max == 3 and first.neurons.bias_steps == 3
    # layer 2: A = W * 0.5, mu = 254 and 127 / 0.375
    np.testing.assert_array_equal(second.synapses[0].weight, [[254, -126], [84, 254]])
    np.testing.assert_array_equal(second.neurons.threshold, [127, 169])  # 2 mu * 0.25
    np.testing.assert_array_equal(second.neurons.v_init, [63, 84])
    np.testing.assert_array_equal(second.bias, [0, 11])  # 2 mu * 0.05 / 3
    assert second.neurons.z_max == 7


def test_tiny_model_integer_qann_equals_float_qann_levels():
    content, model = tiny_model()
    network = convert(content, model)
    grid = torch.tensor([[a, b, c, d] for a in (0, 0.25, 1) for b in (0, 0.5, 1)
                         for c in (0, 0.75) for d in (0, 0.5, 1)]).reshape(-1, 1, 2, 2)
    with torch.no_grad():
        levels = model(grid) / model.output_act.quantizer.step
    torch.testing.assert_close(qann_forward(network, grid).double(), levels.double().round())


@pytest.mark.e2e
def test_written_file_reads_back_and_stock_netx_reads_it(tmp_path, digits_model_file):
    from lava.lib.dl.netx.utils import NetDict

    net_path = tmp_path / "digits.h5"
    network = export(digits_model_file, net_path)
    again = read_net(net_path)
    assert [type(layer) for layer in again.layers] == [type(layer) for layer in network.layers]
    for (_, a), (_, b) in zip(network.neuron_layers, again.neuron_layers):
        np.testing.assert_array_equal(a.synapses[0].weight, b.synapses[0].weight)
        np.testing.assert_array_equal(a.neurons.threshold, b.neurons.threshold)
    net = NetDict(str(net_path))
    layer = net["layer"]
    assert [layer[str(i)]["type"] for i in range(len(layer))] == ["input", "flatten", "dense", "dense", "dense"]
    dense = layer["2"]
    assert dense["weight"].shape == (256, 64) and dense["weight"].dtype.kind == "i"
    assert np.all(dense["weight"] % 2 == 0) and dense["weight"].min() >= -256 and dense["weight"].max() <= 254
    assert dense["neuron"]["type"] == "QFFS"
    np.testing.assert_array_equal(dense["neuron"]["vThMant"], network.layers[2].neurons.threshold)
    assert again.meta["format"] == "qffs" and again.meta["dataset"] == "digits"
    assert again.meta["K"] == 3 and again.meta["bits"] == [2, 2, 3]


def test_digits_fidelity_on_the_full_test_split(tmp_path, digits_model_file):
    network = export(digits_model_file, tmp_path / "d.h5")
    meta = network.meta
    assert meta["fidelity_samples"] == 450
    assert meta["qann_forward"] == "hardware-exact"  # qffs-train's default ends with the hardware-exact phase
    assert meta["qann_agreement"] == 1.0 and meta["int_qann_accuracy"] == meta["qann_accuracy"]
    assert set(meta["preactivation_max_difference"]) == {"act1", "act2", "out"}
    assert max(meta["preactivation_max_difference"].values()) < 1e-5
    assert not any(meta["count_mismatch"].values())
    assert not loihi_problems(network)


def test_lenet_with_max_pooling_exports_on_digits_images(digits_lenet_net):
    network = read_net(digits_lenet_net)
    kinds = [layer.describe() for layer in network.layers]
    assert kinds == ["input", "conv 5x5", "maxpool 2x2", "conv 5x5", "maxpool 2x2", "flatten", "dense", "dense"]
    assert network.shapes[1] == (16, 8, 8) and network.shapes[4] == (32, 2, 2)
    assert network.is_chain() and network.meta["version"] == 1
    assert network.meta["qann_agreement"] >= 0.97  # briefly trained; the measured figure is in the README


def test_avgpool_and_batchnorm_are_folded_into_synaptic_layers():
    arch = arch_from_v1({"name": "pooled", "input_shape": [1, 4, 4], "num_classes": 3, "layers": [
        {"type": "conv", "in_channels": 1, "out_channels": 2, "kernel_size": 3, "stride": 1, "padding": 1, "groups": 1},
        {"type": "batchnorm", "num_features": 2},
        {"type": "act", "bits": 2},
        {"type": "avgpool", "kernel_size": 2, "stride": 2},
        {"type": "flatten"},
        {"type": "linear", "in_features": 8, "out_features": 3},
        {"type": "act", "bits": 3},
    ]})
    torch.manual_seed(1)
    model = build_model(arch)
    set_quantized(model, True)
    model.train()
    model(torch.rand(64, 1, 4, 4))  # initialise steps and batchnorm statistics
    model.eval()
    content = {"arch": arch, "quantized": True, "bits": {"layers": [2, 3], "weight": None},
               "input_norm": {"mean": [0.0], "std": [1.0]}, "dataset": "digits", "input_levels": 16}
    network = convert(content, model)
    assert [layer.describe() for layer in network.layers] == ["input", "conv 3x3", "flatten", "dense"]
    assert network.layers[3].synapses[0].weight.shape == (3, 32)  # acts on the unpooled 2x4x4 map
    x = torch.floor(torch.rand(200, 1, 4, 4) * 16) / 16
    with torch.no_grad():
        expected = model(x).argmax(1)
    agreement = float((qann_forward(network, x).argmax(1) == expected).double().mean())
    assert agreement >= 0.95


def test_unsupported_layers_are_refused_by_name(tmp_path):
    content, model = tiny_model()
    bad_arch = {**TINY_ARCH, "nodes": TINY_ARCH["nodes"][:2] + [{"name": "norm", "op": "layernorm", "inputs": ["1"]}]
                + TINY_ARCH["nodes"][2:]}
    path = tmp_path / "bad.pt"
    torch.save({**content, "format": MODEL_FORMAT, "version": 2, "arch": bad_arch,
                "state_dict": model.state_dict()}, path)
    with pytest.raises(ModelFileError, match="node 'norm': unsupported op 'layernorm'"):
        load_model_file(path)


def run_export(*args):
    """qffs-export as its console script runs it (its main, in this process: commands.cli)."""
    from commands import cli

    return cli("qffs-export", *args)


@pytest.mark.e2e
def test_cli_prints_the_table_and_fidelity(tmp_path, digits_model_file):
    result = run_export(str(digits_model_file), str(tmp_path / "n.h5"))
    assert result.returncode == 0, result.stderr
    assert "threshold" in result.stdout and "max |v| / 2^23" in result.stdout
    assert "top-1 agreement" in result.stdout
    inspect = subprocess.run([sys.executable, "-c", "import sys; from qffs_lava.cli import inspect_main; "
                              "sys.exit(inspect_main())", str(tmp_path / "n.h5")], capture_output=True, text=True)
    assert inspect.returncode == 0 and "Loihi 2 ranges: ok" in inspect.stdout
    assert result.stdout.splitlines()[:8] == inspect.stdout.splitlines()[:8]


def test_cli_bad_model_files_exit_2_and_leave_no_net(tmp_path, digits_model_file):
    net = tmp_path / "n.h5"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(digits_model_file.read_bytes()[:2000])
    content = torch.load(digits_model_file, weights_only=True)
    torch.save({**content, "version": 7}, tmp_path / "v7.pt")
    torch.save({**content, "format": "something-else"}, tmp_path / "fmt.pt")
    cases = [(tmp_path / "missing.pt", "does not exist"), (truncated, "cannot read model file"),
             (tmp_path / "v7.pt", "version 7"), (tmp_path / "fmt.pt", "not a qffs model file")]
    for path, message in cases:
        result = run_export(str(path), str(net))
        assert result.returncode == 2 and message in result.stderr, (path, result.stderr)
        assert "Traceback" not in result.stderr
        assert not net.exists()
    result = run_export(str(digits_model_file), str(tmp_path / "no" / "dir" / "n.h5"))
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_a_refused_export_keeps_the_old_net_file(tmp_path, digits_model_file):
    net = tmp_path / "n.h5"
    net.write_bytes(b"old contents")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(digits_model_file.read_bytes()[:2000])
    assert run_export(str(truncated), str(net)).returncode == 2
    assert net.read_bytes() == b"old contents"


def test_crafted_pickle_payload_never_runs(tmp_path):
    target = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(target), "w"))

    evil = tmp_path / "evil.pt"
    torch.save({"format": MODEL_FORMAT, "version": 1, "arch": Payload()}, evil)
    result = run_export(str(evil), str(tmp_path / "n.h5"))
    assert result.returncode == 2 and "arbitrary unpickling" in result.stderr
    assert not target.exists() and not (tmp_path / "n.h5").exists()


def test_dense_layer_shapes_are_checked():
    from qffs_lava.ir.layers import Neurons
    from qffs_lava.ir.network import Network

    neurons = Neurons(np.array([3, 3]), np.array([1, 1]), 3, 3)
    with pytest.raises(ValueError, match=r"layer 1 \(dense\) key 'weight': dense weight \(2, 4\) does not map the "
                                         r"input \(5,\)"):
        Network([InputLayer((5,), 16.0), NeuronLayer((2,), (DenseSynapse(np.zeros((2, 4), np.int64)),),
                                                     np.zeros(2, np.int64), neurons)])


# Graphs: residual networks and the export rule ---------------------------------------------------------


def briefly_trained(arch, x, steps=8, seed=0):
    """A model of `arch` fitted to a few labelled inputs, float then quantized, in eval mode, with its content."""
    import torch.nn.functional as F

    torch.manual_seed(seed)
    model = build_model(arch)
    y = torch.arange(len(x)) % arch["num_classes"]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for quantized in (False, True):
        set_quantized(model, quantized)
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    content = {"arch": arch, "quantized": True, "input_levels": 255, "dataset": "cifar10",
               "bits": {"layers": [n["bits"] for n in arch["nodes"] if n["op"] == "act"], "weight": None},
               "input_norm": {"mean": [0.0] * arch["input_shape"][0], "std": [1.0] * arch["input_shape"][0]}}
    return content, model.eval()


@pytest.mark.e2e
def test_resnet20_exports_within_loihi_ranges_and_its_snn_equals_its_qann():
    from qffs_lava.ann.archs import make_arch

    x = torch.floor(torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 256) / 255
    content, model = briefly_trained(make_arch("resnet20", (3, 32, 32), 10), x)
    network = convert(content, model)
    assert loihi_problems(network) == []
    residual = [layer for _, layer in network.neuron_layers if len(layer.synapses) == 2]
    assert len(residual) == 9  # every block adds its shortcut into the second conv's neurons
    identity = [s for layer in residual for s in layer.synapses[1:] if s.groups == layer.channels]
    projection = [s for layer in residual for s in layer.synapses[1:] if s.stride == (2, 2)]
    assert len(identity) == 7 and len(projection) == 2
    assert all(s.kernel_size == (1, 1) for s in identity + projection)
    net = TorchNetwork(network)
    with torch.no_grad():
        float_levels = model(x) / model.output_act.quantizer.step
    qann = net.qann(x)
    assert qann.any(), "the outputs are all zero: train longer"
    assert float((float_levels.round().long() == qann).double().mean()) >= 0.6
    assert float((float_levels.argmax(1) == qann.argmax(1)).double().mean()) >= 0.75
    result = net.simulate(x[:4], 16, "sync", record_spikes=True)
    for i, (spikes, want) in enumerate(zip(result.spikes, net.qann(x[:4], all_layers=True)[1:]), start=1):
        assert torch.equal(spikes.to(torch.int64).sum(0).reshape(want.shape), want), f"layer {i}"


def graph_arch(nodes, input_shape=(1, 4, 4)):
    return {"name": "g", "input_shape": list(input_shape), "num_classes": 2, "nodes": nodes}


def conv(name, source, cin=1, cout=2, kernel=3, stride=1):
    return {"name": name, "op": "conv", "inputs": [source], "in_channels": cin, "out_channels": cout,
            "kernel_size": kernel, "stride": stride, "padding": kernel // 2, "groups": 1}


HEAD = [{"name": "flat", "op": "flatten", "inputs": ["a"]},
        {"name": "fc", "op": "linear", "inputs": ["flat"], "in_features": 32, "out_features": 2},
        {"name": "out", "op": "act", "inputs": ["fc"], "bits": 3}]


@pytest.mark.parametrize("nodes, message", [
    ([conv("c", "input"), {"name": "bn", "op": "batchnorm", "inputs": ["c"], "num_features": 2},
      {"name": "p", "op": "maxpool", "inputs": ["bn"], "kernel_size": 1, "stride": 1, "padding": 0},
      {"name": "a", "op": "act", "inputs": ["p"], "bits": 2}],
     "maxpool 'p' reads batchnorm 'bn', which is not a spiking output"),
    ([conv("c", "input"), conv("c2", "c", cin=2), {"name": "a", "op": "act", "inputs": ["c2"], "bits": 2}],
     "conv 'c' (on the path of 'c2' into act 'a') cannot be converted"),
    ([conv("c", "input"), conv("d", "input"), {"name": "s", "op": "add", "inputs": ["c", "d"]},
      {"name": "bn", "op": "batchnorm", "inputs": ["s"], "num_features": 2},
      {"name": "a", "op": "act", "inputs": ["bn"], "bits": 2}],
     "batchnorm 'bn' (into act 'a') cannot be converted: a path into an act is"),
    ([conv("c", "input"), {"name": "p", "op": "avgpool", "inputs": ["c"], "kernel_size": 1, "stride": 1},
      {"name": "p2", "op": "avgpool", "inputs": ["p"], "kernel_size": 1, "stride": 1},
      {"name": "a", "op": "act", "inputs": ["p2"], "bits": 2}],
     "avgpool 'p2' (into act 'a') cannot be converted: a path into an act is"),
    ([conv("c", "input"), {"name": "bn", "op": "batchnorm", "inputs": ["c"], "num_features": 2},
      {"name": "p", "op": "avgpool", "inputs": ["bn"], "kernel_size": 1, "stride": 1},
      {"name": "bn2", "op": "batchnorm", "inputs": ["p"], "num_features": 2},
      {"name": "a", "op": "act", "inputs": ["bn2"], "bits": 2}],
     "batchnorm 'bn2' (into act 'a') cannot be converted: a path into an act is"),
])
def test_the_export_rule_refuses_other_graphs_naming_the_node(nodes, message):
    from qffs_lava.convert.plan import plan_layers

    with pytest.raises(QffsError, match=re.escape(message)):
        plan_layers(graph_arch(nodes + HEAD))


def test_a_graph_maps_to_layers_with_shortcuts_and_shared_flattens():
    from qffs_lava.convert.plan import plan_layers

    nodes = [conv("c1", "input"), {"name": "a1", "op": "act", "inputs": ["c1"], "bits": 2},
             conv("c2", "a1", cin=2), {"name": "s", "op": "add", "inputs": ["c2", "a1", "input_proj"]},
             {"name": "a", "op": "act", "inputs": ["s"], "bits": 2}]
    nodes.insert(2, conv("input_proj", "input"))
    nodes += [{"name": "gap", "op": "global_avgpool", "inputs": ["a"]},
              {"name": "fc", "op": "linear", "inputs": ["gap"], "in_features": 2, "out_features": 2},
              {"name": "fc2", "op": "linear", "inputs": ["flat"], "in_features": 32, "out_features": 2},
              {"name": "flat", "op": "flatten", "inputs": ["a"]},
              {"name": "sum", "op": "add", "inputs": ["fc", "fc2"]},
              {"name": "out", "op": "act", "inputs": ["sum"], "bits": 3}]
    nodes[-4], nodes[-3] = nodes[-3], nodes[-4]  # flatten before the linear that reads it
    planned = plan_layers(graph_arch(nodes))
    assert [(p.name, p.sources) for p in planned] == [
        ("input", ()), ("a1", ("input",)), ("a", ("a1", "a1", "input")), ("flat", ("a",)), ("out", ("flat", "flat"))]
    assert [p.synapse for p in planned[2].paths] == ["c2", None, "input_proj"]  # None: the identity
    assert planned[4].paths[0].pool == "gap" and planned[4].paths[0].flat
