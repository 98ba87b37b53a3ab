"""The read-out output (--out-bits float; net.h5 version 3): its dynamics, its file format, its Loihi 2 range, its
costs and reports, and that every backend predicts what the integer QANN predicts once the layers before settle."""

import argparse
import dataclasses

import json

import h5py
import numpy as np
import pytest
import torch
from commands import cli
from random_nets import random_graph, random_inputs, random_network
from spikes import settle_steps

from qffs_lava.ann.datasets import load_dataset
from qffs_lava.backends import simulate
from qffs_lava.backends.pytorch import TorchNetwork
from qffs_lava.dynamics import readout_init, readout_step
from qffs_lava.errors import QffsFormatError
from qffs_lava.ir.layers import DenseSynapse, InputLayer, NeuronLayer, Readout
from qffs_lava.ir.loihi import STATE_LIMIT, loihi_problems
from qffs_lava.ir.netfile import read_net, write_net
from qffs_lava.ir.network import Network
from qffs_lava.reports import layer_table, run_table
from qffs_lava.results import RunResult


def with_readout(network: Network) -> Network:
    """The network with its output layer made a read-out (its weights and bias kept)."""
    last = network.layers[-1]
    layer = dataclasses.replace(last, neurons=Readout(last.neurons.bias_steps))
    return Network(network.layers[:-1] + [layer], dict(network.meta))


def random_readout_nets():
    rng = np.random.default_rng(35)
    for kind in ("dense", "conv"):
        yield kind, with_readout(random_network(rng, kind)), rng
    yield "graph", with_readout(random_graph(rng)), rng  # an output of two synapses


def test_the_readout_integrates_and_never_fires_in_numpy_and_torch():
    currents = np.array([[3, -5], [4, 1], [-10, 2]])
    for convert in (np.asarray, torch.as_tensor):
        state = readout_init(convert(np.zeros(2, dtype=np.int64)))
        for t, current in enumerate(currents, start=1):
            spikes, state = readout_step(convert(current), state)
            assert not bool((spikes != 0).any())
            assert np.array_equal(np.asarray(state.v), currents[:t].sum(0))
    spikes, state = readout_step(np.array([2**23]), readout_init(np.array([2**23 - 10])))
    assert state.v[0] == 2**23 - 1  # the 24-bit register saturates


@pytest.mark.parametrize("kind,network,rng", list(random_readout_nets()), ids=lambda v: v if isinstance(v, str)
                         else "")
def test_every_step_the_torch_modes_agree_and_settle_at_the_qann_pre_activation(kind, network, rng):
    """v(t) = sum_j W_j . c_j(t) + n_b(t) b (dynamics.readout_step): in a chain, synchronous and pipelined runs give
    the same potential at every synchronous step (in a graph a shortcut of fewer hops arrives earlier when
    pipelined, so only the settled values agree), and once the layers before settle it is the QANN's integer
    pre-activation, so the predictions are the QANN's."""
    x = random_inputs(rng, network, 30)
    net = TorchNetwork(network)
    steps = settle_steps(network)
    sync, pipelined = net.simulate(x, steps, "sync"), net.simulate(x, steps, "pipelined")
    assert torch.equal(sync.output_counts[-1], pipelined.output_counts[-1])
    assert torch.equal(sync.output_counts, pipelined.synchronous_counts()) == network.is_chain()
    qann = net.qann(x)
    pre = {}
    net.qann(x, preactivations=pre)
    assert torch.equal(pre[network.output_index].reshape(qann.shape).to(torch.int64), qann)
    assert torch.equal(sync.output_counts[-1], qann)
    assert torch.equal(sync.output_counts[-1].argmax(1), qann.argmax(1))
    assert len(set(qann.argmax(1).tolist())) > 1  # not trivially one class


def test_net_h5_version_3_round_trips_and_older_versions_refuse_a_readout(tmp_path):
    _, network, _ = next(random_readout_nets())
    write_net(tmp_path / "r.h5", network)
    back = read_net(tmp_path / "r.h5")
    assert back.meta["version"] == 3 and back.output_kind == "read-out"
    assert back.layers[-1].neurons == network.layers[-1].neurons
    assert all(np.array_equal(a.weight, b.weight) for a, b in zip(back.layers[-1].synapses,
                                                                     network.layers[-1].synapses))
    with h5py.File(tmp_path / "r.h5", "r+") as f:
        assert set(f["layer"][str(network.output_index)]["neuron"].keys()) == {"type", "biasSteps"}
        f["meta"].attrs["version"] = 2
    with pytest.raises(QffsFormatError, match="neuron.*'QFFS' \\(a version 2 file\\).*'READOUT'"):
        read_net(tmp_path / "r.h5")


