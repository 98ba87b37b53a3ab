"""bench/peers.py's own measuring code, without the peers installed: batchnorm folding, the peers' fan-outs,
the spike and SOP tap, the targets, and a peer that fails; make paper's SOP tap on the residual network."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import peers  # noqa: E402
from paper_peers import SynapseTap  # noqa: E402
from peer_models import lenet, resnet8  # noqa: E402


def _trained_looking(pool: str) -> nn.Sequential:
    """The peers' LeNet with batchnorm statistics and affine parameters away from their defaults."""
    torch.manual_seed(0)
    model = lenet(10, 1, pool)
    for module in model:
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_folding_batchnorm_keeps_the_function(pool):
    model = _trained_looking(pool)
    folded = peers.fold_batchnorm(model)
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in folded)
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model)  # the model itself is left as it was


def test_peer_fan_outs_count_each_connection_once():
    folded = peers.fold_batchnorm(_trained_looking("avg"))
    fan_outs = peers.synapse_sources(folded, (1, 28, 28))
    relus = [i for i, m in enumerate(folded) if isinstance(m, nn.ReLU)]
    assert sorted(fan_outs) == [-1] + relus  # the input and every ReLU, each feeding a conv or linear
    # the input: each pixel of conv1 (5x5, padding 2, 16 channels), all of conv1's connections together
    conv1 = F.conv2d(torch.ones(1, 1, 28, 28), torch.ones(16, 1, 5, 5), padding=2)
    assert fan_outs[-1].sum() == conv1.sum()
    assert fan_outs[-1][0, 14, 14] == 16 * 25
    # the first ReLU: average pooling is part of the synapse, so each of its neurons feeds one pooled
    # pixel's 5x5x32 conv outputs; the four neurons of a window together carry conv2's connections 4 times
    conv2 = F.conv2d(torch.ones(1, 16, 14, 14), torch.ones(32, 16, 5, 5), padding=2)
    assert fan_outs[relus[0]].sum() == 4 * conv2.sum()
    assert fan_outs[relus[0]][0, 14, 14] == 32 * 25
    assert torch.all(fan_outs[relus[2]] == 10)  # the dense 128 -> 10


class _Counts(nn.Module):
    """A stand-in spiking module whose output is the spike counts it is handed."""

    def forward(self, x):
        return x


def test_the_tap_counts_spikes_and_sops_per_step():
    fan_out = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    steps = 3
    # one step per call (SpikingJelly): binary, a nonzero output is one spike
    module = _Counts()
    converted = peers.Converted({0: module}, simulate=None, time_in_batch=False, binary=True)
    tap = peers.Tap(converted, {0: fan_out[0]}, steps)
    outputs = [torch.tensor([[1.0, 0, 0.5], [0, 0, 2]]), torch.zeros(2, 3), torch.tensor([[0, 1.0, 0], [0, 0, 0]])]
    for t, output in enumerate(outputs):
        tap.t = t
        module(output)
    tap.remove()
    assert tap.spikes.tolist() == [3, 0, 1]
    assert tap.sops.tolist() == [1 + 3 + 3, 0, 2]
    # all steps in one call (sinabs): (batch * T, ...) in sample-major order, a value is that many spikes
    module = _Counts()
    converted = peers.Converted({0: module}, simulate=None, time_in_batch=True, binary=False)
    tap = peers.Tap(converted, {0: fan_out[0]}, steps)
    batch = torch.tensor([[2.0, 0, 0], [0, 0, 0], [0, 1, 0],  # sample 0 at t = 0, 1, 2
                          [0, 0, 1], [1, 0, 0], [0, 0, 0]])  # sample 1
    module(batch)
    tap.remove()
    assert tap.spikes.tolist() == [3, 1, 1]
    assert tap.sops.tolist() == [2 + 3, 1, 2]


