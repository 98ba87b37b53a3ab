"""qffs-train: real training on digits, the safe model file, and clear errors."""

import pickle

import pytest
import torch

from qffs_lava.ann.datasets import dataset_info, load_dataset
from qffs_lava.ann.modelfile import MODEL_FORMAT, load_model_file, read_model_file
from qffs_lava.ann.models import QuantAct, predict
from qffs_lava.ann.checkpoint import read_metrics
from qffs_lava.ann.loaders import Shard, Tensors, loader
from qffs_lava.ann.train import Session, TrainConfig, open_splits, tally, train
from qffs_lava.cli import train_main
from qffs_lava.convert.integer import trained_qann
from qffs_lava.distributed import World
from qffs_lava.errors import ModelFileError


def test_short_digits_run_reaches_a_real_accuracy(digits_model_file):
    content, model = load_model_file(digits_model_file)
    assert content["accuracy"]["float"] >= 0.94
    assert content["accuracy"]["qann"] >= 0.92
    test_x, test_y = load_dataset("digits", "test")
    # the stored figure is what the loaded model measures, as the QANN it was trained as (its integer network)
    assert content["hardware_exact"]
    batches = loader(Tensors(test_x, test_y), 1000, Shard(len(test_x)))
    assert tally(trained_qann(content, model), batches, test_x.device)[0] == pytest.approx(content["accuracy"]["qann"])


def test_model_file_loads_with_weights_only(digits_model_file):
    content = torch.load(digits_model_file, weights_only=True)
    assert content["format"] == MODEL_FORMAT and content["version"] == 2
    assert content["quantized"] is True
    assert content["dataset"] == "digits" and content["input_shape"] == [1, 8, 8]
    assert content["bits"]["layers"] == [2, 2, 3] and content["bits"]["weight"] is None
    assert content["input_levels"] == 16
    assert all(isinstance(node, dict) and {"name", "op", "inputs"} <= set(node) for node in content["arch"]["nodes"])
    steps = [v for k, v in content["state_dict"].items() if k.endswith("quantizer.step")]
    assert len(steps) == 3 and all(float(s) > 0 for s in steps)


def test_model_file_round_trip_gives_the_same_outputs(digits_model_file, tmp_path):
    from qffs_lava.ann.modelfile import save_model_file

    content, model = load_model_file(digits_model_file)
    copy = tmp_path / "copy.pt"
    save_model_file(copy, model, {k: v for k, v in content.items() if k not in ("format", "version", "state_dict")})
    _, reloaded = load_model_file(copy)
    x = load_dataset("digits", "test")[0][:50]
    with torch.no_grad():
        torch.testing.assert_close(model(x), reloaded(x), rtol=0, atol=0)


@pytest.mark.e2e
def test_training_is_deterministic():
    kwargs = dict(progress=False, float_epochs=2, qat_epochs=1)
    a = train("digits", "mlp", **kwargs)
    b = train("digits", "mlp", **kwargs)
    assert a["accuracy"] == b["accuracy"]
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key


@pytest.mark.e2e
def test_weight_quantization_gives_integer_weight_levels(tmp_path):
    content = train("digits", "mlp", out=tmp_path / "w8.pt", progress=False,
                    float_epochs=3, qat_epochs=3, weight_bits=8)
    assert content["bits"]["weight"] == 8
    _, model = load_model_file(tmp_path / "w8.pt")
    layer = model.fc1
    w = layer.effective_weight().detach() / layer.weight_quantizer.step.detach()
    torch.testing.assert_close(w, w.round())
    assert w.abs().max() <= 128


@pytest.mark.e2e
def test_init_continues_from_a_model_file(digits_model_file, tmp_path):
    content = train("digits", "mlp", out=tmp_path / "more.pt", progress=False,
                    float_epochs=0, qat_epochs=1, init=str(digits_model_file))
    assert content["accuracy"]["float"] == read_model_file(digits_model_file)["accuracy"]["float"]


def run_cli(*args):
    """qffs-train as its console script runs it (its main, in this process: commands.cli)."""
    from commands import cli

    return cli("qffs-train", *args)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "imagenet", "--arch", "mlp"], "unknown dataset 'imagenet'"),
        (["--dataset", "digits", "--arch", "resnet"], "'resnet' is neither a built-in architecture"),
        (["--dataset", "digits", "--arch", "resnet20"], "32x32"),
        (["--dataset", "digits", "--arch", "mlp", "--act-bits", "0"], "bits must be an integer in 1..8"),
        (["--dataset", "digits", "--arch", "mlp", "--out-bits", "9"], "bits must be an integer in 1..8"),
        (["--dataset", "digits", "--arch", "vgg11"], "32x32"),
    ],
)
def test_cli_refuses_bad_arguments_with_exit_2(args, message, tmp_path):
    out = tmp_path / "m.pt"
    result = run_cli(*args, "--out", str(out), "--quiet")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_cli_missing_dataset_names_the_fetch_command(tmp_path):
    out = tmp_path / "m.pt"
    result = run_cli("--dataset", "mnist", "--arch", "lenet", "--data-dir", str(tmp_path / "empty"),
                     "--out", str(out), "--quiet")
    assert result.returncode == 2
    assert "mnist not found" in result.stderr and "make data" in result.stderr
    assert not out.exists()


