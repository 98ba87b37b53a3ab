"""Loihi 2 hardware: exported nets run with Loihi2HwCfg must spike (and a read-out integrate) exactly like the
fixed_pt CPU run.

Run on an INRC machine with lava-loihi installed: `pytest hw_tests`. Elsewhere every test
here is skipped (see conftest.py).
"""

import numpy as np
import pytest
import torch
from qffs_export.exporter import export

from qffs_lava.ann.datasets import load_dataset
from qffs_lava.ann.train import train
from qffs_lava.backends import simulate
from qffs_lava.ir.netfile import read_net

STEPS = 10


#: name -> (architecture, train options): spiking outputs, and a read-out output (QffsReadout's potential).
NETWORKS = {"mlp": ("mlp", {}), "lenet": ("lenet", {}), "lenet-float-out": ("lenet", {"out_bits": "float"})}


@pytest.fixture(scope="module", params=list(NETWORKS))
def exported(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    arch, options = NETWORKS[request.param]
    train("digits", arch, out=folder / "model.pt", progress=False, float_epochs=5, qat_epochs=3, **options)
    export(folder / "model.pt", folder / "net.h5")
    return read_net(folder / "net.h5")


def test_loihi2_spikes_equal_the_fixed_point_cpu_run(exported):
    x, _ = load_dataset("digits", "test")
    x = x[:20]
    expected = simulate(exported, x, STEPS, "lava", chunk=10, record_spikes=True)
    got = simulate(exported, x, STEPS, "loihi2", chunk=10, record_spikes=True)
    for i, (a, b) in enumerate(zip(got.spikes, expected.spikes), start=1):
        assert torch.equal(a, b), f"layer {i}: {int((a != b).sum())} spikes differ"
    assert torch.equal(got.output_counts, expected.output_counts)  # a read-out's: its potential at every step
    assert np.array_equal(got.synchronous_counts()[-1].argmax(1), expected.synchronous_counts()[-1].argmax(1))
