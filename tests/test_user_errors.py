"""What a new user trips over: each bad input gets one clear line and exit code 2, and loses nothing."""

import gzip
import os
import shutil
import stat

import h5py
import numpy as np
import pytest
import torch
from commands import assert_refused, cli

import qffs_lava as qffs
from qffs_lava.ann.datasets import load_dataset
from qffs_lava.ann.modelfile import save_model_file
from qffs_lava.errors import DatasetNotFound, QffsError, QffsFormatError
from qffs_lava.fileio import write_atomically
from qffs_lava.ir.netfile import read_net


# 2. Errors that say what is wrong -----------------------------------------------------------------


def test_export_says_what_a_wrong_model_file_is(tmp_path, digits_net):
    png = tmp_path / "plot.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    text = tmp_path / "notes.txt"
    text.write_text("my notes\n")
    cases = [(digits_net, "is an HDF5 file (a net.h5?), not a PyTorch model file"),
             (digits_net, "did you swap the arguments?"),
             (png, "is not a PyTorch model file: it is a PNG image"),
             (text, "is not a PyTorch model file: it is a text file")]
    for path, message in cases:
        assert_refused(cli("qffs-export", path, tmp_path / "out.h5"), message)
        assert not (tmp_path / "out.h5").exists()


def test_an_unsafe_model_file_names_what_it_holds_in_whole_words(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())

    path = tmp_path / "evil.pt"
    torch.save({"x": Payload()}, path)
    result = cli("qffs-export", path, tmp_path / "out.h5")
    assert_refused(result, "needs arbitrary unpickling, which could run code (Unsupported class posix.getcwd)")


def test_run_says_what_wrong_inputs_and_labels_are(tmp_path, digits_net):
    text = tmp_path / "notes.txt"
    text.write_text("1 2 3\n")
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((3, 1, 8, 8)))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    labels = {"outside": [1, 2, 10], "fractional": [1.5, 2, 0], "onehot": np.eye(10)[[1, 2, 3]],
              "negative": [0, -1, 2], "text": ["a", "b", "c"], "short": [1, 2]}
    for name, value in labels.items():
        np.save(tmp_path / f"{name}.npy", np.array(value))
    cases = [
        (["--inputs", text], "--inputs " + str(text) + " is not a .npy file: it is a text file"),
        (["--inputs", tmp_path / "objects.npy"], "holds Python objects, not numbers"),
        (["--inputs", x, "--labels", text], "--labels " + str(text) + " is not a .npy file"),
        (["--inputs", x, "--labels", tmp_path / "outside.npy"], "class indices 0..9 (the network has 10 outputs); "
                                                                 "labels[2] is 10"),
        (["--inputs", x, "--labels", tmp_path / "negative.npy"], "labels[1] is -1"),
        (["--inputs", x, "--labels", tmp_path / "fractional.npy"], "whole numbers (class indices)"),
        (["--inputs", x, "--labels", tmp_path / "onehot.npy"], "labels are one-hot (3, 10)"),
        (["--inputs", x, "--labels", tmp_path / "text.npy"], "whole numbers (class indices), got dtype <U1"),
        (["--inputs", x, "--labels", tmp_path / "short.npy"], "2 labels for 3 inputs"),
        (["--inputs", tmp_path / "missing.npy"], "does not exist"),
    ]
    for args, message in cases:
        assert_refused(cli("qffs-run", digits_net, *args, "--quiet"), message)
    whole = tmp_path / "whole.npy"
    np.save(whole, np.array([1.0, 2.0, 3.0]))  # integer-valued floats are class indices too
    assert cli("qffs-run", digits_net, "--inputs", x, "--labels", whole, "--quiet", "--steps", "4").returncode == 0


def test_counts_state_one_rule(tmp_path, digits_net):
    for value in ("-3", "0", "two"):
        assert_refused(cli("qffs-run", digits_net, "--dataset", "digits", "--steps", value),
                       f"argument --steps: must be an integer >= 1 or auto, got '{value}'")
        assert_refused(cli("qffs-run", digits_net, "--dataset", "digits", "--samples", value),
                       f"argument --samples: must be an integer >= 1, got '{value}'")
    for option in ("--float-epochs", "--qat-epochs", "--hardware-epochs"):
        assert_refused(cli("qffs-train", "--dataset", "digits", "--arch", "mlp", "--out", tmp_path / "m.pt",
                           option, "-1"), f"argument {option}: must be an integer >= 0, got '-1'")
    assert_refused(cli("qffs-train", "--dataset", "digits", "--arch", "mlp", "--out", tmp_path / "m.pt",
                       "--validation", "0.9"), "--validation: must be a share of the training split in [0, 0.5]")
    assert_refused(cli("qffs-export", "m.pt", "n.h5", "--samples", "-1"),
                   "argument --samples: must be an integer >= 0, got '-1'")


