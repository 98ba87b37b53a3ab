"""Each sample's exact latency (qffs_lava/latency.py): settled_at, decided_at, steps="auto", the costs of a run that
stops silent samples, and the per-class report, against independent readings of what the simulator recorded."""

import json
import warnings

import numpy as np
import pytest
import torch
from commands import assert_refused, cli
from random_nets import random_graph, random_inputs, random_network
from spikes import last_spike_by_reading

import qffs_lava as qffs
from qffs_lava.ann.datasets import load_dataset
from qffs_lava.backends.pytorch import TorchNetwork
from qffs_lava.errors import ParameterError
from qffs_lava.ir.netfile import write_net
from qffs_lava.latency import NOT_SETTLED, auto_bound, decided_at, quiet_from, settling, spike_bound, summary
from qffs_lava.messages import QffsNote
from qffs_lava.results import RunResult


def nets():
    """(name, network, inputs, labels): a chain (conv, pools, strided grouped conv, flatten, dense) and a residual
    graph (shortcuts, fan-out, layers of several synapses); inputs drawn as the exactness tests draw them."""
    rng = np.random.default_rng(5)
    chain = random_network(rng, "conv")
    graph = random_graph(rng, layers_wanted=8)
    assert chain.is_chain() and not graph.is_chain()
    return [(name, net, random_inputs(rng, net, 40), torch.as_tensor(rng.integers(0, net.num_classes, 40)))
            for name, net in (("chain", chain), ("graph", graph))]


NETS = nets()


@pytest.mark.parametrize("mode", ["sync", "pipelined"])
@pytest.mark.parametrize("name,network,x,y", NETS, ids=[n[0] for n in NETS])
def test_settled_at_is_the_last_spike_in_the_recorded_spike_trains(name, network, x, y, mode):
    """qffs.run's settled_at equals the last step any layer spiked in the torch simulator's recorded spikes (a
    pipelined run's Lava step less D, 0 where at or before D), and nothing changes after it: a run three times as
    long has the same last spikes, and the counts it ends with are the QANN's."""
    steps = auto_bound(network, mode)
    offset = network.pipeline_depth if mode == "pipelined" else 0
    result = qffs.run(network, x, y, steps, mode=mode, progress=False)
    recorded = TorchNetwork(network).simulate(x, 3 * steps, mode, record_spikes=True)
    last = last_spike_by_reading(recorded.spikes, len(x))
    assert result.settled_at == [max(0, t - offset) for t in last]
    assert max(last) <= spike_bound(network, mode) and max(last) < steps + offset
    assert any(t > quiet_from(network, mode) for t in last)  # some samples spike after the windows: not trivial
    assert result.output_counts == recorded.output_counts[-1].tolist()
    assert result.output_counts == TorchNetwork(network).qann(x).tolist()


@pytest.mark.parametrize("name,network,x,y", NETS, ids=[n[0] for n in NETS])
def test_decided_at_is_the_first_step_of_the_final_prediction(name, network, x, y):
    """decided_at read from the output counts step by step: the first t after the last step whose argmax (lowest
    index on ties) differs from the one at T."""
    steps = 12
    result = qffs.run(network, x, y, steps, progress=False)
    counts = TorchNetwork(network).simulate(x, steps).output_counts.numpy()
    expected = []
    for n in range(len(x)):
        predicted = [int(np.argmax(counts[t, n])) for t in range(steps)]  # numpy: the first maximum
        changed = [t + 1 for t in range(steps) if predicted[t] != predicted[-1]]
        expected.append(max(changed, default=0) + 1)
    assert result.decided_at == expected
    assert all(d <= max(s, 1) for d, s in zip(result.decided_at, result.settled_at))  # final once settled
    assert len(set(expected)) > 1


