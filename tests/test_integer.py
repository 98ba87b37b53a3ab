"""Hardware-exact fine-tuning: the trainer's forward pass is the exporter's integer network (convert/integer.py)."""

import functools
import logging

import numpy as np
import pytest
import torch
from qffs_export.exporter import export

from qffs_lava.ann.checkpoint import read_metrics
from qffs_lava.ann.datasets import load_dataset
from qffs_lava.ann.modelfile import load_model_file
from qffs_lava.ann.train import train
from qffs_lava.backends.pytorch import TorchNetwork
from qffs_lava.convert.integer import IntegerModel, integer_grid
from qffs_lava.errors import QffsError
from qffs_lava.ir.loihi import bias_exponents, loihi_problems, nearest_bias
from qffs_lava.ir.netfile import read_net

QUIET = dict(progress=False)


def assert_trained_forward_is_the_exported_network(model_path, net_path, images):
    """Layer by layer, the counts of the model's integer forward pass (float32, as trained) equal the net.h5's."""
    content, model = load_model_file(model_path)
    network = read_net(net_path)
    pre = {}
    counts = IntegerModel.of(content, model).run(images, pre)
    exported_pre = {}
    exported = TorchNetwork(network).qann(images, all_layers=True, preactivations=exported_pre)
    assert len(counts) == len(network.layers) and set(pre) == set(exported_pre)
    for index, count in enumerate(counts):
        assert count.dtype == torch.float32
        assert torch.equal(count.to(torch.int64).reshape(exported[index].shape), exported[index]), index
        if index in exported_pre:
            assert torch.allclose(pre[index].double(), exported_pre[index].double(), atol=1e-5, rtol=0)


def test_trained_digits_mlp_forward_pass_equals_the_exported_integers(digits_model_file, digits_net):
    images, _ = load_dataset("digits", "test")
    assert_trained_forward_is_the_exported_network(digits_model_file, digits_net, images[:256])


def test_trained_digits_lenet_forward_pass_equals_the_exported_integers(digits_lenet_files):
    images, _ = load_dataset("digits", "test")
    assert_trained_forward_is_the_exported_network(*digits_lenet_files, images[:256])


@pytest.mark.e2e
def test_digits_resnet_with_8_bit_weight_lsq_trains_hardware_exact(tmp_path):
    """A graph (identity and projection shortcuts, global average pooling) with weight LSQ: the exported
    network is the trained one on the whole test split."""
    train("digits", "resnet8", out=tmp_path / "r.pt", float_epochs=1, qat_epochs=1, hardware_epochs=1,
          weight_bits=8, **QUIET)
    network = export(tmp_path / "r.pt", tmp_path / "r.h5")
    assert network.meta["qann_forward"] == "hardware-exact" and network.meta["qann_agreement"] == 1.0
    assert not any(network.meta["count_mismatch"].values())
    assert not loihi_problems(network)
    images, _ = load_dataset("digits", "test")
    assert_trained_forward_is_the_exported_network(tmp_path / "r.pt", tmp_path / "r.h5", images[:64])


@pytest.mark.e2e
def test_the_phase_can_be_skipped_and_added_later_to_a_model_file(tmp_path):
    content = train("digits", "mlp", out=tmp_path / "lsq.pt", float_epochs=2, qat_epochs=2, hardware_epochs=0,
                    **QUIET)
    assert not content["hardware_exact"] and "integer_before" not in content["accuracy"]
    network = export(tmp_path / "lsq.pt", tmp_path / "lsq.h5")
    assert network.meta["qann_forward"] == "LSQ, float weights"
    assert network.meta["qann_accuracy"] == content["accuracy"]["qann"]

    with_phase = train("digits", "mlp", float_epochs=2, qat_epochs=2, hardware_epochs=2, **QUIET)
    assert with_phase["accuracy"]["lsq"] == content["accuracy"]["qann"]  # the phase comes after the same training

    added = train("digits", "mlp", out=tmp_path / "hw.pt", init=str(tmp_path / "lsq.pt"), float_epochs=0,
                  qat_epochs=0, hardware_epochs=2, **QUIET)
    assert added["hardware_exact"] and added["accuracy"]["lsq"] == content["accuracy"]["qann"]
    assert added["accuracy"]["qann"] == with_phase["accuracy"]["qann"]  # the same phase as in one full run
    for name, value in with_phase["state_dict"].items():
        assert torch.equal(added["state_dict"][name], value), name
    assert added["accuracy"]["integer_before"] == network.meta["int_qann_accuracy"]  # what the export gave
    assert [line["phase"] for line in read_metrics(tmp_path / "hw.metrics.jsonl")] == ["hardware"] * 2
    after = export(tmp_path / "hw.pt", tmp_path / "hw.h5")
    assert after.meta["qann_agreement"] == 1.0 and after.meta["int_qann_accuracy"] == added["accuracy"]["qann"]