def test_arch_names_a_built_in_or_a_function_that_builds_a_module(tmp_path):
    out = ("--dataset", "digits", "--out", tmp_path / "m.pt", "--float-epochs", "1", "--qat-epochs", "1")
    assert_refused(cli("qffs-train", "--arch", "lenet5", *out),
                   "'lenet5' is neither a built-in architecture (mlp, lenet")
    assert_refused(cli("qffs-train", "--arch", "no_such_package.models:build", *out),
                   "--arch no_such_package.models:build: cannot import no_such_package.models: ModuleNotFoundError")
    assert_refused(cli("qffs-train", "--arch", "torch.nn:no_such_model", *out),
                   "--arch torch.nn:no_such_model: torch.nn has no function or class 'no_such_model'")
    assert_refused(cli("qffs-train", "--arch", "torchvision:resnet_99", *out),
                   "torchvision.models has no model 'resnet_99'")
    assert_refused(cli("qffs-train", "--arch", "torch.nn:Tanh", *out),
                   "--arch torch.nn:Tanh: calling it with {'num_classes': 10, 'in_channels': 1} failed: TypeError")
    assert_refused(cli("qffs-train", "--arch", "examples/custom_resnet.py:SmallResNet", "--small-input-stem", *out),
                   "--small-input-stem is for torchvision's ResNets, not examples/custom_resnet.py:SmallResNet")
    assert not (tmp_path / "m.pt").exists()


def test_fewer_steps_than_the_input_window_are_refused(digits_net):
    """The library names its parameter, the command line its flag."""
    assert_refused(cli("qffs-run", digits_net, "--dataset", "digits", "--steps", "2"),
                   "--steps 2: T must cover the network's K = 3 steps")
    with pytest.raises(QffsError, match="^steps=2: T must cover the network's K = 3 steps"):
        qffs.run(digits_net, load_dataset("digits", "test")[0][:4], steps=2)
    assert cli("qffs-run", digits_net, "--dataset", "digits", "--steps", "3", "--quiet").returncode == 0


def test_the_qann_backend_reports_no_time_step(digits_net):
    result = cli("qffs-run", digits_net, "--dataset", "digits", "--backend", "qann", "--steps", "8")
    assert result.returncode == 0, result.stderr
    assert "t = " not in result.stdout and "QANN accuracy" in result.stdout


@pytest.mark.e2e  # imports lava-dl's slayer
def test_a_lava_dl_netx_file_of_other_neurons_is_named(tmp_path, seed):
    import lava.lib.dl.slayer as slayer

    torch.manual_seed(seed)
    blocks = [slayer.block.cuba.Dense({"threshold": 1.25, "current_decay": 0.25, "voltage_decay": 0.03}, 4, 3)]
    blocks[0](torch.rand(1, 4, 5))  # netx export needs the neuron shape, known after one forward pass
    with h5py.File(tmp_path / "cuba.h5", "w") as f:
        blocks[0].export_hdf5(f.create_group("layer").create_group("0"))
    with pytest.raises(QffsFormatError,
                       match=r"a lava-dl netx network of CUBA neurons \(no group 'meta'\), not a QFFS network"):
        read_net(tmp_path / "cuba.h5")


# 3. Never overwrite an input -----------------------------------------------------------------------


def test_no_command_writes_over_its_input(tmp_path, digits_model_file, digits_net):
    model = tmp_path / "model.pt"
    shutil.copy(digits_model_file, model)
    net = tmp_path / "net.h5"
    shutil.copy(digits_net, net)
    os.link(model, tmp_path / "hardlink.pt")
    before = model.read_bytes(), net.read_bytes()
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 1, 8, 8)))
    cases = [
        (cli("qffs-export", model, model), "net " + str(model) + " is the same file as model"),
        (cli("qffs-export", model, "hardlink.pt", cwd=tmp_path), "is the same file as model"),
        (cli("qffs-export", "model.pt", "./model.pt", cwd=tmp_path), "is the same file as model"),
        (cli("qffs-train", "--dataset", "digits", "--arch", "mlp", "--init", model, "--out", model,
             "--float-epochs", "0"), "--out " + str(model) + " is the same file as --init"),
        (cli("qffs-run", net, "--dataset", "digits", "--json", net), "--json " + str(net) + " is the same file as net"),
        (cli("qffs-run", net, "--inputs", x, "--plot", x), "is the same file as --inputs"),
        (cli("qffs-run", net, "--dataset", "digits", "--json", tmp_path / "r", "--plot", tmp_path / "r"),
         "is the same file as --json"),
    ]
    for result, message in cases:
        assert_refused(result, message)
    assert (model.read_bytes(), net.read_bytes()) == before


