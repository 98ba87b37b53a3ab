"""Fitting Loihi 2's ranges is part of the integer grid: what trains exports (convert/integer.py, docs/training.md)."""

import contextlib
import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from profiles import examples
from random_nets import random_network

from qffs_export.exporter import export
from qffs_lava.ann.archs import make_arch
from qffs_lava.ann.modelfile import load_model_file
from qffs_lava.ann.models import build_model, set_quantized
from qffs_lava.ann.train import choose_grid, train
from qffs_lava.backends.pytorch import TorchNetwork
from qffs_lava.cli import inspect_main
from qffs_lava.convert.integer import IntegerModel, check_fit, input_scales, same_integers, weight_bits
from qffs_lava.convert.network import convert
from qffs_lava.errors import ParameterError, QffsError
from qffs_lava.ir.layers import DenseSynapse, InputLayer, NeuronLayer, Neurons
from qffs_lava.ir.loihi import STATE_LIMIT, count_bounds, loihi_problems, membrane_bounds
from qffs_lava.ir.netfile import read_net
from qffs_lava.ir.network import Network

QUIET = {"progress": False}
NORM = {"mean": [0.0], "std": [1.0]}


def random_model(seed: int, channels: int, side: int, kernel: int, width: int, bits: int, out_bits: int,
                 skip: bool, scales) -> tuple:
    """A conv -> act -> flatten -> linear [+ linear of the flattened input] -> act model with random parameters of
    the given orders of magnitude (weights, biases, steps), its quantizers initialized."""
    nodes = [{"name": "c", "op": "conv", "inputs": ["input"], "in_channels": channels, "out_channels": width,
              "kernel_size": kernel, "stride": 1, "padding": kernel // 2, "groups": 1},
             {"name": "a", "op": "act", "inputs": ["c"], "bits": bits},
             {"name": "f", "op": "flatten", "inputs": ["a"]},
             {"name": "l", "op": "linear", "inputs": ["f"], "in_features": width * side * side, "out_features": 3}]
    if skip:  # a second path, from the input, into the output layer: two count bounds
        nodes += [{"name": "fi", "op": "flatten", "inputs": ["input"]},
                  {"name": "s", "op": "linear", "inputs": ["fi"], "in_features": channels * side * side,
                   "out_features": 3},
                  {"name": "sum", "op": "add", "inputs": ["l", "s"]}]
    nodes.append({"name": "out", "op": "act", "inputs": ["sum" if skip else "l"], "bits": out_bits})
    arch = {"name": "random", "input_shape": [channels, side, side], "num_classes": 3, "nodes": nodes}
    model = build_model(arch)
    rng = np.random.default_rng(seed)
    weight_scale, bias_scale, step_scale, one_sign = scales
    with torch.no_grad():
        for name in ("c", "l", "s") if skip else ("c", "l"):
            module = getattr(model, name)
            weight = rng.standard_normal(tuple(module.weight.shape)) * weight_scale
            module.weight.copy_(torch.as_tensor(np.abs(weight) if one_sign else weight))
            module.bias.copy_(torch.as_tensor(rng.standard_normal(tuple(module.bias.shape)) * bias_scale))
        for name in ("a", "out"):
            quantizer = getattr(model, name).quantizer  # None for a full-precision output
            if quantizer is not None:
                quantizer.step.fill_(float(step_scale * rng.uniform(0.5, 2)))
                quantizer.initialized.fill_(True)
    set_quantized(model, True)
    return arch, model.eval()


magnitudes = st.floats(-4, 4).map(lambda e: 10.0**e)


@settings(max_examples=examples(300), deadline=None)
@given(seed=st.integers(0, 2**31 - 1), channels=st.integers(1, 3), side=st.integers(1, 12),
       kernel=st.sampled_from([1, 3, 5]), width=st.integers(1, 6), bits=st.integers(1, 8),
       out_bits=st.one_of(st.integers(1, 8), st.just("float")), skip=st.booleans(),
       levels=st.one_of(st.sampled_from([1, 16, 255, 65535, 65536]), st.floats(0.01, 65536)),
       halvings=st.integers(0, 6), scales=st.tuples(magnitudes, magnitudes, magnitudes, st.booleans()))
def test_every_integer_network_fits_loihi_2(seed, channels, side, kernel, width, bits, out_bits, skip, levels,
                                            halvings, scales):
    """Whatever the weights, fan-ins, bits, input levels and scale: IntegerModel's network is inside every Loihi 2
    range, with no check afterwards (the fit is by construction), a read-out's potential over the run too."""
    arch, model = random_model(seed, channels, side, kernel, width, bits, out_bits, skip, scales)
    with torch.no_grad():
        network, _ = IntegerModel(model, arch, levels, NORM, levels / 2**halvings).network()
    assert loihi_problems(network) == []


def test_a_fitting_grid_is_the_unconstrained_one(digits_model_file):
    """Where the finest grid fits (the digits MLP), the fit changes no integer: what exports is what it was."""
    content, model = load_model_file(digits_model_file)
    with torch.no_grad():
        fitted, _ = IntegerModel.of(content, model).network()
        unconstrained, _ = IntegerModel(model, content["arch"], content["input_levels"], content["input_norm"],
                                        fit=False).network()
    assert "grid" not in content and same_integers(fitted, unconstrained)
    assert all((weight_bits(layer) > 7.9).all() for _, layer in fitted.neuron_layers)


def test_the_fit_binds_where_the_unconstrained_grid_overflows():
    """One-signed 5x5 RGB kernels over 8-bit inputs at 4-bit activations (K = 15): uncapped they overflow the
    membrane; capped the worst case is just below 2^23 (the rounding's slack is bounded, not ignored), with fewer
    weight bits."""
    arch, model = random_model(0, 3, 8, 5, 2, 4, 3, False, (1.0, 1.0, 0.05, True))
    with torch.no_grad():
        unconstrained, _ = IntegerModel(model, arch, 255, NORM, fit=False).network()
        fitted, _ = IntegerModel(model, arch, 255, NORM).network()
    assert any("worst-case |v|" in p for p in loihi_problems(unconstrained)) and loihi_problems(fitted) == []
    bounds = count_bounds(fitted)
    worst = max(max(-low, high) for low, high in (membrane_bounds(fitted, i, bounds) for i, _ in fitted.neuron_layers))
    assert 0.9 * STATE_LIMIT < worst < STATE_LIMIT
    assert min(weight_bits(layer).min() for _, layer in fitted.neuron_layers) < 7.5


def test_input_scales_halve_down_to_4_bit_inputs():
    assert input_scales(255) == [255.0, 127.5, 63.75, 31.875, 15.9375]
    assert input_scales(16) == [16.0] and input_scales(1) == [1.0]


@pytest.mark.e2e
def test_an_8_bit_digits_mlp_records_its_grid_and_exports_without_a_flag(tmp_path, caplog):
    """K = 255 input steps overflow the first layer's finest grid: after LSQ training the trainer takes the best grid
    that fits, says so and records it; qffs-export writes that network, no flag, with or without the
    hardware-exact phase, and with it the network exported is the network trained."""
    caplog.set_level(logging.INFO, logger="qffs_lava")
    lsq = train("digits", "mlp", out=tmp_path / "lsq.pt", float_epochs=1, qat_epochs=1, hardware_epochs=0,
                act_bits=8, out_bits=8, progress=False)
    grid = lsq["grid"]
    assert grid["input_scale"] == 16.0 and grid["scaled"]["act1"]["weight_bits"] < 8
    assert grid["validation_images"] == 135 and 0 <= grid["agreement"] <= 1
    line = [m for m in caplog.messages if m.startswith("grid: ")]
    assert len(line) == 1 and "act1 (" in line[0] and "agreement with the unconstrained integer network" in line[0]
    network = export(tmp_path / "lsq.pt", tmp_path / "lsq.h5", samples=100)
    assert network.input.input_scale == grid["input_scale"] and loihi_problems(network) == []
    assert network.meta["qann_forward"] == "LSQ, float weights" and network.meta["loihi_ranges"] is True

    tuned = train("digits", "mlp", out=tmp_path / "hw.pt", init=str(tmp_path / "lsq.pt"), float_epochs=0,
                  qat_epochs=0, hardware_epochs=1, **QUIET)
    assert tuned["grid"] == grid  # the same choice for the same LSQ model
    network = export(tmp_path / "hw.pt", tmp_path / "hw.h5")
    assert loihi_problems(network) == [] and network.meta["qann_forward"] == "hardware-exact"
    assert network.meta["qann_agreement"] == 1.0 and network.meta["int_qann_accuracy"] == tuned["accuracy"]["qann"]


class _Validation:
    """What choose_grid needs of a training Session: the validation split in batches and a device."""

    def __init__(self, x, y):
        self.splits, self.device = type("Splits", (), {"validation": (x, y)}), torch.device("cpu")

    def batches(self, dataset):
        return [dataset]


def test_the_grid_chosen_is_the_one_that_agrees_best_with_the_unconstrained_network(caplog):
    """Of the input scales, each with its channels capped, the choice is the candidate whose integer network agrees
    best with the unconstrained one (measured here again), and its record says so: here a coarser input scale."""
    arch, model = random_model(2, 3, 8, 5, 4, 6, 3, True, (1.0, 3.0, 0.3, False))
    x = torch.as_tensor(np.random.default_rng(0).integers(0, 256, (200, 3, 8, 8)) / 255.0)
    with torch.no_grad():
        reference = TorchNetwork(IntegerModel(model, arch, 255, NORM, fit=False).network()[0]).qann(x).argmax(1)
        agreements = [float((TorchNetwork(IntegerModel(model, arch, 255, NORM, s).network()[0]).qann(x).argmax(1)
                             == reference).double().mean()) for s in input_scales(255)]
    session = _Validation(x, torch.zeros(200, dtype=torch.int64))
    caplog.set_level(logging.INFO, logger="qffs_lava")
    record = choose_grid(session, model, arch, 255, NORM)
    assert record is not None and record["validation_images"] == 200
    best = input_scales(255).index(record["input_scale"])
    assert record["agreement"] == agreements[best] == max(agreements)
    assert agreements.index(max(agreements)) == best > 0  # the finer on ties
    assert len(caplog.messages) == 1 and f"input scale {record['input_scale']:g}" in caplog.messages[0]


def test_the_recorded_input_scale_is_the_exported_one(digits_model_file, tmp_path):
    """A model file's grid record is what qffs-export uses; one that is not a scale is refused by name."""
    content, model = load_model_file(digits_model_file)
    network = convert({**content, "grid": {"input_scale": 8.0}}, model)
    assert network.input.input_scale == 8.0 and loihi_problems(network) == []
    with pytest.raises(QffsError, match="grid records the input scale 'x'"):
        convert({**content, "grid": {"input_scale": "x"}}, model)


def gray_folder(path, side=8, classes=3, per_class=8):
    """An image folder of `side` x `side` greyscale ("L") PNGs, which ImageFolder reads as RGB: 3 side^2 inputs."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for label in range(classes):
            folder = path / "imgs" / split / f"c{label}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 60, (side, side))
                pixels[label * side // classes:(label + 1) * side // classes] += 190
                Image.fromarray(pixels.astype(np.uint8), "L").save(folder / f"{i}.png")
    return path / "imgs"


def test_a_network_no_grid_fits_is_refused_before_the_first_epoch(tmp_path):
    """192 inputs of 8-bit images at 8-bit activations: even 4-bit weights of one sign at the coarsest input overflow
    the membrane, so training refuses at once, naming the bits that would fit; nothing is written."""
    folder = gray_folder(tmp_path)
    with pytest.raises(ParameterError, match=r"act 'act1' cannot fit .* 192 inputs .* \(act_bits=7\)"):
        train("folder:" + str(folder), "mlp", out=tmp_path / "m.pt", input_size=8, act_bits=8, out_bits=8, **QUIET)
    assert not list(tmp_path.glob("m.*"))
    check_fit(make_arch("mlp", (3, 8, 8), 3, 7, 8), 255)  # 7 bits fit
    with pytest.raises(ParameterError, match="act_bits=7"):
        check_fit(make_arch("mlp", (3, 8, 8), 3, 8, 8), 255)


def test_the_exporter_still_refuses_a_network_outside_loihi_2(tmp_path, digits_model_file, monkeypatch, caplog):
    """The exporter's check stays: a network that left the ranges (here one made to) is refused, or written with a
    warning under loihi_check=False."""
    from qffs_export import exporter

    weight = np.full((2, 200), 254, dtype=np.int64)
    overflowing = Network([InputLayer((200,), 255.0), NeuronLayer((2,), (DenseSynapse(weight),), np.zeros(2, np.int64),
                                                                   Neurons(np.array([9, 9]), np.array([4, 4]), 3, 3))],
                          {"layer_names": ["input", "out"]})
    monkeypatch.setattr(exporter, "convert", lambda content, model: overflowing)
    with pytest.raises(QffsError, match=r"layer 1: worst-case \|v\| \d+ is not below 2\^23"):
        export(digits_model_file, tmp_path / "n.h5", samples=0)
    assert not (tmp_path / "n.h5").exists()
    export(digits_model_file, tmp_path / "n.h5", samples=0, loihi_check=False)
    assert any(r.levelno == logging.WARNING and r.getMessage().startswith("layer 1: worst-case |v|")
               for r in caplog.records)
    assert read_net(tmp_path / "n.h5").meta["loihi_ranges"] is False


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_nothing_spikes_after_the_settling_steps(seed, kind):
    """Network.settling_steps bounds when the SNN settles: from then on no layer spikes, and the counts are the
    closed form's."""
    network = random_network(np.random.default_rng(seed), kind, bits=int(np.random.default_rng(seed).integers(1, 4)))
    net = TorchNetwork(network)
    x = np.random.default_rng(seed + 100).random((8, *network.input.shape))
    steps = network.settling_steps
    run = net.simulate(x, steps + 4, "sync", record_spikes=True)
    assert all(not spikes[steps:].any() for spikes in run.spikes)
    assert torch.equal(run.output_counts[steps - 1], net.qann(x))


def test_the_recorded_membrane_peak_is_the_largest_v_and_within_the_worst_case():
    """One neuron over two inputs: v = vInit + 3 (254 * 16 - 100 * 16) before its spikes, by hand."""
    weight = np.array([[254, -100]], dtype=np.int64)
    network = Network([InputLayer((2,), 16.0), NeuronLayer((1,), (DenseSynapse(weight),), np.array([0]),
                                                           Neurons(np.array([1000]), np.array([500]), 7, 3))])
    peaks = TorchNetwork(network).membrane_peaks(np.array([[1.0, 1.0], [0.5, 0.0]]))
    # step 1: v = 500 + 2464 = 2964 fires (z 1, v 1964); step 2: 4428 fires; step 3: 5892 is the peak
    assert peaks == {1: 5892}
    low, high = membrane_bounds(network, 1, count_bounds(network))
    assert peaks[1] <= max(-low, high)


def inspect(path) -> str:
    """What qffs-inspect prints for a net file (its main, in this process)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert inspect_main([str(path)]) in (0, None)
    return out.getvalue()


def test_export_stores_the_membrane_peaks_and_inspect_shows_them(digits_net, tmp_path):
    network = read_net(digits_net)
    peaks = network.meta["membrane_peak"]
    bounds = count_bounds(network)
    names = network.meta["layer_names"]
    for i, _ in network.neuron_layers:
        low, high = membrane_bounds(network, i, bounds)
        assert 0 < peaks[names[i]] <= max(-low, high)
    shown = inspect(digits_net)
    assert "membrane |v| per neuron layer" in shown and f"{peaks[names[-1]]:,}" in shown
    old = inspect(Path(__file__).parent / "data/v1/v1_digits_mlp.h5")  # an earlier file: the worst case only
    assert "seen: not measured" in old and "membrane |v| per neuron layer" in old
