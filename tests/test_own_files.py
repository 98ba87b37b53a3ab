"""What a new user meets with a model of their own, their own files and a full disk (issue 26): each test runs the
user's command and checks what it now prints and exits with."""

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from commands import assert_refused, cli

from qffs_lava.ann.datasets import RAW_MD5, load_dataset
from qffs_lava.ann.modelfile import read_model_file, save_model_file
from qffs_lava.cli import inspect_main, run_main
from qffs_lava.errors import QffsError
from qffs_lava.ir.netfile import read_net


# 3. --arch and --init -------------------------------------------------------------------------------


def test_an_arch_that_contradicts_the_init_model_file_is_refused(digits_model_file, tmp_path):
    result = cli("qffs-train", "--dataset", "digits", "--arch", "lenet", "--init", digits_model_file,
                 "--float-epochs", "0", "--qat-epochs", "1", "--out", tmp_path / "m.pt", "--quiet")
    assert_refused(result, f"--init {digits_model_file} is a model file of the architecture 'mlp', which it brings "
                           "with it; --arch 'lenet' contradicts it: give --arch mlp")
    assert not (tmp_path / "m.pt").exists()


# 8. Nothing changes silently; 10. the report says which time it is in ---------------------------------


def test_more_samples_than_the_split_holds_are_said(digits_net):
    result = cli("qffs-run", digits_net, "--dataset", "digits", "--samples", "10000", "--steps", "4", "--quiet",
                 "--backend", "qann")
    assert result.returncode == 0, result.stderr
    assert "note: 10000 samples asked for, but digits test split has 450; running all 450" in result.stderr
    assert "450 samples" in result.stdout


def test_a_mode_the_backend_does_not_run_is_refused(digits_net):
    assert_refused(cli("qffs-run", digits_net, "--dataset", "digits", "--backend", "lava", "--mode", "sync"),
                   "--mode sync: the lava backend runs pipelined only")
    assert_refused(cli("qffs-run", digits_net, "--dataset", "digits", "--backend", "qann", "--mode", "pipelined"),
                   "--mode pipelined: the qann backend has no time steps")


def test_workers_without_a_backend_that_has_them_is_refused(digits_net):
    assert_refused(cli("qffs-run", digits_net, "--dataset", "digits", "--workers", "3"),
                   "--workers 3 is for backends that run in worker processes (lava, lava-float, loihi2); the "
                   "torch backend does not")


def test_the_report_says_which_time_it_is_in_and_what_was_not_reached(digits_net):
    synchronous = cli("qffs-run", digits_net, "--dataset", "digits", "--samples", "20", "--steps", "3", "--quiet")
    pipelined = cli("qffs-run", digits_net, "--dataset", "digits", "--samples", "20", "--steps", "3", "--quiet",
                    "--mode", "pipelined")
    assert "synchronous time: within a step every layer sees" in synchronous.stdout
    assert "pipelined time, as Lava and Loihi 2 run it" in pipelined.stdout and "D = 3" in pipelined.stdout
    assert "SNN == QANN on every sample: not reached by t = 3" in synchronous.stdout
    assert "from step (not reached" not in synchronous.stdout


@pytest.mark.e2e
def test_an_ablation_plot_names_the_ablation(digits_net, tmp_path, monkeypatch):
    import matplotlib.axes

    labels = []
    original = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot",
                        lambda self, *args, **kwargs: labels.append(kwargs.get("label")) or original(self, *args,
                                                                                                     **kwargs))
    result = cli("qffs-run", digits_net, "--dataset", "digits", "--samples", "20", "--steps", "4", "--quiet",
                 "--ablate", "precharge", "--plot", tmp_path / "p.png")
    assert result.returncode == 0, result.stderr
    assert labels and all(label == "torch without precharge" for label in labels)


# 1. The export rule before any epoch; 5. one-line errors before training; 6. the user's own ops -------

MODELS = Path(__file__).resolve().parent / "data" / "user_models.py"


def train_user_model(name, out, *extra):
    return cli("qffs-train", "--dataset", "digits", "--arch", f"{MODELS}:{name}", "--out", out, "--float-epochs",
               "2", "--qat-epochs", "2", "--hardware-epochs", "1", "--quiet", *extra)