# 4. File permissions -------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_files_get_the_mode_open_gives_them(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_atomically(tmp_path / "new.json", b"{}")
        with open(tmp_path / "plain.json", "w") as f:
            f.write("{}")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "new.json").stat().st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode)


def test_a_replaced_file_keeps_its_mode(tmp_path):
    path = tmp_path / "net.h5"
    path.write_text("old")
    path.chmod(0o640)
    write_atomically(path, b"new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.e2e
def test_every_command_writes_files_others_can_read(tmp_path, digits_model_file):
    old = os.umask(0o022)
    try:
        assert cli("qffs-train", "--dataset", "digits", "--arch", "mlp", "--out", tmp_path / "m.pt",
                   "--float-epochs", "1", "--qat-epochs", "1", "--quiet").returncode == 0
        assert cli("qffs-export", digits_model_file, tmp_path / "n.h5", "--samples", "50").returncode == 0
        assert cli("qffs-run", tmp_path / "n.h5", "--dataset", "digits", "--samples", "20", "--steps", "4",
                   "--json", tmp_path / "r.json", "--plot", tmp_path / "r.png", "--quiet").returncode == 0
    finally:
        os.umask(old)
    for name in ("m.pt", "n.h5", "r.json", "r.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


# 5. Datasets a user brings -------------------------------------------------------------------------


def test_missing_dataset_names_the_folder_and_files(tmp_path):
    with pytest.raises(DatasetNotFound) as err:
        load_dataset("fashionmnist", "test", tmp_path)
    message = str(err.value)
    assert f"{tmp_path}/FashionMNIST/raw/ must hold train-images-idx3-ubyte, train-labels-idx1-ubyte, " \
           "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte" in message
    assert "gzipped files (NAME.gz) there are decompressed" in message and "make data" in message
    assert "python -m qffs_lava.ann.datasets fetch fashionmnist" in message


@pytest.mark.e2e
def test_torchvisions_gzipped_files_are_read(tmp_path, mnist_dir):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte",
                 "train-labels-idx1-ubyte"):
        with open(mnist_dir / "MNIST" / "raw" / name, "rb") as src, gzip.open(raw / f"{name}.gz", "wb", 1) as dst:
            shutil.copyfileobj(src, dst)
    x, y = load_dataset("mnist", "test", tmp_path)
    want_x, want_y = load_dataset("mnist", "test", mnist_dir)
    assert torch.equal(x, want_x) and torch.equal(y, want_y)
    assert (raw / "t10k-images-idx3-ubyte").is_file()  # decompressed once, beside the .gz


def test_export_needs_no_dataset_with_samples_0(tmp_path):
    from tiny import tiny_model

    content, model = tiny_model()
    save_model_file(tmp_path / "m.pt", model, {**content, "dataset": "fashionmnist"})
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_refused(cli("qffs-export", tmp_path / "m.pt", tmp_path / "n.h5", "--data-dir", empty, "--samples", "5"),
                   "fashionmnist not found")
    result = cli("qffs-export", tmp_path / "m.pt", tmp_path / "n.h5", "--data-dir", empty, "--samples", "0")
    assert result.returncode == 0, result.stderr
    assert "fidelity not measured (0 test samples)" in result.stdout
    assert read_net(tmp_path / "n.h5").meta["fidelity_samples"] == 0


# 7. Busy machines ----------------------------------------------------------------------------------


def test_threads_option_sets_pytorchs_threads(digits_net, monkeypatch):
    chosen = []
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    result = cli("qffs-run", digits_net, "--dataset", "digits", "--steps", "4", "--threads", "1", "--quiet")
    assert result.returncode == 0
    assert chosen[0] == 1
    assert_refused(cli("qffs-run", digits_net, "--dataset", "digits", "--threads", "0"),
                   "argument --threads: must be an integer >= 1, got '0'")