def test_only_the_output_may_be_a_readout():
    rng = np.random.default_rng(1)
    network = random_network(rng, "dense")
    hidden = dataclasses.replace(network.layers[1], neurons=Readout(network.bias_steps))
    with pytest.raises(QffsFormatError, match="layer 1 .*only the output layer"):
        Network([network.layers[0], hidden] + network.layers[2:])


def test_a_readout_whose_potential_can_leave_24_bits_is_refused():
    """The potential is a running sum, never reset by a spike: the check bounds it over the whole run, every
    source at its count bound (here the input's K x_int) and the bias over all K steps."""
    fan_in, steps = 700, 3
    weight = np.full((2, fan_in), 254)
    weight[1] = -2
    layer = NeuronLayer((2,), (DenseSynapse(weight),), np.array([100, -4]), Readout(steps))
    over = Network([InputLayer((fan_in,), 16.0), layer])
    worst = 254 * fan_in * steps * 16 + steps * 100
    assert worst >= STATE_LIMIT
    assert loihi_problems(over) == [f"layer 1: worst-case read-out potential |v| over the run {worst} is not below "
                                    "2^23 (24-bit membrane)"]
    with pytest.raises(QffsFormatError, match="read-out potential"):
        simulate(over, np.zeros((1, fan_in)), 10, "lava")
    fits = Network([InputLayer((fan_in,), 1.0), layer])  # x_int at most 1: 254 * 700 * 3 + 300
    assert not loihi_problems(fits)


def test_costs_count_sops_into_the_readout_and_no_output_spikes():
    _, network, rng = next(random_readout_nets())
    x = random_inputs(rng, network, 10)
    costs = TorchNetwork(network).simulate(x, 10, "sync", count_costs=True).costs
    out = network.output_index
    assert costs.sops[out].sum() > 0
    assert costs.positive[out].sum() == 0 and costs.negative[out].sum() == 0


def test_reports_say_the_output_is_a_readout():
    _, network, _ = next(random_readout_nets())
    assert "none (read-out)" in layer_table(network) and "output: read-out" in layer_table(network)
    fields = dict(backend="torch", mode="sync", steps=1, samples=1, device="cpu", pipeline_depth=3, bias_steps=3,
                  ablated=[], qann_accuracy=None, accuracy=None, seconds=0.1, output_counts=[[1, 2]],
                  predictions=[1], labels=None, qann_predictions=[1], accuracy_by_step=[None],
                  agreement_by_step=[1.0], equal_counts_by_step=[1.0], equal_from_step=1)
    result = RunResult(**fields, output="read-out")
    assert "output: read-out" in run_table(result) and "potentials == QANN" in run_table(result)
    assert RunResult.from_dict(result.to_dict()).output == "read-out"
    assert RunResult(**fields).output == "spiking"  # a report of an earlier version reads as a spiking one