def test_decided_at_and_settling_on_small_cases():
    """The pure functions on hand-written activity: a silent step before the windows' end proves nothing; the
    first silent step after it stops the sample; a pipelined run reports s - D, at least 0."""
    predicted = torch.tensor([[0, 1, 2], [1, 1, 0], [1, 1, 2]])  # (steps, samples)
    assert decided_at(predicted).tolist() == [2, 1, 3]
    active = torch.tensor([[1, 1, 0, 1], [0, 1, 0, 1], [1, 0, 0, 1], [0, 0, 0, 1]], dtype=torch.bool)
    sync = settling(active, quiet=2)
    assert sync.settled_at.tolist() == [3, 2, 0, NOT_SETTLED]
    assert sync.stopped_at.tolist() == [4, 3, 2, NOT_SETTLED]
    piped = settling(active, quiet=2, offset=2)
    assert piped.settled_at.tolist() == [1, 0, 0, NOT_SETTLED] and piped.stopped_at.tolist() == [2, 1, 0, NOT_SETTLED]
    assert summary([3, 1, 2, 2]) == {"mean": 2.0, "p99": 3, "max": 3}
    assert summary(list(range(1, 201)))["p99"] == 198 and summary([]) is None


@pytest.mark.parametrize("mode", ["sync", "pipelined"])
@pytest.mark.parametrize("name,network,x,y", NETS, ids=[n[0] for n in NETS])
def test_steps_auto_equals_a_long_run(name, network, x, y, mode):
    """steps="auto" (batches of 7, each stopping where it settles) reports what a fixed run twice as long reports at
    its end: counts, predictions, settled_at, decided_at; T reached is the latest first silent step after the
    windows, and the table up to it is the long run's first T steps."""
    auto = qffs.run(network, x, y, "auto", mode=mode, batch_size=7, stats=True, progress=False)
    long = qffs.run(network, x, y, 2 * auto_bound(network, mode), mode=mode, stats=True, progress=False)
    T = auto.steps
    assert auto.steps_bound == auto_bound(network, mode) and long.steps_bound is None
    assert max(network.bias_steps, max(auto.settled_at) + 1) <= T <= auto.steps_bound
    if mode == "sync":
        assert T == max(network.bias_steps, max(auto.settled_at) + 1)
    for key in ("output_counts", "predictions", "settled_at", "decided_at", "confusion", "equal_from_step"):
        assert getattr(auto, key) == getattr(long, key), key
    assert auto.accuracy_by_step == long.accuracy_by_step[:T]
    assert auto.agreement_by_step == long.agreement_by_step[:T]
    assert auto.costs["total"]["spikes"] == long.costs["total"]["spikes"][:T]
    assert auto.costs["total"]["sops"][-1] == long.costs["total"]["sops"][-1]


@pytest.mark.parametrize("name,network,x,y", NETS, ids=[n[0] for n in NETS])
def test_costs_up_to_each_samples_stop_step(name, network, x, y):
    """until_settled: the mean stop step and its neuron updates, no more than the fixed run's; its spikes are the
    run's, and so are each sample's spikes up to its settle step, read from the recorded spike trains."""
    steps = 20
    result = qffs.run(network, x, y, steps, stats=True, progress=False)
    settled = result.costs["until_settled"]
    stops = [max(network.bias_steps, s + 1) for s in result.settled_at]
    neurons = sum(layer["neurons"] for layer in result.costs["layers"])
    assert settled["steps"] == pytest.approx(np.mean(stops)) and settled["steps"] < settled["steps_fixed"] == steps
    assert settled["neuron_updates"] == pytest.approx(np.mean(stops) * neurons)
    assert settled["neuron_updates"] < settled["neuron_updates_fixed"] == steps * neurons
    assert settled["spikes"] == result.costs["total"]["spikes"][-1]
    recorded = TorchNetwork(network).simulate(x, steps, record_spikes=True)
    sending = [i for i, layer in enumerate(network.layers[1:]) if layer.describe() != "flatten"]
    up_to_settle = sum(int(recorded.spikes[i][:s, n].abs().sum()) for i in sending
                       for n, s in enumerate(result.settled_at))
    assert up_to_settle / len(x) == pytest.approx(settled["spikes"])


def test_confusion_matrix_and_class_accuracy():
    name, network, x, y = NETS[0]
    result = qffs.run(network, x, y, 10, progress=False)
    confusion = np.array(result.confusion)
    assert confusion.shape == (network.num_classes,) * 2 and confusion.sum() == len(x)
    assert confusion.sum(axis=1).tolist() == np.bincount(y.numpy(), minlength=network.num_classes).tolist()
    assert np.trace(confusion) / len(x) == pytest.approx(result.accuracy)
    for c, accuracy in enumerate(result.class_accuracy):
        assert accuracy is None if confusion[c].sum() == 0 else accuracy == confusion[c, c] / confusion[c].sum()
    unlabelled = qffs.run(network, x, None, 10, progress=False).to_dict()
    assert "confusion" not in unlabelled and "class_accuracy" not in unlabelled
    assert RunResult.from_dict(json.loads(result.to_json())) == result


