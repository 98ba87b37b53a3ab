"""The Lava backends against the torch simulator, spike for spike: one matrix of every network kind, Lava backend
(`lava`: fixed_pt, bit-accurate; `lava-float`: floating_pt), samples side by side in one network (`lava_batch`
1: the per-sample network that maps to Loihi 2; more: the batched network, whose last group may be partial),
chunks and worker processes.

Each case starts its Lava runtimes once, recording every layer's spikes and counting the costs in the same run,
and checks against the torch simulator's pipelined mode: every layer's spikes, shapes included; the output counts;
the spikes and SOPs per layer and step; the QANN, where the run is long enough to settle; that the run left no
process, shared memory segment or scratch folder behind, and, in several workers, reported every sample done.
"""

from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import pytest
import torch
from processes import Snapshot
from random_nets import random_graph, random_inputs, random_network
from spikes import assert_same_spikes, last_spike_by_reading, qann_forward, settle_steps

from qffs_lava.ann.datasets import load_dataset
from qffs_lava.backends import simulate
from qffs_lava.backends.pytorch import TorchNetwork
import qffs_lava as qffs
from qffs_lava.ir.netfile import read_net
from qffs_lava.latency import NOT_SETTLED, quiet_from, settling

pytestmark = pytest.mark.lava

V1 = Path(__file__).parent / "data" / "v1"


def digits(start: int, stop: int):
    return load_dataset("digits", "test")[0][start:stop]


def until_settled(network, x) -> int:
    """The synchronous step by which every sample of x has settled (the torch simulator; latency.py): a run of
    that many steps ends at the QANN, in far fewer steps than the bound settle_steps gives (8 against 44 for the
    residual graph below)."""
    return TorchNetwork(network).simulate(x, settle_steps(network), "sync", until_settled=True).steps


# The networks: (network, inputs, T), each built once for the module ------------------------------------------

@pytest.fixture(scope="module")
def digits_mlp(digits_net):
    """The digits MLP (flatten, three dense layers) that tests/conftest.py trains."""
    return read_net(digits_net), digits(0, 20), 10


@pytest.fixture(scope="module")
def digits_lenet(digits_lenet_net):
    """The digits LeNet: conv, max pool, conv, max pool, flatten, dense, dense."""
    return read_net(digits_lenet_net), digits(20, 40), 10


@pytest.fixture(scope="module")
def digits_lenet_float(digits_lenet_float_net):
    """The digits LeNet trained with --out-bits float: its output a read-out (net.h5 version 3), whose potential
    is recorded in place of output spikes."""
    return read_net(digits_lenet_float_net), digits(20, 40), 10


@pytest.fixture(scope="module")
def strided_conv():
    """Conv, max pool, a strided grouped conv, a padded max pool (stride 1), flatten, dense; run until settled."""
    rng = np.random.default_rng(11)
    network = random_network(rng, "conv")
    x = random_inputs(rng, network, 20)
    return network, x, until_settled(network, x)


@pytest.fixture(scope="module")
def residual_graph():
    """A random graph of eight layers: shortcuts, fan-out, pools in branches, layers of several synapses; run
    until settled."""
    rng = np.random.default_rng(11)
    network = random_graph(rng, layers_wanted=8)
    assert not network.is_chain()
    x = random_inputs(rng, network, 20)
    return network, x, until_settled(network, x)


@pytest.fixture(scope="module")
def digits_resnet8(digits_resnet_net):
    """A trained ResNet-8 exported as a graph (identity and projection shortcuts, global average pooling)."""
    return read_net(digits_resnet_net), digits(0, 20), 10


def version_1(name: str, x):
    network = read_net(V1 / f"v1_{name}.h5")
    assert network.meta["version"] == 1
    return network, x[:20], 12


@pytest.fixture(scope="module")
def v1_digits_mlp():
    """tests/data/v1's files, written before graph networks (test_compat.py checks their torch outputs)."""
    return version_1("digits_mlp", digits(0, 20))


@pytest.fixture(scope="module")
def v1_digits_lenet():
    return version_1("digits_lenet", digits(0, 20))


@pytest.fixture(scope="module")
def v1_mnist_lenet(mnist_dir):
    return version_1("mnist_lenet", load_dataset("mnist", "test", mnist_dir)[0])


# The matrix -----------------------------------------------------------------------------------------------------

class Case(NamedTuple):
    network: str  # one of the fixtures above
    backend: str
    lava_batch: Optional[int]  # None: the backend's default (all the samples side by side, here)
    chunk: int  # samples per runtime, rounded up to whole groups of lava_batch
    workers: int  # with more than one, the run also reports its progress, running its steps in slices
    samples: int = 20  # the first of the network's inputs
    record_spikes: bool = True  # False: the output's only kept (the costs are still counted from every layer's)

    def __str__(self):
        return (f"{self.network}-{self.backend}-B{self.lava_batch or 'default'}-chunk{self.chunk}-{self.workers}w"
                f"{'' if self.samples == 20 else f'-{self.samples}samples'}{'' if self.record_spikes else '-output'}")


