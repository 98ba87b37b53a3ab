"""The paper's ablations: QFFS without negative spikes, the count bound or the pre-charge (torch simulator,
qffs-run --ablate), and average in place of max pooling (qffs-train --pool avg)."""

import json

import numpy as np
import pytest
import torch
from qffs_export.exporter import export

from qffs_lava.ann.datasets import load_dataset
from qffs_lava.ann.train import train
from qffs_lava.backends.pytorch import TorchNetwork
from qffs_lava.cli import run_main
from qffs_lava.dynamics import (
    ALL_MECHANISMS,
    UNBOUNDED,
    NeuronParams,
    neuron_init,
    neuron_step,
    without,
)
from qffs_lava.errors import QffsError
import qffs_lava as qffs
from qffs_lava.ir.layers import MaxPoolLayer
from qffs_lava.ir.netfile import read_net


def test_each_ablation_changes_exactly_its_mechanism():
    params = NeuronParams(threshold=np.array([4]), z_max=np.array([3]), v_init=np.array([2]))
    assert without("count-bound").params(params).z_max == UNBOUNDED
    assert without("precharge").params(params).v_init[0] == 0
    assert ALL_MECHANISMS.params(params) == params
    currents = [9, -12, 30, 0, 0, 0]  # a spike, then v < 0 with z > 0, then more than z_max spikes worth
    for negative in (True, False):
        state, spikes = neuron_init(np.zeros(1, dtype=np.int64), params), []
        for current in currents:
            s, state = neuron_step(np.array([current]), state, params, negative_spikes=negative)
            spikes.append(int(s[0]))
        assert (-1 in spikes) == negative
        assert state.z[0] <= 3


def test_the_ablated_simulations_differ_from_qffs_where_their_mechanism_acts(digits_net):
    network = read_net(digits_net)
    x, _ = load_dataset("digits", "test")
    sim = TorchNetwork(network, torch.float64)
    full = sim.simulate(x, 12, record_spikes=True)
    assert any(bool((s < 0).any()) for s in full.spikes)  # QFFS does send negative spikes here
    no_negative = sim.simulate(x, 12, record_spikes=True, mechanisms=without("negative-spikes"))
    assert all(bool((s >= 0).all()) for s in no_negative.spikes)
    unbounded = sim.simulate(x, 12, record_spikes=True, mechanisms=without("count-bound"))
    neurons = network.neuron_layers  # (index, layer); spikes[i - 1] are layer i's

    def most_spikes(result, index):
        return int(result.spikes[index - 1].sum(0).amax())

    assert any(most_spikes(unbounded, i) > layer.neurons.z_max for i, layer in neurons)  # fires past zMax
    assert all(most_spikes(full, i) <= layer.neurons.z_max for i, layer in neurons)


def test_qffs_run_ablate_reports_it_and_refuses_other_backends(digits_net, tmp_path, capsys):
    assert run_main([str(digits_net), "--dataset", "digits", "--steps", "12", "--quiet", "--ablate", "precharge",
                     "--json", str(tmp_path / "r.json")]) == 0
    assert "without: precharge (an ablation)" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ablated"] == ["precharge"] and report["equal_from_step"] is None  # rounds down, never the QANN
    with pytest.raises(QffsError, match=r"^ablate is for backends that simulate without some of QFFS's "
                                        r"mechanisms \(torch\); the lava backend does not$"):
        qffs.run(read_net(digits_net), load_dataset("digits", "test")[0][:4], None, 8, "lava",
                 ablate=["precharge"])


@pytest.mark.e2e
def test_average_pooling_lenet_trains_exports_and_settles_at_its_qann(tmp_path):
    content = train("digits", "lenet", out=tmp_path / "avg.pt", pool="avg", float_epochs=2, qat_epochs=2,
                    hardware_epochs=1, progress=False)
    assert [n["op"] for n in content["arch"]["nodes"]].count("avgpool") == 2
    network = export(tmp_path / "avg.pt", tmp_path / "avg.h5")
    assert not any(isinstance(layer, MaxPoolLayer) for layer in network.layers)  # folded into the next synapse
    report = qffs.run(network, load_dataset("digits", "test")[0], None, 16, progress=False)
    assert report.equal_from_step is not None and report.equal_from_step <= 16
    with pytest.raises(QffsError, match="resnet8 has no max pooling to replace"):
        train("digits", "resnet8", pool="avg", float_epochs=1, qat_epochs=1, progress=False)