@pytest.mark.e2e
def test_the_phase_keeps_its_best_epoch_on_validation_and_never_trains_on_it(tmp_path, caplog):
    """A phase that wrecks the network (a learning rate of 0.3) keeps epoch 0: the LSQ model's integer network."""
    lsq = train("digits", "mlp", out=tmp_path / "lsq.pt", float_epochs=2, qat_epochs=2, hardware_epochs=0, **QUIET)
    caplog.set_level(logging.INFO, logger="qffs_lava")
    wrecked = train("digits", "mlp", init=str(tmp_path / "lsq.pt"), float_epochs=0, qat_epochs=0,
                    hardware_epochs=2, hardware_lr=0.3, progress=False)
    assert wrecked["train"]["hardware_epoch_kept"] == 0 and wrecked["train"]["validation_images"] == 135
    assert wrecked["accuracy"]["qann"] == wrecked["accuracy"]["integer_before"]
    assert wrecked["accuracy"]["validation"]["qann"] == wrecked["accuracy"]["validation"]["integer_before"]
    trained = [float(line.split("validation accuracy ")[1].split("%")[0]) for line in caplog.messages
               if line.startswith("hardware epoch")]
    assert len(trained) == 2 and max(trained) < 100 * wrecked["accuracy"]["validation"]["integer_before"] - 5
    for name, value in lsq["state_dict"].items():
        assert torch.equal(wrecked["state_dict"][name], value), name

    tuned = train("digits", "mlp", init=str(tmp_path / "lsq.pt"), float_epochs=0, qat_epochs=0, hardware_epochs=2,
                  **QUIET)
    assert tuned["train"]["hardware_epoch_kept"] in (0, 1, 2)
    assert tuned["accuracy"]["validation"]["qann"] >= tuned["accuracy"]["validation"]["integer_before"]


def test_qat_epochs_0_needs_a_model_file_to_start_from():
    with pytest.raises(QffsError, match="qat_epochs=0 needs init"):
        train("digits", "mlp", qat_epochs=0, **QUIET)


def test_the_grid_is_loihi_2s_and_gradients_pass_straight_through():
    generator = torch.Generator().manual_seed(0)
    scaled = [torch.randn(5, 3, 3, 3, generator=generator, dtype=torch.float64).requires_grad_(),
              (0.01 * torch.randn(5, 5, 1, 1, generator=generator, dtype=torch.float64)).requires_grad_()]
    bias = (50 * torch.randn(5, generator=generator, dtype=torch.float64)).requires_grad_()
    step = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    weights, bias_int, threshold, v_init, _ = integer_grid(scaled, bias, step, bias_steps=3, bounds=[48, 3], z_max=3)
    for w in weights:
        assert torch.equal(w, torch.round(w)) and not torch.any(w % 2) and w.min() >= -256 and w.max() <= 254
    top = torch.stack([w.abs().reshape(5, -1).amax(1) for w in weights]).amax(0)
    assert torch.all((top == 254) | (top == 256))  # each channel fills the 8-bit range
    assert torch.equal(v_init, torch.div(threshold, 2, rounding_mode="floor")) and threshold.min() >= 1
    assert (bias_exponents(bias_int.detach().numpy()) >= 0).all()  # a 13-bit mantissa times 2^e
    rows = torch.cat([a.detach().reshape(5, -1) for a in scaled], dim=1)
    mu = torch.minimum(127 / rows.max(1).values, 128 / -rows.min(1).values)
    (sum(w.sum() for w in weights) + bias_int.sum() + threshold.sum()).backward()
    for a in scaled:  # d weight / dA = 2 mu per output channel (0 only where a weight sits on the clip)
        expected = (2 * mu).reshape(-1, *[1] * (a.ndim - 1)).expand_as(a)
        assert int((~torch.isclose(a.grad, expected)).sum()) <= 2
    assert torch.allclose(bias.grad, 2 * mu / 3) and torch.isclose(step.grad, 2 * mu.sum())


def test_nearest_bias_rounds_to_the_nearest_mantissa_times_a_power_of_two():
    values = torch.tensor([0.4, 0.5, -0.5, 4095.4, 4095.6, -4096.4, 10000.0, 10002.0, 524000.0, -1e9],
                          dtype=torch.float64)
    expected = [0, 1, 0, 4095, 4096, -4096, 10000, 10004, 524032, -1e9]
    assert nearest_bias(values).tolist() == expected
    assert nearest_bias(values.numpy()).tolist() == expected  # numpy arrays alike
    assert bias_exponents(np.array([4095, 4096, 10000, 10002, 524032, 10**9])).tolist() == [0, 1, 2, -1, 7, -1]


@pytest.mark.parametrize("groups, mean, std", [(1, [0.1, 0.2, 0.3], [0.2, 0.3, 0.4]),
                                               (3, [0.1, 0.2, 0.3], [0.2, 0.3, 0.4]),
                                               (1, [0.5], [0.25]), (3, [0.5], [0.25])])
def test_the_input_normalization_folds_into_grouped_convs_too(groups, mean, std):
    """A conv on (x - mean) / std equals the folded conv on x, per input channel of each group (a depthwise RGB
    stem reads channel c with output c only), and with one mean and std for all channels."""
    from qffs_lava.convert.integer import fold_input_normalization

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 6, 3, groups=groups).double()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    as_map = functools.partial(torch.tensor, dtype=torch.float64)
    normalized = (x - as_map(mean).reshape(1, -1, 1, 1)) / as_map(std).reshape(1, -1, 1, 1)
    weight, bias = fold_input_normalization(conv.weight.detach(), conv.bias.detach(), mean, std)
    folded = torch.nn.functional.conv2d(x, weight, bias, groups=groups)
    assert torch.allclose(folded, conv(normalized), atol=1e-12)
