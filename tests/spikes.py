"""What the tests that compare simulations share: when a network has settled, each layer's final counts, the
integer QANN, spike-for-spike equality of two runs, and each sample's last spike read from the spike trains."""

import numpy as np
import torch

from qffs_lava.backends.pytorch import TorchNetwork


def settle_steps(network, mode: str = "sync") -> int:
    """Steps after which every layer has settled: K, then each layer needs at most zMax + 1 (+ D pipelined)."""
    steps = network.bias_steps + sum(layer.neurons.z_max + 1 for _, layer in network.neuron_layers) + 1
    return steps + (network.pipeline_depth if mode == "pipelined" else 0)


def final_counts(result):
    """Each layer's net spike count at the last step (neurons: z; pools: the max of their inputs)."""
    return [spikes.to(torch.int64).sum(dim=0) for spikes in result.spikes]


def qann_forward(network, x, all_layers: bool = False):
    """The integer QANN's output counts (every layer's, with all_layers) for dataset values x."""
    return TorchNetwork(network).qann(x, all_layers)


def assert_same_spikes(got, expected, what: str = "") -> None:
    """Every layer's recorded spikes of two Simulations are equal, shapes included, and so are their output
    counts; `what` names the run in the message."""
    assert len(got.spikes) == len(expected.spikes), what
    for i, (a, b) in enumerate(zip(got.spikes, expected.spikes), start=1):
        assert a.shape == b.shape, f"{what} layer {i}: shape {tuple(a.shape)}, expected {tuple(b.shape)}"
        assert torch.equal(a, b), f"{what} layer {i}: {int((a != b).sum())} spikes differ"
    assert torch.equal(got.output_counts, expected.output_counts), f"{what} output counts differ"


def last_spike_by_reading(spikes, samples):
    """Per sample, the (1-based) last step at which any recorded layer holds a nonzero spike, 0 if none: read
    with plain loops over every layer's recorded spike trains."""
    last = [0] * samples
    for layer in spikes:
        trains = layer.reshape(layer.shape[0], samples, -1).numpy()
        for n in range(samples):
            steps = np.nonzero(np.abs(trains[:, n]).sum(axis=1))[0]
            if len(steps):
                last[n] = max(last[n], int(steps[-1]) + 1)
    return last