class _Fires(nn.Module):
    """A stand-in neuron: `value` wherever its input is not negative (every neuron sends at every step)."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x):
        return torch.where(x >= 0, torch.full_like(x, self.value), torch.zeros_like(x))


@pytest.mark.parametrize("binary, value", [(True, 0.37), (False, 2.0)])
def test_the_residual_tap_counts_every_connection_of_every_spike(binary, value):
    """Every neuron of the ResNet-8 sending: each conv's SOPs are all its connections (less padding) times the
    spikes per neuron, and the pool's every spike reaches all 10 outputs of the linear; the image's pixels are
    one event each, whatever their value."""
    torch.manual_seed(0)
    model = resnet8(10, 1).eval()
    for module in model.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, name, _Fires(value))
            if isinstance(child, nn.BatchNorm2d):  # every current at least 0: every neuron sends
                child.running_mean.fill_(-100)
    tap = SynapseTap(model, steps=2, time_in_batch=False, binary=binary)
    x = torch.rand(3, 1, 16, 16) + 0.1  # no zero pixel
    with torch.no_grad():
        model(x)
        tap.t = 1
        model(torch.zeros_like(x))  # no pixel: the first conv gets no event
    tap.remove()
    spikes = 1 if binary else value
    shapes = {}
    hooks = [m.register_forward_pre_hook(lambda m, inputs: shapes.update({m: inputs[0].shape[1:]}))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    connections = {conv: float(F.conv2d(torch.ones(1, *shape), torch.ones_like(conv.weight), None, conv.stride,
                                        conv.padding).sum()) for conv, shape in shapes.items()}
    first, *hidden = connections.values()
    pooled = 128 * 2 * 2 * 10  # the last block's 128 x 2 x 2 neurons into the pool, each reaching 10 outputs
    assert tap.sops[0] == pytest.approx(3 * (first + spikes * (sum(hidden) + pooled)))
    assert tap.sops[1] == pytest.approx(3 * spikes * (sum(hidden) + pooled))


def test_targets_and_table_from_measured_curves():
    curve = lambda *values: [v / 100 for v in values]  # noqa: E731
    entry = {"float_accuracy": 0.99, "converters": {
        "peer": {"accuracy_by_step": curve(50, 80, 98.0, 98.6, 98.7, 98.95, 99.0, 99.0),
                 "sops_by_step": [1e6 * t for t in range(1, 9)]},
        "QFFS": {"accuracy_by_step": curve(97, 98.6, 98.7, 98.7), "sops_by_step": [1e5 * t for t in range(1, 5)]},
        "broken": {"error": "does not import: no module named sinabs"}}}
    for figures in entry["converters"].values():
        if "accuracy_by_step" in figures:
            figures["within_0.5"] = peers.steps_within(figures["accuracy_by_step"], 0.99, 0.5)
            figures["within_0.1"] = peers.steps_within(figures["accuracy_by_step"], 0.99, 0.1)
    assert entry["converters"]["peer"]["within_0.5"] == 4 and entry["converters"]["peer"]["within_0.1"] == 6
    assert entry["converters"]["QFFS"]["within_0.5"] == 2 and entry["converters"]["QFFS"]["within_0.1"] is None
    goal = peers.targets(entry)
    assert goal["best_peer"] == "peer" and (goal["qffs_steps"], goal["peer_steps"]) == (2, 4)
    assert not goal["steps_met"] and goal["sops_met"] and not goal["met"]  # 2x fewer steps, not 4x
    text = peers.table(entry)
    assert "| QFFS | 98.60% | 98.70% | - |" in text and "not by 4" in text
    assert "does not import: no module named sinabs" in text


def test_a_peer_that_fails_is_reported_and_the_bench_carries_on():
    said = []

    def missing():
        raise ImportError("No module named 'sinabs'")

    def broken():
        raise RuntimeError("shapes do not match")

    assert peers.guarded("sinabs", missing, said.append) == {"error": "does not import: No module named 'sinabs'"}
    assert peers.guarded("SpikingJelly", broken, said.append) == {"error": "RuntimeError: shapes do not match"}
    assert peers.guarded("fine", lambda: {"accuracy_by_step": [1.0]}, said.append) == {"accuracy_by_step": [1.0]}
    assert said[0].startswith("sinabs: skipped, it does not import") and "pip install -e '.[peers]'" in said[0]
    assert said[1] == "SpikingJelly: failed (RuntimeError: shapes do not match)" and len(said) == 2