@pytest.mark.parametrize("name, message", [
    ("ConvConv", "conv 'c1' (on the path of 'c2' into act 'relu') cannot be converted"),
    ("AddIntoPool", "maxpool 'pool' reads add 'add', which is not a spiking output"),
    ("ThreeChannels", "it does not run on inputs of shape (N, 1, 8, 8): Given groups=1, weight of size [8, 3, 3, 3], "
                      "expected input[2, 1, 8, 8] to have 3 channels, but got 1 channels instead"),
    ("Seven", "the model returns 7 values per sample, but digits has 10 classes: build it with num_classes=10"),
    ("Relu6", "this module is not supported; use nn.ReLU (the quantizer clips at the top already)"),
])
def test_a_model_that_cannot_be_converted_is_refused_before_any_epoch(name, message, tmp_path):
    result = train_user_model(name, tmp_path / "m.pt")
    assert_refused(result, message)
    assert "epoch" not in result.stdout and not (tmp_path / "m.pt").exists()


@pytest.mark.e2e
def test_a_max_pool_before_its_relu_is_converted_after_it_and_said(tmp_path):
    result = train_user_model("PoolBeforeRelu", tmp_path / "m.pt")
    assert result.returncode == 0, result.stderr
    assert "note: max pool 'pool' reads conv 'c2' and feeds ReLU 'relu_1': converted as conv -> ReLU -> max pool" \
        in result.stdout
    assert_exports_exactly(tmp_path)


@pytest.mark.e2e
def test_an_average_pool_after_a_conv_folds_into_it_and_is_said(tmp_path):
    result = train_user_model("AvgPoolBeforeRelu", tmp_path / "m.pt")
    assert result.returncode == 0, result.stderr
    assert "note: average pool 'avg_pool2d' follows conv 'c1' into ReLU 'relu': converted as one conv of kernel " \
           "4x4, stride 2x2" in result.stdout
    assert "note: average pool 'pool' follows conv 'c2' into ReLU 'relu_1': converted as one conv of kernel 5x5, " \
           "stride 1x1" in result.stdout
    assert_exports_exactly(tmp_path)
    assert [layer.synapses[0].kernel_size for layer in read_net(tmp_path / "m.h5").layers[1:3]] == [(4, 4), (5, 5)]
    run = cli("qffs-run", tmp_path / "m.h5", "--dataset", "digits", "--backend", "qann", "--quiet")
    assert run.returncode == 0 and f"{100 * read_model_file(tmp_path / 'm.pt')['accuracy']['qann']:.2f}%" in run.stdout


@pytest.mark.e2e
def test_functional_pools_and_any_batchnorm_eps_are_converted(tmp_path):
    assert train_user_model("Functional", tmp_path / "m.pt").returncode == 0
    nodes = read_model_file(tmp_path / "m.pt")["arch"]["nodes"]
    assert [n["op"] for n in nodes if "pool" in n["op"]] == ["maxpool", "avgpool"]
    assert next(n for n in nodes if n["op"] == "batchnorm")["eps"] == pytest.approx(1e-3)
    assert_exports_exactly(tmp_path)


def assert_exports_exactly(folder):
    """qffs-export agrees with the trained QANN on every test image, and the SNN settles at it."""
    assert cli("qffs-export", folder / "m.pt", folder / "m.h5").returncode == 0
    assert read_net(folder / "m.h5").meta["qann_agreement"] == 1.0
    run = cli("qffs-run", folder / "m.h5", "--dataset", "digits", "--steps", "16", "--quiet")
    assert "SNN == QANN on every sample from step t = " in run.stdout


# 7. Files ---------------------------------------------------------------------------------------------


def test_a_truncated_dataset_file_is_called_damaged_not_missing(tmp_path, mnist_dir):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in RAW_MD5["mnist"]:
        shutil.copy(mnist_dir / "MNIST" / "raw" / name, raw / name)
    with open(raw / "t10k-images-idx3-ubyte", "r+b") as f:
        f.truncate(5000)
    result = cli("qffs-run", MODELS, "--dataset", "mnist", "--data-dir", tmp_path)  # any file: the data fail first
    with pytest.raises(QffsError, match=r"mnist: t10k-images-idx3-ubyte in .* \(wrong MD5 sums\) cannot be read, "
                                        r"damaged or truncated .* delete them and fetch them again: `python -m "
                                        r"qffs_lava.ann.datasets fetch mnist --data-dir"):
        load_dataset("mnist", "test", tmp_path)
    assert result.returncode == 2


def test_export_offers_the_fixes_it_has(tmp_path):
    from tiny import tiny_model

    content, model = tiny_model()
    save_model_file(tmp_path / "m.pt", model, {**content, "dataset": "mnist"})
    result = cli("qffs-export", tmp_path / "m.pt", tmp_path / "n.h5", "--data-dir", tmp_path / "none")
    assert_refused(result, "To get it: `python -m qffs_lava.ann.datasets fetch mnist --data-dir ")
    assert "; or give the folder that holds it as --data-dir; or export without measuring fidelity: --samples 0" \
        in result.stderr
    assert "--download" not in result.stderr and not (tmp_path / "n.h5").exists()
    assert result.stdout == ""  # the data is looked for before the layer table is printed


