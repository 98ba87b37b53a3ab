"""The torch simulator against the closed-form QANN, pipelined against synchronous, and batch size."""

import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from commands import cli
from random_nets import random_inputs, random_network
from spikes import final_counts, qann_forward, settle_steps

from qffs_lava.backends.pytorch import TorchNetwork
import qffs_lava as qffs
from qffs_lava.ir.layers import MaxPoolLayer, NeuronLayer
from qffs_lava.ir.netfile import read_net


def simulate(network, x, steps, mode, record_spikes=False):
    return TorchNetwork(network).simulate(x, steps, mode, record_spikes)


@pytest.mark.parametrize("kind", ["dense", "conv", "conv-only"])
@pytest.mark.parametrize("seed", range(6))
def test_synchronous_simulation_settles_at_the_qann_per_neuron(kind, seed):
    rng = np.random.default_rng(seed)
    network = random_network(rng, kind)
    x = random_inputs(rng, network, 16)
    result = simulate(network, x, settle_steps(network), "sync", record_spikes=True)
    expected = qann_forward(network, x, all_layers=True)[1:]
    for i, (got, want) in enumerate(zip(final_counts(result), expected), start=1):
        assert torch.equal(got.reshape(want.shape), want), f"layer {i}"
    assert torch.equal(result.output_counts[-1], expected[-1].reshape(16, -1))
    assert any(int(s.abs().sum()) for s in result.spikes[:-1])  # the network is not silent


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("seed", range(4))
def test_pipelined_equals_synchronous_shifted_by_depth(kind, seed):
    rng = np.random.default_rng(100 + seed)
    network = random_network(rng, kind)
    x = random_inputs(rng, network, 8)
    steps = settle_steps(network)
    sync = simulate(network, x, steps, "sync", record_spikes=True)
    piped = simulate(network, x, steps, "pipelined", record_spikes=True)
    assert piped.steps == steps + network.pipeline_depth
    depth = 0
    for layer, s_sync, s_piped in zip(network.layers[1:], sync.spikes, piped.spikes):
        depth += isinstance(layer, NeuronLayer)
        assert torch.equal(s_piped[depth:depth + steps], s_sync), type(layer).__name__
        assert not s_piped[:depth].any()  # nothing arrives before its hop count
    assert torch.equal(piped.synchronous_counts(), sync.output_counts)


def test_max_pool_layers_receive_and_send_in_the_same_step():
    rng = np.random.default_rng(7)
    network = random_network(rng, "conv")
    x = random_inputs(rng, network, 4)
    result = simulate(network, x, 20, "sync", record_spikes=True)
    pool_index = next(i for i, layer in enumerate(network.layers) if isinstance(layer, MaxPoolLayer))
    conv_spikes, pool_spikes = result.spikes[pool_index - 2], result.spikes[pool_index - 1]
    first_conv = conv_spikes.reshape(20, 4, -1).any(dim=2).any(dim=1).nonzero()[0].item()
    first_pool = pool_spikes.reshape(20, 4, -1).any(dim=2).any(dim=1).nonzero()[0].item()
    assert first_pool == first_conv


def test_results_do_not_depend_on_batch_size():
    rng = np.random.default_rng(3)
    network = random_network(rng, "conv")
    x = random_inputs(rng, network, 23)
    a = qffs.run(network, x, None, 12, "torch", "sync", batch_size=23, progress=False)
    b = qffs.run(network, x, None, 12, "torch", "sync", batch_size=5, progress=False)
    assert a.output_counts == b.output_counts
    assert a.agreement_by_step == b.agreement_by_step


def test_exported_digits_mlp_equals_qann_per_neuron(digits_net):
    from qffs_lava.ann.datasets import load_dataset

    network = read_net(digits_net)
    x, y = load_dataset("digits", "test")
    result = simulate(network, x, 16, "sync", record_spikes=True)
    expected = qann_forward(network, x, all_layers=True)[1:]
    for got, want in zip(final_counts(result), expected):
        assert torch.equal(got.reshape(want.shape), want)
    report = qffs.run(network, x, y, 16, progress=False)
    assert report.equal_from_step is not None and report.equal_from_step <= 16
    assert report.accuracy == report.qann_accuracy
    assert len(report.accuracy_by_step) == 16 and report.agreement_by_step[-1] == 1.0


