"""Version 1 files written before graph networks read and run exactly as they did (tests/data/v1/README.md)."""

from pathlib import Path

import numpy as np
import pytest

from qffs_lava.ann.datasets import load_dataset
from qffs_lava.ann.modelfile import load_model_file
from qffs_lava.backends.pytorch import TorchNetwork
from qffs_lava.convert.network import convert
from qffs_lava.ir.netfile import read_net, write_net

V1 = Path(__file__).parent / "data" / "v1"
NETS = ("digits_mlp", "digits_lenet", "mnist_lenet")


@pytest.fixture(scope="module")
def recorded():
    return dict(np.load(V1 / "v1_outputs.npz"))


def inputs(name, data_dir):
    if name.startswith("mnist") and not (data_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file():
        pytest.skip(f"MNIST is not under {data_dir}: run `make data`")
    return load_dataset(name.split("_")[0], "test", data_dir)[0][:100]


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.e2e) if name == "mnist_lenet" else name
                                  for name in NETS])  # MNIST's test split: seconds to read
def test_version_1_nets_give_the_same_qann_and_torch_outputs(name, recorded, data_dir):
    network = read_net(V1 / f"v1_{name}.h5")
    assert network.meta["version"] == 1 and network.is_chain()
    net, x = TorchNetwork(network), inputs(name, data_dir)
    for i, counts in enumerate(net.qann(x, all_layers=True)):
        want = recorded[f"{name}/qann/{i}"]
        np.testing.assert_array_equal(counts.numpy().reshape(want.shape), want, err_msg=f"layer {i}")
    for mode in ("sync", "pipelined"):
        np.testing.assert_array_equal(net.simulate(x, 12, mode).output_counts.numpy(), recorded[f"{name}/{mode}"])


@pytest.mark.parametrize("name", NETS)
def test_the_recorded_lava_outputs_are_the_recorded_pipelined_ones(name, recorded):
    """What the Lava backends computed on the first 20 images is what the torch simulator did, pipelined: today's
    torch outputs are checked against the recording above, and today's Lava outputs against today's torch, on these
    files too, in test_lava_equivalence.py."""
    for backend in ("lava", "lava-float"):
        np.testing.assert_array_equal(recorded[f"{name}/{backend}"], recorded[f"{name}/pipelined"][:, :20])


@pytest.mark.parametrize("name", ["digits_mlp", "digits_lenet"])
def test_version_1_model_files_export_the_same_integers(name, tmp_path):
    content, model = load_model_file(V1 / f"v1_{name}.pt")
    new, old = convert(content, model), read_net(V1 / f"v1_{name}.h5")
    assert [layer.describe() for layer in new.layers] == [layer.describe() for layer in old.layers]
    for (_, a), (_, b) in zip(new.neuron_layers, old.neuron_layers):
        np.testing.assert_array_equal(a.synapses[0].weight, b.synapses[0].weight)
        np.testing.assert_array_equal(a.bias, b.bias)
        np.testing.assert_array_equal(a.neurons.threshold, b.neurons.threshold)
        np.testing.assert_array_equal(a.neurons.v_init, b.neurons.v_init)
    write_net(tmp_path / "again.h5", new)
    assert read_net(tmp_path / "again.h5").meta["version"] == 1  # a chain is still written as version 1