CASES = [
    Case("digits_mlp", "lava", 1, 8, 1),  # chunks of 8, 8 and 4 samples, one runtime after another in one worker
    Case("digits_mlp", "lava-float", 1, 8, 2),  # the same chunks, two runtimes at a time
    Case("digits_lenet", "lava", 3, 10, 2),  # chunks of 12 and 8 samples: groups of 3, the last of 2
    Case("digits_lenet", "lava-float", 3, 10, 2),
    Case("digits_lenet_float", "lava", 1, 4, 2, samples=8),  # the read-out, in the per-sample network (Loihi 2's)
    Case("digits_lenet_float", "lava-float", 4, 20, 1),
    Case("strided_conv", "lava", 4, 12, 2),  # chunks of 12 and 8 samples: groups of 4
    Case("strided_conv", "lava-float", 4, 12, 2),
    Case("residual_graph", "lava", 1, 2, 2, samples=4),  # T + D = 14 steps a sample: 4 samples, in 2 chunks
    Case("residual_graph", "lava", 3, 3, 2, samples=5),  # chunks of 3 and 2 samples: a group of 3, then of 2
    # make test-slow: the floating_pt models are checked on the chains above, the graph's wiring on fixed_pt
    pytest.param(Case("residual_graph", "lava-float", 3, 3, 2, samples=5), marks=pytest.mark.slow),
    Case("digits_resnet8", "lava", None, 20, 1),
    # The version 1 files on the lava backend (their lava-float runs: the same ProcessModels, in the cases above);
    # a file read is the same Network whatever its version (test_compat.py), so make test runs the MNIST one only
    pytest.param(Case("v1_digits_mlp", "lava", None, 20, 1, record_spikes=False), marks=pytest.mark.slow),
    pytest.param(Case("v1_digits_lenet", "lava", None, 20, 1, record_spikes=False), marks=pytest.mark.slow),
    Case("v1_mnist_lenet", "lava", None, 20, 1, record_spikes=False),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_lava_equals_torch_pipelined(request, case, own_tmpdir):
    network, x, steps = request.getfixturevalue(case.network)
    x = x[:case.samples]
    expected = TorchNetwork(network).simulate(x, steps, "pipelined", record_spikes=case.record_spikes,
                                              count_costs=True)
    before, done = Snapshot(), []
    got = simulate(network, x, steps, case.backend, chunk=case.chunk, workers=case.workers,
                   lava_batch=case.lava_batch, record_spikes=case.record_spikes, count_costs=True, activity=True,
                   progress=done.append if case.workers > 1 else None)  # with progress: in slices of steps
    assert not before.left()
    if case.workers > 1:
        assert sum(done) == len(x) and all(n > 0 for n in done), done
    assert got.mode == "pipelined" and got.steps == steps + network.pipeline_depth
    if case.record_spikes:
        assert_same_spikes(got, expected, f"{case}:")
        for i, spikes in enumerate(got.spikes, start=1):
            assert spikes.shape == (got.steps, len(x)) + tuple(network.shapes[i]), f"layer {i}"
        assert any(int(s.abs().sum()) for s in got.spikes[:-1])  # not trivially silent
    else:
        assert got.spikes is None  # every layer was recorded for the costs, and only the output kept
        assert torch.equal(got.output_counts, expected.output_counts)
    assert got.costs == expected.costs
    assert expected.costs.sops.sum() > 0 and expected.costs.positive[1:].sum() > 0
    # which samples spiked at each step, read by the workers from every layer's recording: the settle steps
    assert torch.equal(got.active, expected.active)
    settled = settling(got.active, quiet_from(network, "pipelined"), network.pipeline_depth).settled_at
    if case.record_spikes:
        last = last_spike_by_reading(got.spikes, len(x))
        assert settled.tolist() == [max(0, t - network.pipeline_depth) if t < got.steps else NOT_SETTLED
                                    for t in last]
    if case.network in ("strided_conv", "residual_graph"):
        assert NOT_SETTLED not in settled.tolist()  # run until settled (until_settled)
    if NOT_SETTLED not in settled.tolist():
        assert torch.equal(got.output_counts[-1], qann_forward(network, x))  # settled at the QANN


def test_the_trained_resnet_is_a_graph_its_integers_agree_with(digits_resnet8):
    network, _, _ = digits_resnet8
    assert network.meta["version"] == 2 and not network.is_chain()
    assert network.meta["qann_agreement"] >= 0.9


def test_qffs_run_on_lava_reports_what_it_reports_on_torch(digits_net):
    """qffs.run's Lava report (pipelined, the default 32 samples side by side: groups of 32 and 28) is the torch
    backend's synchronous one, step for step."""
    network = read_net(digits_net)
    x, y = load_dataset("digits", "test")
    lava = qffs.run(network, x[:60], y[:60], 8, "lava", progress=False)
    torch_report = qffs.run(network, x[:60], y[:60], 8, "torch", progress=False)
    assert lava.mode == "pipelined" and torch_report.mode == "sync"
    assert lava.output_counts == torch_report.output_counts
    assert lava.accuracy_by_step == torch_report.accuracy_by_step
    assert lava.predictions == torch_report.predictions
    pipelined = qffs.run(network, x[:60], y[:60], 8, "torch", "pipelined", progress=False)
    assert lava.settled_at == pipelined.settled_at and lava.decided_at == pipelined.decided_at
    assert None not in lava.settled_at


def test_lava_steps_auto_reports_what_torch_reports(digits_lenet):
    """steps="auto": the Lava backend runs the bound and reads the settle steps from its recordings; the torch
    backend (pipelined) stops each batch where it settles; both report the same T, settle steps and counts."""
    network, x, _ = digits_lenet
    lava = qffs.run(network, x, None, "auto", "lava", progress=False)
    torch_report = qffs.run(network, x, None, "auto", "torch", "pipelined", batch_size=8, progress=False)
    for key in ("steps", "steps_bound", "settled_at", "decided_at", "output_counts", "agreement_by_step"):
        assert getattr(lava, key) == getattr(torch_report, key), key
    assert lava.steps < lava.steps_bound