@pytest.mark.e2e
def test_a_digits_lenet_trained_with_a_float_output_predicts_alike_on_qann_and_torch(digits_lenet_float_net,
                                                                                    tmp_path):
    """The issue's network: trained with --out-bits float, exported (a read-out, version 3); qann, torch sync and
    torch pipelined give one set of predictions on the whole digits test split, that of the integer QANN (the Lava
    backends: test_lava_equivalence.py)."""
    network = read_net(digits_lenet_float_net)
    assert network.meta["version"] == 3 and network.output_kind == "read-out"
    assert network.meta["qann_agreement"] >= 0.95 and network.meta["int_qann_accuracy"] >= 0.8
    x, y = load_dataset("digits", "test")
    steps = settle_steps(network)
    qann = simulate(network, x, steps, "qann").output_counts[0].argmax(1)
    for mode in ("sync", "pipelined"):
        run = simulate(network, x, steps, "torch", mode)
        assert torch.equal(run.synchronous_counts()[-1].argmax(1), qann), mode
    assert float((qann == torch.as_tensor(y)).double().mean()) == pytest.approx(network.meta["int_qann_accuracy"])
    result = cli("qffs-run", digits_lenet_float_net, "--dataset", "digits", "--steps", steps, "--json",
                 tmp_path / "run.json", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "output: read-out" in result.stdout and "potentials == QANN" in result.stdout
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["output"] == "read-out" and report["predictions"] == qann.tolist()
    assert report["equal_from_step"] is not None


@pytest.mark.lava
def test_a_lava_user_reads_the_potential_with_a_monitor(digits_net):
    """QffsNetwork exposes the read-out Process; a Monitor on its Var v sees the potential the torch pipelined run
    computes, step by step."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor

    from qffs_lava.backends.lava.procs.network import QffsNetwork

    network = with_readout(read_net(digits_net))
    x = load_dataset("digits", "test")[0][:1]
    steps = network.bias_steps + network.pipeline_depth + 4
    net = QffsNetwork(network, reset_interval=steps)
    assert net.readout is not None and "QffsReadout" in str(net)
    source = RingBuffer(data=net.source_data(x))
    source.s_out.connect(net.inp)
    monitor = Monitor()
    monitor.probe(net.readout.v, steps)
    try:
        source.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        seen = monitor.get_data()[net.readout.name]["v"]
        final = net.readout.v.get()
    finally:
        source.stop()
    expected = TorchNetwork(network).simulate(x, steps - network.pipeline_depth, "pipelined").output_counts[:, 0]
    assert np.array_equal(np.asarray(seen).reshape(steps, -1), expected.numpy())
    assert np.array_equal(final.reshape(-1), expected[-1].numpy())


def float_output_model():
    """A digits MLP with a full-precision output, its hidden quantizer initialized by one training batch."""
    from qffs_lava.ann.archs import make_arch
    from qffs_lava.ann.models import build_model, set_quantized

    arch = make_arch("mlp", (1, 8, 8), 10, out_bits="float")
    model = build_model(arch)
    set_quantized(model, True)
    x = torch.as_tensor(load_dataset("digits", "test")[0][:64], dtype=torch.float32)
    model.train()
    model(x)
    return arch, model.eval(), x


def test_a_float_output_has_no_quantizer_and_converts_to_a_readout_on_one_scale():
    """The output act of bits "float" is the identity (logits); its integers take one scale lambda for every
    channel, so the integer model's logits, the potential over lambda, are the float QANN's up to rounding."""
    from qffs_lava.convert.integer import IntegerModel

    arch, model, x = float_output_model()
    assert model.output_act.quantizer is None and model.output_act.bits == "float"
    assert [n["bits"] for n in arch["nodes"] if n["op"] == "act"][-1] == "float"
    integer = IntegerModel(model, arch, 16, {"mean": [0.0], "std": [1.0]})
    with torch.no_grad():
        network, tensors = integer.network()
        logits, exact = model(x).double(), integer(x.double())
    assert isinstance(network.layers[-1].neurons, Readout) and tensors[network.output_index].params is None
    scale = integer.readout_scale
    assert torch.all(scale == scale[0]) and scale[0] > 0  # one scale for every channel
    assert network.layers[-1].synapses[0].weight.min() == -256 or network.layers[-1].synapses[0].weight.max() == 254
    assert float((logits.argmax(1) == exact.argmax(1)).double().mean()) >= 0.9
    potential = TorchNetwork(network).qann(x).double()
    assert torch.allclose(potential / scale[0], exact)
    assert not loihi_problems(network)


def test_float_is_for_the_output_only_and_everywhere_it_is_asked_for():
    from torch import nn

    from qffs_lava.ann.models import check_arch
    from qffs_lava.ann.torch_import import from_torch
    from qffs_lava.ann.train import TrainConfig
    from qffs_lava.cli import bits_list, output_bits
    from qffs_lava.errors import ParameterError

    arch, _, _ = float_output_model()
    hidden = [dict(n, bits="float") if n["op"] == "act" else n for n in arch["nodes"]]
    with pytest.raises(ValueError, match="output act only"):
        check_arch({**arch, "nodes": hidden})
    module = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    imported, model = from_torch(module, (1, 8, 8), out_bits="float")
    assert imported["nodes"][-1]["bits"] == "float" and model.output_act.quantizer is None
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(model(x), module(x))  # float mode: the logits themselves
    assert output_bits("float") == "float" and output_bits("3") == 3
    assert bits_list("2,2,float") == [2, 2, "float"]
    with pytest.raises(argparse.ArgumentTypeError):
        bits_list("float,2")
    with pytest.raises(ParameterError, match="or 'float'"):
        TrainConfig("digits", "mlp", out_bits="half")
    with pytest.raises(ParameterError, match="'float' for the last"):
        TrainConfig("digits", "mlp", layer_bits=["float", 3])
    TrainConfig("digits", "mlp", layer_bits=[2, 2, "float"])