def test_steps_auto_refusals_and_bound():
    """qann has no steps to settle in; max_steps goes with "auto" only; a bound below the settle steps leaves the
    unsettled samples at None, with a note, and T at the bound."""
    name, network, x, y = NETS[1]
    with pytest.raises(ParameterError, match=r"^steps='auto' is for backends that run time steps.*qann"):
        qffs.run(network, x, y, "auto", "qann", progress=False)
    with pytest.raises(ParameterError, match=r"^max_steps=9 bounds steps='auto' only"):
        qffs.run(network, x, y, 16, max_steps=9, progress=False)
    with pytest.raises(ParameterError, match=r"^steps='soon' must be a whole number"):
        qffs.run(network, x, y, "soon", progress=False)
    with pytest.raises(ParameterError, match=r"^max_steps=1: T must cover"):
        qffs.run(network, x, y, "auto", max_steps=1, progress=False)
    full = qffs.run(network, x, y, "auto", progress=False)
    bound = max(full.settled_at) - 1
    with pytest.warns(QffsNote, match=r"samples had not settled by T = .*give a larger max_steps"):
        cut = qffs.run(network, x, y, "auto", max_steps=bound, progress=False)
    assert cut.steps == cut.steps_bound == bound and None in cut.settled_at
    assert all(c is None or c == f for c, f in zip(cut.settled_at, full.settled_at))
    qann = qffs.run(network, x, y, 8, "qann", progress=False).to_dict()
    assert "settled_at" not in qann and "decided_at" not in qann and qann["confusion"]


@pytest.mark.e2e
def test_qffs_run_steps_auto_per_class_json(tmp_path):
    """The command: --steps auto reports the T reached and the settle and decided steps; --per-class the table;
    --json each sample's settled_at and decided_at; refusals name the flags."""
    name, network, x, y = NETS[0]
    write_net(tmp_path / "net.h5", network)
    np.save(tmp_path / "x.npy", x.numpy() if isinstance(x, torch.Tensor) else x)
    np.save(tmp_path / "y.npy", y.numpy())
    args = ("qffs-run", tmp_path / "net.h5", "--inputs", tmp_path / "x.npy", "--quiet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        done = cli(*args, "--labels", tmp_path / "y.npy", "--steps", "auto", "--per-class", "--json",
                   tmp_path / "r.json", "--plot", tmp_path / "r.png")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert f"--steps auto: T = {report['steps']} reached, where every sample had settled" in done.stdout
    assert "settled at (the step of the last spike of any neuron" in done.stdout
    assert f"max {max(report['settled_at'])}" in done.stdout and "decided at" in done.stdout
    assert "per class at t =" in done.stdout and "confusion matrix" in done.stdout
    assert len(report["settled_at"]) == len(report["decided_at"]) == len(x)
    assert (tmp_path / "r.png").stat().st_size > 0
    assert_refused(cli(*args, "--steps", "soon"), "--steps: must be an integer >= 1 or auto, got 'soon'")
    assert_refused(cli(*args, "--max-steps", "9"), "--max-steps 9 bounds --steps auto only")
    assert_refused(cli(*args, "--steps", "auto", "--backend", "qann"), "--steps auto is for backends that run time")
    assert_refused(cli(*args, "--per-class"), "--per-class needs labels")


@pytest.mark.e2e
def test_digits_settle_steps_are_reported_on_real_data(digits_lenet_net):
    """On the digits test split, the trained LeNet: settled_at within the bound, every sample settled, and a run
    until settled reaching T no later than the fixed default's 16, with the same final predictions."""
    x, y = load_dataset("digits", "test")
    auto = qffs.run(digits_lenet_net, x, y, "auto", progress=False)
    fixed = qffs.run(digits_lenet_net, x, y, 16, progress=False)
    assert None not in auto.settled_at and auto.settled_at == fixed.settled_at
    assert auto.predictions == fixed.predictions and auto.decided_at == fixed.decided_at
    assert auto.steps <= 16 and auto.steps == max(auto.settled_at) + 1