@pytest.mark.parametrize("command", ["qffs-run", "qffs-inspect"])
def test_a_model_file_given_for_a_net_file_is_named(command, digits_model_file, capsys):
    args = [str(digits_model_file)] + (["--dataset", "digits"] if command == "qffs-run" else [])
    main = {"qffs-run": run_main, "qffs-inspect": inspect_main}[command]
    assert main(args) == 2
    assert f"{digits_model_file} is a zip archive, as a PyTorch model file is, not a net file: run `qffs-export " \
           f"{digits_model_file} NET.h5` first" in capsys.readouterr().err


def test_a_folder_given_for_a_model_file_is_called_a_folder(tmp_path):
    assert_refused(cli("qffs-export", tmp_path, tmp_path / "n.h5"), f"{tmp_path} is a folder, not a model file")


@pytest.mark.parametrize("suffix, head", [(".pdf", b"%PDF"), (".svg", b"<?xml"), (".jpg", b"\xff\xd8\xff"),
                                          (".png", b"\x89PNG")])
@pytest.mark.e2e
def test_a_plot_is_written_in_the_format_its_suffix_names(suffix, head, digits_net, tmp_path):
    plot = tmp_path / f"p{suffix}"
    result = cli("qffs-run", digits_net, "--dataset", "digits", "--samples", "20", "--steps", "4", "--quiet",
                 "--plot", plot)
    assert result.returncode == 0, result.stderr
    assert plot.read_bytes().startswith(head)


def test_a_plot_suffix_that_names_no_image_format_is_refused_before_the_run(digits_net, tmp_path):
    result = cli("qffs-run", digits_net, "--dataset", "digits", "--steps", "4", "--plot", tmp_path / "p.txt")
    assert_refused(result, f"--plot {tmp_path / 'p.txt'}: name the image format by the suffix, one of .png, .pdf")
    assert "backend" not in result.stdout


# 4. A float model trained elsewhere on normalized inputs ------------------------------------------------

MEAN, STD = 0.3, 0.4


def user_mlp():
    sys.path.insert(0, str(MODELS.parent))
    try:
        from user_models import Mlp
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)
    return Mlp()


def float_model_trained_on_normalized_digits(path):
    """What a user brings: a model trained in plain PyTorch on (x - MEAN) / STD, its state dict saved."""
    model, (x, y) = user_mlp(), load_dataset("digits", "train")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model((x - MEAN) / STD), y).backward()
        optimizer.step()
    torch.save(model.state_dict(), path)


@pytest.mark.e2e
def test_an_input_normalization_is_declared_recorded_and_folded(tmp_path):
    float_model_trained_on_normalized_digits(tmp_path / "float.pt")
    common = ["--dataset", "digits", "--arch", f"{MODELS}:Mlp", "--init", tmp_path / "float.pt", "--float-epochs",
              "0", "--qat-epochs", "3", "--hardware-epochs", "1", "--quiet"]
    undeclared = cli("qffs-train", *common, "--out", tmp_path / "raw.pt")
    assert undeclared.returncode == 0 and "float accuracy 84.22%" in undeclared.stdout  # the raw inputs' accuracy

    declared = cli("qffs-train", *common, "--input-norm", f"{MEAN},{STD}", "--out", tmp_path / "m.pt")
    assert declared.returncode == 0, declared.stderr
    content = read_model_file(tmp_path / "m.pt")
    assert content["accuracy"]["float"] > 0.9 and "near chance" not in declared.stdout
    assert content["input_norm"] == {"mean": [MEAN], "std": [STD]} and content["train"]["input_norm"] == [MEAN, STD]
    assert_exports_exactly(tmp_path)  # folded: the net takes raw dataset values
    assert read_net(tmp_path / "m.h5").meta["input_normalization"] == {"mean": [MEAN], "std": [STD]}
    assert_refused(cli("qffs-train", *common, "--input-norm", "0.5,-1", "--out", tmp_path / "x.pt"),
                   "--input-norm: an input normalization's standard deviations must be positive")
    assert_refused(cli("qffs-train", "--dataset", "digits", "--arch", f"{MODELS}:Mlp", "--init", tmp_path / "m.pt",
                       "--float-epochs", "0", "--qat-epochs", "0", "--input-norm", "0,1", "--out", tmp_path / "y.pt"),
                   f"--input-norm [0.0, 1.0] contradicts --init {tmp_path / 'm.pt'}")


