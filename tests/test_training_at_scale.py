"""Training beyond one in-memory tensor: image folders, your own Datasets, checkpoints and --resume, --amp,
torchrun (docs/training.md, "Long runs" and "Your own images")."""

import functools
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from commands import cli
from processes import session_alive

import qffs_lava as qffs

from qffs_lava.ann.checkpoint import checkpoint_path, read_metrics
from qffs_lava.ann.datasets import load_dataset
from qffs_lava.ann.modelfile import read_model_file
from qffs_lava.ann.train import train
from qffs_lava.errors import ParameterError, QffsError
from qffs_lava.ir.netfile import read_net

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from image_folder import make_image_folder  # noqa: E402

BIN = Path(sys.executable).parent
QUIET = dict(progress=False)
FOLDER_RUN = ["--arch", "lenet", "--input-size", "16", "--batch-size", "16", "--float-epochs", "4", "--qat-epochs", "2",
              "--hardware-epochs", "1", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three classes of generated PNGs of sizes 16..40 pixels: 60 training and 20 evaluation images each."""
    return make_image_folder(tmp_path_factory.mktemp("images") / "shapes", classes=3, train=60, val=20,
                             min_size=16, max_size=40)


@pytest.mark.e2e
def test_an_image_folder_trains_exports_and_runs(images, tmp_path):
    done = cli("qffs-train", "--dataset", f"folder:{images}", *FOLDER_RUN, "--out", tmp_path / "m.pt")
    assert done.returncode == 0, done.stderr
    content = read_model_file(tmp_path / "m.pt")
    assert content["dataset"] == f"folder:{images.resolve()}"
    assert content["classes"] == ["class_0", "class_1", "class_2"] and content["input_shape"] == [3, 16, 16]
    assert content["accuracy"]["qann"] > 0.8
    done = cli("qffs-export", tmp_path / "m.pt", tmp_path / "m.h5")
    assert done.returncode == 0, done.stderr
    assert "fidelity on 60 " in done.stdout and read_net(tmp_path / "m.h5").meta["classes"] == content["classes"]
    done = cli("qffs-run", tmp_path / "m.h5", "--dataset", f"folder:{images}", "--steps", "8",
                         "--quiet", "--json", tmp_path / "run.json")
    assert done.returncode == 0, done.stderr
    import json
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["samples"] == 60 and report["qann_accuracy"] == content["accuracy"]["qann"]
    assert report["accuracy_by_step"][-1] == report["qann_accuracy"]
    in_python = qffs.run(tmp_path / "m.h5", f"folder:{images}", steps=8, progress=False).to_dict()
    for key in ("samples", "accuracy_by_step", "agreement_by_step", "predictions", "labels", "inputs"):
        assert in_python[key] == report[key], key


def broken_folders(root: Path):
    """(name, folder, the path the message must name) for each way an image folder can be wrong."""
    make_image_folder(root / "good", classes=2, train=3, val=2)
    cases = {"missing": (root / "nowhere", root / "nowhere")}
    (root / "no_classes" / "train").mkdir(parents=True)
    (root / "no_classes" / "val").mkdir()
    cases["no class folders"] = (root / "no_classes", root / "no_classes" / "train")
    make_image_folder(root / "other_classes", classes=2, train=3, val=2)
    (root / "other_classes" / "val" / "class_1").rename(root / "other_classes" / "val" / "cats")
    cases["different classes"] = (root / "other_classes", "cats")
    make_image_folder(root / "empty_val", classes=2, train=3, val=0)
    cases["empty split"] = (root / "empty_val", root / "empty_val" / "val")
    for split in ("train", "val"):  # one class without images: never learnt, or never tested
        make_image_folder(root / f"empty_{split}_class", classes=3, train=3, val=2)
        for image in (root / f"empty_{split}_class" / split / "class_1").iterdir():
            image.unlink()
        cases[f"empty {split} class"] = (root / f"empty_{split}_class", root / f"empty_{split}_class" / split /
                                         "class_1")
    make_image_folder(root / "damaged", classes=2, train=3, val=2)
    (root / "damaged" / "train" / "class_0" / "000001.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    cases["unreadable image"] = (root / "damaged", root / "damaged" / "train" / "class_0" / "000001.png")
    return cases


def test_a_bad_image_folder_is_one_line_that_names_the_path(tmp_path):
    for name, (folder, named) in broken_folders(tmp_path).items():
        done = cli("qffs-train", "--dataset", f"folder:{folder}", *FOLDER_RUN, "--out", tmp_path / "m.pt")
        err = done.stderr
        assert done.returncode == 2, (name, err)
        assert err.count("\n") == 1 and err.startswith("error: ") and str(named) in err, (name, err)
        assert not (tmp_path / "m.pt").exists()


@pytest.mark.e2e
def test_a_folder_of_one_size_is_seen_at_that_size_with_crop_and_flip_and_says_so(tmp_path):
    from PIL import Image

    folder = make_image_folder(tmp_path / "shapes", classes=3, train=20, val=5, min_size=32, max_size=32,
                               kind="shapes")
    done = cli("qffs-train", "--dataset", f"folder:{folder}", "--arch", "lenet", "--float-epochs", "1",
               "--qat-epochs", "1", "--hardware-epochs", "0", "--threads", "1", "--quiet", "--out", tmp_path / "m.pt")
    assert done.returncode == 0, done.stderr
    assert (f"image folder {folder.resolve()}: 3 classes, 60 training images (6 held out for validation) and 15 in "
            "val/; the training images are 32x32 (all 60 read): the model sees them as they are (input size 32: "
            "their size; --input-size)\naugmentation crop-flip (the default for input sizes up to 64; --augment "
            "none | crop-flip | imagenet): CIFAR's: ") in done.stdout
    content = read_model_file(tmp_path / "m.pt")
    assert content["input_shape"] == [3, 32, 32]
    assert (content["train"]["input_size"], content["train"]["augment"]) == (32, "crop-flip")
    # evaluation reads them as they are: the API, and qffs-export's fidelity run, as the model was trained
    images, labels = load_dataset(f"folder:{folder}", "test")
    first = sorted((folder / "val" / "circle").iterdir())[0]
    expected = torch.as_tensor(np.array(Image.open(first).convert("RGB"))).permute(2, 0, 1) / 255
    assert images.shape == (15, 3, 32, 32) and torch.equal(images[0], expected.float())
    assert cli("qffs-export", tmp_path / "m.pt", tmp_path / "m.h5").returncode == 0
    assert read_net(tmp_path / "m.h5").meta["augment"] == "crop-flip"


def test_an_architecture_that_needs_another_size_says_which_input_size_to_give(tmp_path):
    folder = make_image_folder(tmp_path / "imgs", classes=2, train=4, val=2, min_size=28, max_size=28)
    done = cli("qffs-train", "--dataset", f"folder:{folder}", "--arch", "resnet20", "--out", tmp_path / "m.pt")
    assert done.returncode == 2 and done.stderr == (
        f"error: resnet20 needs image inputs of exactly 32x32, got (3, 28, 28): the images of {folder.resolve()} are "
        "28x28 (all 8 read); give --input-size 32, to which they are resized\n")
    assert not list(tmp_path.glob("m.*"))
    with pytest.raises(ParameterError, match="augment is for image folders; digits is augmented"):
        train("digits", "mlp", augment="none", **QUIET)


@pytest.mark.e2e
def test_images_of_several_sizes_are_seen_at_their_median_short_side_and_the_api_loads_them_so(tmp_path):
    from PIL import Image

    from qffs_lava.ann.folders import ImageSizes
    from qffs_lava.evaluate import run

    folder = make_image_folder(tmp_path / "imgs", classes=2, train=15, val=3, min_size=12, max_size=30)
    shorts = sorted(min(Image.open(p).size) for p in (folder / "train").rglob("*.png"))
    sizes = ImageSizes.of(folder, ["class_0", "class_1"])
    assert sizes.shared is None and sizes.input_size() == shorts[(len(shorts) - 1) // 2]
    assert str(sizes).endswith(f"(median short side {sizes.input_size()}; all 30 read)")
    images, _ = load_dataset(f"folder:{folder}", "test")
    assert images.shape == (6, 3, sizes.input_size(), sizes.input_size())
    content = train(f"folder:{folder}", "mlp", input_size=16, augment="none", float_epochs=1, qat_epochs=1,
                    hardware_epochs=0, out=tmp_path / "m.pt", **QUIET)
    assert (content["train"]["input_size"], content["train"]["augment"]) == (16, "none")
    from qffs_export.exporter import export

    export(tmp_path / "m.pt", tmp_path / "m.h5", samples=0, loihi_check=False)
    with pytest.raises(ParameterError, match=r"this network takes \(N, 3, 16, 16\): images of another size; an image "
                                             r"folder loads as the network was trained with qffs.load_dataset\("
                                             r"'folder:PATH', split, input_size=16, augment='none'\)"):
        run(tmp_path / "m.h5", images, steps=4, progress=False)


@pytest.mark.e2e
def test_a_folder_run_resumed_gives_the_same_bytes(tmp_path, monkeypatch):
    from qffs_lava.ann import train as train_module

    folder = make_image_folder(tmp_path / "imgs", classes=2, train=24, val=4, min_size=16, max_size=16)
    options = dict(float_epochs=2, qat_epochs=1, hardware_epochs=1, batch_size=8, workers=0, **QUIET)
    train(f"folder:{folder}", "lenet", out=tmp_path / "whole.pt", **options)
    real = train_module.Session._save

    def stop_after_first(self, *args):
        real(self, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module.Session, "_save", stop_after_first)
    with pytest.raises(train_module.TrainingInterrupted, match="float epoch 1 of 2"):
        train(f"folder:{folder}", "lenet", out=tmp_path / "cut.pt", **options)
    monkeypatch.setattr(train_module.Session, "_save", real)
    train(f"folder:{folder}", "lenet", out=tmp_path / "cut.pt", resume=True, **options)
    assert (tmp_path / "cut.pt").read_bytes() == (tmp_path / "whole.pt").read_bytes()


@pytest.mark.e2e
def test_a_run_stopped_before_a_phases_test_evaluation_resumes_to_the_same_bytes_and_metrics(tmp_path, monkeypatch):
    """The test split is measured after a phase's last checkpoint: a run stopped in between measures it on
    resuming, and ends as the run that was not stopped."""
    from qffs_lava.ann import train as train_module

    options = dict(float_epochs=2, qat_epochs=1, hardware_epochs=1, **QUIET)
    train("digits", "mlp", out=tmp_path / "whole.pt", **options)
    real = train_module.Session._save

    def stop_after_the_float_phase(self, phase, epoch, epochs, *args):
        real(self, phase, epoch, epochs, *args)
        if (phase, epoch) == ("float", epochs):
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module.Session, "_save", stop_after_the_float_phase)
    with pytest.raises(train_module.TrainingInterrupted, match="float epoch 2 of 2"):
        train("digits", "mlp", out=tmp_path / "cut.pt", **options)
    assert "test_accuracy" not in read_metrics(tmp_path / "cut.metrics.jsonl")[-1]
    monkeypatch.setattr(train_module.Session, "_save", real)
    train("digits", "mlp", out=tmp_path / "cut.pt", resume=True, **options)
    assert (tmp_path / "cut.pt").read_bytes() == (tmp_path / "whole.pt").read_bytes()
    timeless = [[{k: v for k, v in line.items() if k not in ("seconds", "images_per_second")}
                 for line in read_metrics(tmp_path / f"{name}.metrics.jsonl")] for name in ("cut", "whole")]
    assert timeless[0] == timeless[1] and [line["phase"] for line in timeless[0] if "test_accuracy" in line] == [
        "float", "qat", "hardware"]


@pytest.mark.e2e
def test_export_of_a_model_whose_folder_moved_says_so_first_and_takes_its_new_place(tmp_path):
    folder = make_image_folder(tmp_path / "imgs", classes=2, train=10, val=4, min_size=16, max_size=16)
    train(f"folder:{folder}", "lenet", float_epochs=1, qat_epochs=1, hardware_epochs=1, out=tmp_path / "m.pt",
          **QUIET)
    moved = folder.rename(tmp_path / "moved")
    fits = "--no-loihi-check"  # what this test's network is need not fit Loihi 2: the data is checked first
    done = cli("qffs-export", tmp_path / "m.pt", tmp_path / "m.h5")
    assert done.returncode == 2 and done.stdout == "" and done.stderr == (
        f"error: image folder {folder.resolve()}/, which {tmp_path / 'm.pt'} was trained on, is not there (moved or "
        "deleted): give its new place with --dataset folder:NEWPATH (its classes must be the model's), or export "
        "without measuring fidelity: --samples 0\n")
    done = cli("qffs-export", tmp_path / "m.pt", tmp_path / "m.h5", "--dataset", f"folder:{moved}", fits)
    assert done.returncode == 0, done.stderr
    assert f"fidelity on 8 folder:{moved} test samples" in done.stdout
    assert read_net(tmp_path / "m.h5").meta["qann_agreement"] == 1.0
    (moved / "train" / "class_1").rename(moved / "train" / "dogs")
    (moved / "val" / "class_1").rename(moved / "val" / "dogs")
    done = cli("qffs-export", tmp_path / "m.pt", tmp_path / "n.h5", "--dataset", f"folder:{moved}", fits)
    assert done.returncode == 2 and done.stdout == "" and "has the classes class_0, dogs, the model was trained on " \
        "class_0, class_1" in done.stderr and not (tmp_path / "n.h5").exists()
    done = cli("qffs-export", tmp_path / "m.pt", tmp_path / "n.h5", "--samples", "0", fits)
    assert done.returncode == 0 and "fidelity not measured" in done.stdout


def test_export_dataset_is_for_moved_folders_and_a_missing_named_dataset_is_said_first(digits_model_file, tmp_path):
    done = cli("qffs-export", digits_model_file, tmp_path / "m.h5", "--dataset", f"folder:{tmp_path}")
    assert done.returncode == 2 and done.stdout == "" and done.stderr == (
        f"error: --dataset folder:{tmp_path} is for a model trained on an image folder that has moved; "
        f"{digits_model_file} was trained on digits: digits is found in --data-dir\n")


@pytest.mark.e2e
def test_your_own_datasets_train_and_a_wrong_argument_is_named_not_printed():
    train_x, train_y = load_dataset("digits", "train")
    test_x, test_y = load_dataset("digits", "test")
    splits = (torch.utils.data.TensorDataset(train_x, train_y), torch.utils.data.TensorDataset(test_x, test_y))
    content = train(splits, "mlp", float_epochs=2, qat_epochs=1, hardware_epochs=1, **QUIET)
    assert content["dataset"] == "python:TensorDataset" and content["num_classes"] == 10
    assert content["accuracy"]["qann"] > 0.85
    tensors = train(((train_x, train_y), (test_x, test_y)), "mlp", float_epochs=2, qat_epochs=1,
                    hardware_epochs=1, **QUIET)
    assert tensors["accuracy"] == content["accuracy"]  # the same images, in the same order
    with pytest.raises(ParameterError) as refused:
        train((train_x, train_y), "mlp", **QUIET)
    message = str(refused.value)
    assert "tensor of shape (1347, 1, 8, 8)" in message and "tensor(" not in message and len(message) < 400


def train_command(out: Path, *extra: str):
    return [str(BIN / "qffs-train"), "--dataset", "digits", "--arch", "mlp", "--float-epochs", "4",
            "--qat-epochs", "8", "--hardware-epochs", "2", "--threads", "1", "--quiet", "--out", str(out), *extra]


@pytest.mark.slow  # make test: a stop before a phase's test evaluation resumes to the same bytes (below)
def test_ctrl_c_mid_phase_keeps_the_checkpoint_and_the_resumed_run_gives_the_same_bytes(tmp_path, seed):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(train_command(tmp_path / "whole.pt"), env=env, check=True, capture_output=True)
    metrics = tmp_path / "cut.metrics.jsonl"
    process = subprocess.Popen(train_command(tmp_path / "cut.pt"), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (metrics.exists() and any(line["phase"] == "qat" for line in read_metrics(metrics))):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    time.sleep(random.Random(seed).uniform(0, 0.3))  # somewhere inside the LSQ phase, a moment not chosen
    pressed = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    _, err = process.communicate(timeout=60)
    assert time.monotonic() - pressed < 10
    assert process.returncode == 130, err
    assert "resume with:" in err and "--resume" in err and "Traceback" not in err
    assert not (tmp_path / "cut.pt").exists() and checkpoint_path(tmp_path / "cut.pt").exists()
    command = err.split("resume with:\n")[1].splitlines()[0].strip()
    resumed = subprocess.run([str(BIN / "qffs-train"), *shlex.split(command)[1:]], env=env, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "cut.pt").read_bytes() == (tmp_path / "whole.pt").read_bytes()
    assert not checkpoint_path(tmp_path / "cut.pt").exists()
    epochs = [(line["phase"], line["epoch"]) for line in read_metrics(metrics)]
    assert epochs == [(line["phase"], line["epoch"]) for line in read_metrics(tmp_path / "whole.metrics.jsonl")]


@pytest.mark.e2e
def test_sigterm_to_the_group_of_a_folder_run_with_dataloader_workers_is_the_stop_not_a_crash(images, tmp_path, seed):
    """`timeout` sends SIGTERM to the command's whole group, its DataLoader workers too: they leave the stop to the
    command, which says it in its own words (before, a worker killed first made it a DataLoader traceback)."""
    out = tmp_path / "m.pt"
    process = subprocess.Popen([str(BIN / "qffs-train"), "--dataset", f"folder:{images}", *FOLDER_RUN,
                                "--float-epochs", "40", "--workers", "2", "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not checkpoint_path(out).exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    time.sleep(random.Random(seed).uniform(0, 0.5))  # its workers reading the next epoch's images
    os.killpg(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    time.sleep(1)
    assert process.returncode == 143, err
    assert "interrupted by SIGTERM" in err and "Traceback" not in err and "DataLoader" not in err, err
    assert not session_alive(process.pid)


@pytest.mark.e2e
def test_resume_refuses_a_checkpoint_of_other_options_and_a_fresh_run_will_not_overwrite_one(tmp_path):
    out = tmp_path / "m.pt"
    with pytest.raises(ParameterError, match="no checkpoint"):
        train("digits", "mlp", out=out, resume=True, **QUIET)
    train("digits", "mlp", out=out, float_epochs=1, qat_epochs=1, hardware_epochs=0, **QUIET)
    out.rename(tmp_path / "first.pt")
    # a checkpoint of a run stopped after its first epoch
    from qffs_lava.ann import train as train_module

    real = train_module.Session._save
    calls = []

    def stop_after_one(self, *args):
        real(self, *args)
        calls.append(1)
        raise KeyboardInterrupt

    train_module.Session._save = stop_after_one
    try:
        with pytest.raises(train_module.TrainingInterrupted, match="keeps it .float epoch 1 of 2"):
            train("digits", "mlp", out=out, float_epochs=2, qat_epochs=1, hardware_epochs=0, **QUIET)
    finally:
        train_module.Session._save = real
    with pytest.raises(ParameterError, match="holds an unfinished run"):
        train("digits", "mlp", out=out, float_epochs=2, qat_epochs=1, hardware_epochs=0, **QUIET)
    with pytest.raises(ParameterError, match="lr: 0.001 there, 0.01 now"):
        train("digits", "mlp", out=out, float_epochs=2, qat_epochs=1, hardware_epochs=0, lr=0.01, resume=True,
              **QUIET)
    content = train("digits", "mlp", out=out, float_epochs=2, qat_epochs=1, hardware_epochs=0, resume=True, **QUIET)
    assert content["accuracy"]["qann"] > 0.8 and not checkpoint_path(out).exists()


@pytest.mark.e2e
def test_amp_speeds_the_float_and_lsq_phases_but_not_the_exported_integers(tmp_path):
    base = dict(float_epochs=2, qat_epochs=1, hardware_epochs=0, **QUIET)
    plain = train("digits", "mlp", out=tmp_path / "lsq.pt", **base)
    mixed = train("digits", "mlp", amp="bf16", **base)
    assert any(not torch.equal(plain["state_dict"][k], mixed["state_dict"][k]) for k in plain["state_dict"])
    tuned = {amp: train("digits", "mlp", init=str(tmp_path / "lsq.pt"), float_epochs=0, qat_epochs=0,
                        hardware_epochs=2, amp=amp, **QUIET) for amp in (None, "bf16")}
    for name, value in tuned[None]["state_dict"].items():
        assert torch.equal(tuned["bf16"]["state_dict"][name], value), name


@pytest.mark.e2e
def test_an_fp16_run_resumed_keeps_its_gradient_scaler_and_gives_the_same_bytes(tmp_path, monkeypatch):
    from qffs_lava.ann import train as train_module

    # a scale that grows every 3 steps, so that steps overflow, are skipped and halve it within a few epochs
    monkeypatch.setattr(torch.amp, "GradScaler", functools.partial(torch.amp.GradScaler, growth_interval=3))
    options = dict(amp="fp16", float_epochs=3, qat_epochs=2, hardware_epochs=0, lr=0.05, **QUIET)
    whole = train("digits", "mlp", out=tmp_path / "whole.pt", **options)
    real, scales = train_module.Session._save, []

    def stop_after_two(self, *args):
        real(self, *args)
        scales.append(args[5].get_scale())
        if len(scales) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module.Session, "_save", stop_after_two)
    with pytest.raises(train_module.TrainingInterrupted, match="float epoch 2 of 3"):
        train("digits", "mlp", out=tmp_path / "cut.pt", **options)
    kept = torch.load(checkpoint_path(tmp_path / "cut.pt"), weights_only=True)["scaler"]
    assert kept["scale"] == scales[-1] != 2.0 ** 16 and kept["_growth_tracker"] < 3
    monkeypatch.setattr(train_module.Session, "_save", real)
    resumed = train("digits", "mlp", out=tmp_path / "cut.pt", resume=True, **options)
    assert resumed["accuracy"] == whole["accuracy"]
    assert (tmp_path / "cut.pt").read_bytes() == (tmp_path / "whole.pt").read_bytes()


def test_an_unreadable_image_in_a_worker_is_one_line(tmp_path):
    folder = make_image_folder(tmp_path / "imgs", classes=2, train=20, val=4)
    (folder / "train" / "class_1" / "000007.png").write_bytes(b"garbage")
    with pytest.raises(QffsError) as refused:
        train(f"folder:{folder}", "mlp", input_size=16, workers=2, float_epochs=1, qat_epochs=1, **QUIET)
    assert str(refused.value).startswith("cannot read image ") and "000007.png" in str(refused.value)
    assert "\n" not in str(refused.value)


def torchrun(command: str, *args, ranks: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node RANKS COMMAND ARGS` on this CPU (gloo), one thread per rank."""
    argv = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", str(ranks), str(BIN / command),
            *map(str, args)]
    return subprocess.run(argv, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_torchrun_on_two_cpu_ranks_trains_exports_and_runs_as_one_process_does(tmp_path):
    import json

    common = ["--dataset", "digits", "--arch", "mlp", "--float-epochs", "10", "--qat-epochs", "10",
              "--hardware-epochs", "1", "--batch-size", "64", "--threads", "1", "--quiet"]
    one = subprocess.run([str(BIN / "qffs-train"), *common, "--out", str(tmp_path / "one.pt")], capture_output=True,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr
    two = torchrun("qffs-train", *common, "--out", tmp_path / "two.pt")
    assert two.returncode == 0, two.stderr
    alone, ranked = (read_model_file(tmp_path / f"{name}.pt") for name in ("one", "two"))
    assert ranked["train"]["ranks"] == 2 and alone["train"]["ranks"] == 1
    for key in ("float", "qann"):  # the same global batch: within a point
        assert abs(ranked["accuracy"][key] - alone["accuracy"][key]) <= 0.01, (key, alone, ranked)
    assert ranked["accuracy"]["qann"] > 0.9
    assert {line["ranks"] for line in read_metrics(tmp_path / "two.metrics.jsonl")} == {2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.metrics.jsonl", "one.pt", "two.metrics.jsonl",
                                                          "two.pt"]

    exported = torchrun("qffs-export", tmp_path / "two.pt", tmp_path / "two.h5")
    assert exported.returncode == 0, exported.stderr
    assert cli("qffs-export", tmp_path / "two.pt", tmp_path / "alone.h5").returncode == 0
    assert read_net(tmp_path / "two.h5").meta == read_net(tmp_path / "alone.h5").meta  # all 450 samples, once
    ran = torchrun("qffs-run", tmp_path / "two.h5", "--dataset", "digits", "--steps", "6", "--stats", "--quiet",
                   "--json", tmp_path / "two.json")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.count("SNN == QANN") == 1  # rank 0 reports
    assert cli("qffs-run", tmp_path / "two.h5", "--dataset", "digits", "--steps", "6", "--stats", "--quiet",
               "--json", tmp_path / "alone.json").returncode == 0
    reports = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("two", "alone")]
    for report in reports:
        report.pop("seconds")
    assert reports[0] == reports[1]


@pytest.mark.slow
def test_under_torchrun_an_error_on_one_rank_ends_all_with_its_message(tmp_path):
    folder = make_image_folder(tmp_path / "imgs", classes=2, train=10, val=4)
    (folder / "val" / "class_0" / "000001.png").write_bytes(b"garbage")  # sample 1 of the test split: rank 1's
    failed = torchrun("qffs-train", "--dataset", f"folder:{folder}", "--arch", "mlp", "--input-size", "16",
                      "--workers", "0", "--float-epochs", "1", "--qat-epochs", "1", "--quiet",
                      "--out", tmp_path / "m.pt")
    assert failed.returncode != 0
    lines = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert lines[0].startswith("error: [rank 1] cannot read image ") and "000001.png" in lines[0]
    assert lines[1:] == ["error: [rank 0] stopped: another rank failed (its error is above)"]
    assert not (tmp_path / "m.pt").exists()