def qffs_run(*args):
    return subprocess.run([sys.executable, "-c", "import sys; from qffs_lava.cli import run_main; "
                           "sys.exit(run_main())", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.e2e
def test_cli_writes_json_and_plot(digits_net, tmp_path):
    import json

    result = qffs_run(str(digits_net), "--dataset", "digits", "--steps", "8", "--samples", "100",
                      "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png"), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "SNN == QANN on every sample from step" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    for key in ("backend", "mode", "steps", "samples", "pipeline_depth", "accuracy", "accuracy_by_step",
                "qann_accuracy", "agreement_by_step", "output_counts", "predictions", "labels"):
        assert key in report, key
    assert report["samples"] == 100 and len(report["output_counts"]) == 100 and report["pipeline_depth"] == 3
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.e2e
def test_cli_inputs_from_npy_and_pipelined_mode(digits_net, tmp_path):
    from qffs_lava.ann.datasets import load_dataset

    x, y = load_dataset("digits", "test")
    np.save(tmp_path / "x.npy", x[:30].numpy())
    np.save(tmp_path / "y.npy", y[:30].numpy())
    result = qffs_run(str(digits_net), "--inputs", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                      "--mode", "pipelined", "--steps", "10", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "backend torch (pipelined), 30 samples" in result.stdout


def test_cli_bad_input_exits_2(digits_net, digits_model_file, tmp_path):
    np.save(tmp_path / "wrong.npy", np.zeros((5, 3, 3)))
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_group("layer")
    cases = [
        ([str(digits_model_file), "--dataset", "digits"],
         "as a PyTorch model file is, not a net file: run `qffs-export"),
        ([str(tmp_path / "wrong.npy"), "--dataset", "digits"], "not a readable HDF5 file"),
        ([str(tmp_path / "other.h5"), "--dataset", "digits"], "not a QFFS net file"),
        ([str(digits_net), "--inputs", str(tmp_path / "wrong.npy")], "this network takes (N, 1, 8, 8)"),
        ([str(digits_net), "--dataset", "digits", "--steps", "0"], "must be an integer >= 1"),
        ([str(digits_net), "--dataset", "digits", "--backend", "spinnaker"], "invalid choice: 'spinnaker'"),
        ([str(digits_net), "--dataset", "digits", "--backend", "loihi2"],
         "needs lava-loihi (Intel's Loihi 2 extension of Lava, for INRC members) and a Loihi 2 system, which this "
         "machine does not have; and Loihi 2 ProcessModels (microcode) for the QFFS neuron, the read-out and the "
         "event max pool, which do not exist yet"),
    ]
    for args, message in cases:
        result = cli("qffs-run", *args, "--quiet")  # in this process: test_cli_writes_json_and_plot starts one
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here; the CPU runs the same code")
@pytest.mark.parametrize("mode", ["sync", "pipelined"])
def test_a_gpu_gives_the_same_spikes_as_the_cpu(mode):
    from random_nets import random_graph

    rng = np.random.default_rng(5)
    network = random_graph(rng)
    x = random_inputs(rng, network, 16)
    cpu = TorchNetwork(network).simulate(x, 16, mode, record_spikes=True)
    gpu_net = TorchNetwork(network).to("cuda")
    gpu = gpu_net.simulate(x, 16, mode, record_spikes=True)
    assert torch.equal(cpu.output_counts, gpu.output_counts)
    assert all(torch.equal(a, b) for a, b in zip(cpu.spikes, gpu.spikes))
    assert torch.equal(gpu_net.qann(x).cpu(), TorchNetwork(network).qann(x))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here")
@pytest.mark.e2e
def test_device_cuda_without_a_gpu_says_so(digits_net):
    result = qffs_run(str(digits_net), "--dataset", "digits", "--device", "cuda", "--quiet")
    assert result.returncode == 2 and "PyTorch sees no CUDA GPU here; use --device cpu" in result.stderr