def test_an_init_model_near_chance_draws_a_warning(tmp_path):
    """An untrained state dict stands for one whose inputs were normalized otherwise: near chance, said so."""
    torch.save(user_mlp().state_dict(), tmp_path / "float.pt")
    result = cli("qffs-train", "--dataset", "digits", "--arch", f"{MODELS}:Mlp", "--init", tmp_path / "float.pt",
                 "--float-epochs", "0", "--qat-epochs", "1", "--hardware-epochs", "0", "--quiet", "--out",
                 tmp_path / "m.pt")
    assert result.returncode == 0, result.stderr
    assert "near chance (10%): was it trained on normalized inputs? Declare them with input_norm (--input-norm " \
           "MEAN,STD)" in result.stdout


# 2. A full disk ------------------------------------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path):
    """(folder, limit): a folder whose file system is full, holding old.h5 and old.json as a user's earlier files.

    A small tmpfs is mounted there and filled where the machine allows it (root, CAP_SYS_ADMIN); limit is then
    None. Elsewhere the folder is plain and limit is a file-size limit (RLIMIT_FSIZE) the commands run under,
    which makes their writes fail the same way (EFBIG instead of ENOSPC)."""
    folder = tmp_path / "full"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    try:
        (folder / "old.h5").write_bytes(b"old net")
        (folder / "old.json").write_bytes(b"{}")
        if mounted:
            with open(folder / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
                while True:
                    f.write(bytes(4096))
        yield folder, None if mounted else 2048
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=True)


def run_on_full_disk(limit, command, *args):
    """The command as a user runs it (its console script's main): on a full file system in this process; under a
    file-size limit in a process of its own, which the limit then holds alone."""
    if limit is None:
        return cli(command, *args)
    module, main = {"qffs-train": ("qffs_lava.cli", "train_main"), "qffs-export": ("qffs_export.cli", "export_main"),
                    "qffs-run": ("qffs_lava.cli", "run_main")}[command]
    code = (f"import resource, signal, sys; limit = {limit!r}\n"
            "if limit: signal.signal(signal.SIGXFSZ, signal.SIG_IGN); resource.setrlimit(resource.RLIMIT_FSIZE, "
            "(limit, limit))\n"
            f"from {module} import {main}; sys.exit({main}())")
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=600)


def assert_write_refused(result, path, folder, limit):
    reason = "File too large" if limit else "No space left on device"
    assert_refused(result, f"error: cannot write {path}: {reason} (")
    assert "Segmentation" not in result.stderr and "HDF5" not in result.stderr
    assert sorted(p.name for p in folder.iterdir() if p.name != "filler") == ["old.h5", "old.json"]  # no .tmp
    assert (folder / "old.h5").read_bytes() == b"old net" and (folder / "old.json").read_bytes() == b"{}"


@pytest.mark.e2e
def test_export_to_a_full_disk_says_so_and_leaves_the_old_file(full_disk, digits_model_file):
    folder, limit = full_disk
    result = run_on_full_disk(limit, "qffs-export", digits_model_file, folder / "old.h5", "--samples", "0")
    assert_write_refused(result, folder / "old.h5", folder, limit)
    assert "the file already there is as it was" in result.stderr


@pytest.mark.e2e
def test_run_reports_to_a_full_disk_say_so(full_disk, digits_net):
    folder, limit = full_disk
    for option, name in (("--json", "old.json"), ("--plot", "new.png")):
        result = run_on_full_disk(limit, "qffs-run", digits_net, "--dataset", "digits", "--steps", "4", "--quiet",
                                  option, folder / name)
        assert_write_refused(result, folder / name, folder, limit)


@pytest.mark.e2e
def test_a_trained_model_is_never_lost_to_a_full_disk(full_disk):
    folder, limit = full_disk
    result = run_on_full_disk(limit, "qffs-train", "--dataset", "digits", "--arch", "mlp", "--float-epochs", "2",
                              "--qat-epochs", "2", "--hardware-epochs", "0", "--quiet", "--out", folder / "m.pt")
    assert_write_refused(result, folder / "m.pt", folder, limit)
    if limit:  # a file-size limit holds everywhere: nowhere to keep it, and it says so
        assert "the trained model could not be kept anywhere either" in result.stderr
        return
    kept = Path(result.stderr.split("the trained model was kept in ")[1].split(":")[0])
    try:
        assert read_model_file(kept)["accuracy"]["qann"] > 0.8
    finally:
        shutil.rmtree(kept.parent)