def test_cli_unwritable_output_fails_before_training(tmp_path):
    result = run_cli("--dataset", "digits", "--arch", "mlp", "--out", str(tmp_path / "no" / "such" / "m.pt"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    result = run_cli("--dataset", "digits", "--arch", "mlp", "--out", str(tmp_path))
    assert result.returncode == 2 and "is a directory" in result.stderr


@pytest.mark.e2e
def test_cli_trains_and_writes_the_model_file(tmp_path):
    out = tmp_path / "m.pt"
    code = train_main(["--dataset", "digits", "--arch", "mlp", "--out", str(out), "--quiet",
                       "--float-epochs", "2", "--qat-epochs", "1"])
    assert code == 0 and out.is_file()
    # no temporary file left; the checkpoint is gone with the run, the metrics stay: one line per epoch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.metrics.jsonl", "m.pt"]
    lines = read_metrics(tmp_path / "m.metrics.jsonl")
    assert [(line["phase"], line["epoch"]) for line in lines] == [("float", 1), ("float", 2), ("qat", 1),
                                                                  ("hardware", 1), ("hardware", 2), ("hardware", 3)]
    assert all(line["images_per_second"] > 0 for line in lines)
    # the test split is measured once a phase: its figure is on the phase's last line, with the epoch it ended as
    content = read_model_file(out)
    assert [(line["phase"], line["kept_epoch"], line["test_accuracy"]) for line in lines if "test_accuracy" in line] \
        == [("float", 2, content["accuracy"]["float"]), ("qat", 1, content["accuracy"]["lsq"]),
            ("hardware", content["train"]["hardware_epoch_kept"], content["accuracy"]["qann"])]


@pytest.mark.e2e
def test_validation_chooses_each_epoch_and_the_test_split_is_measured_once_a_phase(monkeypatch):
    """Every epoch is measured on the validation split; the test split once a phase, on the model the phase ends
    with (the hardware-exact phase's best epoch restored), and once before that phase, on the integer network it
    starts from."""
    from torch.utils.data import Subset

    from qffs_lava.ann import train as train_module

    real, evaluated = train_module.tally, []

    def recorded(model, batches, device, other=None):
        figures = real(model, batches, device, other)
        evaluated.append(("validation" if isinstance(batches.dataset, Subset) else "test", figures[0]))
        return figures

    monkeypatch.setattr(train_module, "tally", recorded)
    content = train("digits", "mlp", float_epochs=2, qat_epochs=2, hardware_epochs=2, progress=False)
    phase = ["validation", "validation", "test"]
    assert [split for split, _ in evaluated] == phase + phase + ["test", "validation"] + phase
    assert [figure for split, figure in evaluated if split == "test"] == [
        content["accuracy"][name] for name in ("float", "lsq", "integer_before", "qann")]


class HostReads(torch.Tensor):
    """The training loss, and what is computed from it, counting how often the host reads its value (on a GPU, each
    read waits until the device has run every step queued)."""

    reads = 0

    def __float__(self):
        HostReads.reads += 1
        return super().__float__()

    def item(self):
        HostReads.reads += 1
        return super().item()

    def tolist(self):
        HostReads.reads += 1
        return super().tolist()


@pytest.mark.parametrize("progress", [False, True])
@pytest.mark.e2e
def test_the_loss_is_summed_on_the_device_and_read_once_an_epoch_or_every_few_steps_for_the_bar(progress, tmp_path,
                                                                                              monkeypatch):
    from qffs_lava.ann import train as train_module

    real, losses = torch.nn.functional.cross_entropy, []

    def watched(*args, **kwargs):
        loss = real(*args, **kwargs)
        losses.append(float(loss))
        return loss.as_subclass(HostReads)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", watched)
    monkeypatch.setattr(HostReads, "reads", 0)
    if progress:
        monkeypatch.setattr(train_module, "LOSS_READ_STEPS", 4)
    train("digits", "mlp", out=tmp_path / "m.pt", float_epochs=2, qat_epochs=1, hardware_epochs=1,
          progress=progress)
    lines = read_metrics(tmp_path / "m.metrics.jsonl")
    steps = len(losses) // len(lines)
    assert len(lines) == 4 and len(losses) == 4 * steps and steps > 4
    assert HostReads.reads == 4 * (1 + (steps // 4 if progress else 0))
    for epoch, line in enumerate(lines):  # the mean the host used to sum step by step, to the last bit
        total = 0.0
        for loss in losses[epoch * steps:(epoch + 1) * steps]:
            total += loss
        assert line["loss"] == total / steps, epoch


def test_evaluation_draws_nothing_from_torchs_global_generator():
    """Per-sample training transforms in this process (an image folder read without workers) draw from torch's
    global generator: were evaluation to draw from it too, the weights would depend on when the run evaluates."""
    cfg = TrainConfig("digits", "mlp")
    session = Session(cfg, open_splits(cfg, dataset_info("digits")), World(), None, False, None)
    state = torch.get_rng_state()
    for split in (session.splits.validation, session.splits.test):
        assert sum(len(y) for _, y in session.batches(split)) == len(split)
    assert torch.equal(torch.get_rng_state(), state)


class Payload:
    """Unpickling this would create a file: the loader must refuse before that happens."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_model_file_needing_arbitrary_unpickling_is_refused(tmp_path):
    target = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": MODEL_FORMAT, "version": 1, "x": Payload(str(target))}, evil)
    assert not target.exists()
    with pytest.raises(ModelFileError, match="arbitrary unpickling"):
        read_model_file(evil)
    assert not target.exists()
    # and a plain pickle, not even a torch file
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps(Payload(str(target))))
    with pytest.raises(ModelFileError):
        read_model_file(plain)
    assert not target.exists()


def test_bad_model_files_give_clear_errors(digits_model_file, tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        read_model_file(tmp_path / "missing.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(digits_model_file.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match="cannot read"):
        read_model_file(truncated)
    content = torch.load(digits_model_file, weights_only=True)
    torch.save({**content, "version": 99}, tmp_path / "v99.pt")
    with pytest.raises(ModelFileError, match="version 99"):
        read_model_file(tmp_path / "v99.pt")
    torch.save({"state_dict": content["state_dict"]}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="not a qffs model file"):
        read_model_file(tmp_path / "other.pt")
    wrong = dict(content["state_dict"])
    wrong["fc1.weight"] = torch.zeros(3, 3)
    torch.save({**content, "state_dict": wrong}, tmp_path / "shape.pt")
    with pytest.raises(ModelFileError, match="do not fit"):
        load_model_file(tmp_path / "shape.pt")


def test_output_prediction_uses_quantized_levels(digits_model_file):
    _, model = load_model_file(digits_model_file)
    assert all(m.quantized for m in model.modules() if isinstance(m, QuantAct))
    x = load_dataset("digits", "test")[0][:20]
    with torch.no_grad():
        out = model(x)
    assert predict(out).shape == (20,)


def test_random_crop_flip_crops_within_the_padding_and_may_flip():
    from qffs_lava.ann.loaders import random_crop_flip

    images = torch.zeros(64, 1, 10, 10)
    images[:, 0, 4, 3] = 1.0
    out = random_crop_flip(images, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == images.shape and torch.equal(out.sum(dim=(1, 2, 3)), torch.ones(64))
    rows, cols = out[:, 0].nonzero()[:, 1], out[:, 0].nonzero()[:, 2]
    assert ((rows - 4).abs() <= 2).all()
    assert (((cols - 3).abs() <= 2) | ((cols - 6).abs() <= 2)).all()  # 6 = 9 - 3: the flipped column
    assert ((cols - 6).abs() <= 2).any() and ((cols - 3).abs() <= 2).any()


@pytest.mark.e2e
def test_distillation_changes_only_the_lsq_phase():
    kwargs = dict(progress=False, float_epochs=2, qat_epochs=1)
    plain = train("digits", "mlp", **kwargs)
    distilled = train("digits", "mlp", distill=True, **kwargs)
    assert distilled["accuracy"]["float"] == plain["accuracy"]["float"]
    assert distilled["train"]["distill"] is True
    assert any(not torch.equal(plain["state_dict"][k], distilled["state_dict"][k]) for k in plain["state_dict"])


def test_a_schedule_for_one_architecture_overrides_its_datasets():
    from qffs_lava.ann.train import DEFAULT_SCHEDULE, TrainConfig

    resnet, lenet = TrainConfig("fashionmnist", "resnet8"), TrainConfig("fashionmnist", "lenet")
    assert (resnet.float_epochs, resnet.qat_epochs) == DEFAULT_SCHEDULE[("fashionmnist", "resnet8")][:2]
    assert (lenet.float_epochs, lenet.qat_epochs) == DEFAULT_SCHEDULE["fashionmnist"][:2]
    assert TrainConfig("fashionmnist", "resnet8", qat_epochs=3).qat_epochs == 3
