"""Training: a float model, LSQ quantization-aware fine-tuning, then hardware-exact fine-tuning
(docs/training.md).

The last phase trains the integer network the exporter will write (`export.integer`): its
forward pass is the exporter's arithmetic (Loihi 2's weight grid, thresholds, biases,
input rounding), its gradients pass straight through the roundings. After it, the
model file's QANN is that integer network (`hardware_exact`), so qffs-export reproduces
the trained accuracy exactly. The phase keeps the epoch whose integer network is best on a
validation split held out from all training (`validation`, a share of the training
split), epoch 0 (the integer network of the LSQ model) included: it changes the exported
network only where the change is measured to help.

`train(...)` is the Python API behind `qffs-train`. It is seeded and deterministic on
CPU: the same arguments give the same model file.
"""

from __future__ import annotations

import copy
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from qffs_export.integer import IntegerModel, check_input_norm
from qffs_export.plan import plan_layers

from qffs_lava.ann.archs import ARCHS, make_arch, set_layer_bits
from qffs_lava.ann.datasets import dataset_info, load_dataset, split_validation
from qffs_lava.ann.lsq import LsqQuantizer
from qffs_lava.ann.modelfile import model_from_content, read_init, save_model_file
from qffs_lava.ann.models import build_model, input_normalization, predict, set_quantized
from qffs_lava.ann.torch_import import build_module, from_torch
from qffs_lava.backends.pytorch import check_torch_device
from qffs_lava.errors import ParameterError, QffsError
from qffs_lava.fileio import check_outputs, check_writable

#: (float, QAT, hardware-exact epochs, batch size) per dataset, or per (dataset, architecture), when not given.
DEFAULT_SCHEDULE = {
    "digits": (40, 40, 3, 64),
    "mnist": (4, 10, 2, 64),
    "fashionmnist": (14, 6, 2, 64),
    ("fashionmnist", "resnet8"): (10, 10, 2, 64),
    "kmnist": (10, 10, 2, 64),
    "cifar10": (100, 60, 5, 128),
}


@dataclass
class TrainConfig:
    """Everything that determines a training run (stored in the model file)."""

    dataset: str
    arch: str
    data_dir: str = "data"
    act_bits: int = 2
    out_bits: int = 3
    layer_bits: Optional[List[int]] = None  # per act layer, overrides act_bits/out_bits
    weight_bits: Optional[int] = None
    float_epochs: Optional[int] = None
    qat_epochs: Optional[int] = None
    hardware_epochs: Optional[int] = None  # 0: no hardware-exact phase
    batch_size: Optional[int] = None
    lr: float = 1e-3
    qat_lr: float = 5e-4
    hardware_lr: float = 1e-4
    weight_decay: float = 1e-4
    validation: float = 0.1  # share of the training split held out; the phase keeps its best epoch on it
    distill: bool = False  # LSQ fine-tuning also matches the float model's softmax
    seed: int = 0
    download: bool = False
    init: Optional[str] = None  # a qffs model file, or a PyTorch state dict for the model arch builds
    small_input_stem: bool = False  # torchvision ResNets: a 3x3 stride-1 stem without max pool
    pool: str = "max"  # "avg": average pooling where lenet and the VGGs max-pool
    input_norm: Optional[List[float]] = None  # the model sees (x - mean) / std: MEAN,STD, or means then stds
    device: str = "cpu"

    def __post_init__(self):
        info = dataset_info(self.dataset)
        schedule = DEFAULT_SCHEDULE.get((info.name, self.arch), DEFAULT_SCHEDULE[info.name])
        for name, default in zip(("float_epochs", "qat_epochs", "hardware_epochs", "batch_size"), schedule):
            if getattr(self, name) is None:
                setattr(self, name, default)
        for name in ("act_bits", "out_bits"):
            check_bits(name, getattr(self, name))
        if self.weight_bits is not None:
            check_bits("weight_bits", self.weight_bits, minimum=2, why=" (weights are signed)")
        for bits in self.layer_bits or ():
            check_bits("layer_bits", bits)
        for name, minimum in (("float_epochs", 0), ("qat_epochs", 0), ("hardware_epochs", 0), ("batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ParameterError(f"{{}}: must be an integer >= {minimum}, got {value!r}", name)
        if isinstance(self.validation, bool) or not isinstance(self.validation, (int, float)) \
                or not 0 <= self.validation <= 0.5:
            raise ParameterError(f"{{}}: must be a share of the training split in [0, 0.5], got {self.validation!r}",
                                 "validation")
        if self.float_epochs == 0 and self.init is None and not self.arch.startswith("module "):
            raise ParameterError("{} needs {} with a trained model file or state dict", ("float_epochs", 0), "init")
        if self.qat_epochs == 0 and self.init is None:
            raise ParameterError("{} needs {} with a quantized model file (it fine-tunes that one)",
                                 ("qat_epochs", 0), "init")
        check_torch_device(self.device)
        if self.input_norm is not None:
            try:
                input_normalization(self.input_norm, info.input_shape[0])
            except ValueError as err:
                raise ParameterError(f"{{}}: {err}", "input_norm") from None


def check_bits(name: str, bits, minimum: int = 1, why: str = "") -> None:
    """ParameterError unless `bits` is an integer in minimum..8."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not minimum <= bits <= 8:
        raise ParameterError(f"{{}}: bits must be an integer in {minimum}..8{why}, got {bits!r}", name)


def predictions(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The model's classes in its current (float or quantized) mode, in eval mode."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        classes = torch.cat([predict(model(images[start:start + batch_size]))
                             for start in range(0, len(images), batch_size)])
    model.train(was_training)
    return classes


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of the model in its current mode, in eval mode (NaN for no images)."""
    if len(images) == 0:
        return float("nan")
    return float((predictions(model, images) == labels).double().mean())


def augment(images: torch.Tensor, generator: torch.Generator, pad: int) -> torch.Tensor:
    """A random crop of each image zero-padded by `pad` pixels, and a random horizontal flip."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]
    channels = torch.arange(images.shape[1])[None, :, None, None]
    cropped = padded[torch.arange(n)[:, None, None, None], channels, rows, cols]
    flip = torch.rand(n, generator=generator) < 0.5
    cropped[flip] = cropped[flip].flip(-1)
    return cropped


def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam(W); no weight decay on LSQ steps, batchnorm parameters and biases."""
    steps = {id(m.step) for m in model.modules() if isinstance(m, LsqQuantizer)}
    decay = [p for p in model.parameters() if p.ndim > 1 and id(p) not in steps]
    no_decay = [p for p in model.parameters() if p.ndim <= 1 or id(p) in steps]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


@dataclass
class Fit:
    """What `_fit` left: the model's test and validation accuracy, and the epoch it is from (0: as it came)."""

    test: float
    validation: float
    epoch: int


def _fit(model, phase, epochs, lr, cfg, data, generator, progress, log, augment_pad=0, teacher=None,
         keep_best: Optional[Fit] = None) -> Fit:
    """Train `epochs` epochs with a cosine learning rate on data = (train, validation, test).

    augment_pad > 0: random crops and flips (`augment`). With a teacher (the float model),
    the loss is (CE(y, out) + KL(softmax(teacher) || softmax(out))) / 2, as LSQ fine-tunes.
    keep_best (the model's Fit as it came): the model ends as the epoch e in 0..epochs (0: as
    it came) of highest validation accuracy, the earliest on ties; without validation images,
    as the last.
    """
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = data
    optimizer = _optimizer(model, lr, cfg.weight_decay)
    batches = math.ceil(len(train_x) / cfg.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * batches))
    kept = keep_best or Fit(accuracy(model, test_x, test_y) if epochs == 0 else float("nan"),
                            accuracy(model, val_x, val_y) if epochs == 0 else float("nan"), 0)
    best_state = copy.deepcopy(model.state_dict()) if keep_best else None
    bar = tqdm(total=epochs * batches, desc=phase, disable=not progress, unit="batch", mininterval=1.0)
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(train_x), generator=generator)
        total_loss = 0.0
        for b in range(batches):
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            x = augment(train_x[idx], generator, augment_pad) if augment_pad else train_x[idx]
            out = model(x)
            loss = F.cross_entropy(out, train_y[idx])
            if teacher is not None:
                with torch.no_grad():
                    target = F.softmax(teacher(x), dim=1)
                loss = (loss + F.kl_div(F.log_softmax(out, dim=1), target, reduction="batchmean")) / 2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += float(loss)
            bar.update(1)
        fit = Fit(accuracy(model, test_x, test_y), accuracy(model, val_x, val_y), epoch)
        bar.set_postfix(epoch=epoch, loss=f"{total_loss / batches:.4f}", val=f"{100 * fit.validation:.2f}%",
                        test=f"{100 * fit.test:.2f}%")
        log(f"{phase} epoch {epoch}/{epochs}: loss {total_loss / batches:.4f}, validation accuracy "
            f"{100 * fit.validation:.2f}%, test accuracy {100 * fit.test:.2f}%")
        if not keep_best or len(val_x) == 0 or fit.validation > kept.validation:
            kept = fit
            if keep_best:
                best_state = copy.deepcopy(model.state_dict())
    bar.close()
    if keep_best:
        model.load_state_dict(best_state)
        log(f"{phase}: kept epoch {kept.epoch} (validation accuracy {100 * kept.validation:.2f}%)")
    return kept


def _new_model(cfg: TrainConfig, info, module: Optional[nn.Module], state: Optional[Dict[str, torch.Tensor]],
               log: Callable[[str], None]) -> Tuple[dict, nn.Module]:
    """(architecture, model) for cfg.arch: a built-in name, MODULE:FUNCTION or torchvision:NAME (torch_import),
    or the nn.Module given; with `state` (--init's PyTorch state dict), its weights. ParameterError for a model
    whose outputs are not the dataset's classes."""
    if module is None and cfg.arch not in ARCHS:
        module = build_module(cfg.arch, info.input_shape, info.num_classes, cfg.small_input_stem)
    if module is not None:
        if cfg.pool != "max":
            raise ParameterError(f"{{}} is for the built-in architectures; {cfg.arch} pools as its code says", "pool")
        if state is not None:
            _load_state(module, state, cfg.init)
        architecture, model = from_torch(module, info.input_shape, cfg.act_bits, cfg.out_bits, cfg.layer_bits,
                                         cfg.weight_bits, name=cfg.arch, log=log)
        if architecture["num_classes"] != info.num_classes:
            raise ParameterError(f"{{}} {cfg.arch}: the model returns {architecture['num_classes']} values per sample, "
                                 f"but {info.name} has {info.num_classes} classes: build it with "
                                 f"num_classes={info.num_classes}", "arch")
        return architecture, model
    try:
        architecture = make_arch(cfg.arch, info.input_shape, info.num_classes, cfg.act_bits, cfg.out_bits, cfg.pool)
        if cfg.layer_bits:
            architecture = set_layer_bits(architecture, cfg.layer_bits)
    except ValueError as err:
        raise QffsError(str(err)) from None
    model = build_model(architecture, weight_bits=cfg.weight_bits)
    if state is not None:
        set_quantized(model, False)
        _load_state(model, state, cfg.init)
    return architecture, model


def _load_state(module: nn.Module, state: dict, path: str) -> None:
    """module.load_state_dict(state) but for LSQ quantizers (a float model has none), its mismatches a
    ParameterError that names them."""
    state = {k: v for k, v in state.items() if "quantizer" not in k}
    expected = {k: v for k, v in module.state_dict().items() if "quantizer" not in k}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise ParameterError(f"{{}} {path} does not fit the model {{}} builds: "
                             + "; ".join(f"{what}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                                         for what, keys in (("missing", missing), ("unexpected", unexpected),
                                                            ("other shapes", sorted(wrong))) if keys), "init", "arch")
    module.load_state_dict(state, strict=False)


def train(
    dataset: str,
    arch: str | nn.Module,
    out: Optional[str | Path] = None,
    progress: bool = True,
    log: Callable[[str], None] = tqdm.write,
    **options,
) -> dict:
    """Train a float model (or load `init`), LSQ fine-tune it, fine-tune its integer network (the hardware-exact
    phase, unless hardware_epochs is 0), and save the model file to `out`.

    Deterministic on the CPU (the default device); `device="cuda"` trains on a GPU.

    `arch`: a built-in name, "MODULE:FUNCTION" or "torchvision:NAME" (a function that builds an
    nn.Module, see torch_import.build_module), or an nn.Module itself, whose weights are the start
    (float_epochs=0 fine-tunes them as they are). Options are TrainConfig's fields.

    Returns the model file's content, including the measured test accuracies: float, lsq
    (after LSQ fine-tuning), qann (the QANN as trained: after the hardware-exact phase, that
    of the integer network) and, with the phase, integer_before and agreement_before (the
    integer network the LSQ model exports, and its top-1 agreement with the LSQ model).

    Example:
        >>> content = qffs.train("digits", "mlp", out="digits.pt")   # about 10 s on a CPU
        >>> content["accuracy"]["float"], content["accuracy"]["qann"]
        >>> qffs.train("mnist", "lenet", out="lenet.pt", float_epochs=2, qat_epochs=2, data_dir="data")
    """
    module = arch if isinstance(arch, nn.Module) else None
    cfg = TrainConfig(dataset=dataset, arch=f"module {type(arch).__name__}" if module is not None else arch,
                      **options)
    if out is not None:
        check_writable(out)
        check_outputs({"out": out}, {"init": cfg.init})
    info = dataset_info(cfg.dataset)
    init, state = read_init(cfg.init) if cfg.init is not None else (None, None)  # a wrong file fails before the data
    if init is not None and init["dataset"] != cfg.dataset:
        raise ParameterError(f"{{}} {cfg.init} was trained on {init['dataset']}, not {cfg.dataset}", "init")
    if init is not None and init["train"].get("arch", init["arch"]["name"]) != cfg.arch:
        trained = init["train"].get("arch", init["arch"]["name"])
        raise ParameterError(f"{{}} {cfg.init} is a model file of the architecture {trained!r}, which it brings "
                             f"with it; {{}} {cfg.arch!r} contradicts it: give {{}}",
                             "init", "arch", ("arch", trained))
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    generator = torch.Generator().manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    training, validation = split_validation(*load_dataset(cfg.dataset, "train", cfg.data_dir, cfg.download),
                                            cfg.validation)
    data = tuple(tuple(t.to(device) for t in split)
                 for split in (training, validation, load_dataset(cfg.dataset, "test", cfg.data_dir)))
    test_x, test_y = data[2]

    if init is not None:
        init, model = model_from_content(cfg.init, init)
        architecture, input_norm = init["arch"], init["input_norm"]
        if cfg.input_norm is not None and input_normalization(cfg.input_norm, info.input_shape[0]) != input_norm:
            raise ParameterError(f"{{}} {cfg.input_norm} contradicts {{}} {cfg.init}, a model file trained with the "
                                 f"input normalization {input_norm}, which it brings with it", "input_norm", "init")
        float_acc = init["accuracy"]["float"]
        if init["train"].get("validation", 0) != cfg.validation:
            log(f"warning: {cfg.init} (init) was trained with a validation share of "
                f"{init['train'].get('validation', 0)}, this run holds out {cfg.validation}: some validation "
                "images were in its training data, so choosing by validation favours the model as it came")
    else:
        if cfg.qat_epochs == 0:
            raise ParameterError("{} needs {} with a quantized qffs model file (it fine-tunes that one)",
                                 ("qat_epochs", 0), "init")
        architecture, model = _new_model(cfg, info, module, state, log)
        set_quantized(model, False)
        input_norm = input_normalization(cfg.input_norm or (0.0, 1.0), info.input_shape[0])
        model.set_input_norm(input_norm)
        float_acc = accuracy(model.to(device), test_x, test_y) if cfg.float_epochs == 0 else None
        if float_acc is not None and float_acc < 1.5 / info.num_classes:
            log(f"warning: the float model from {cfg.init} has {100 * float_acc:.2f}% test accuracy, near chance "
                f"({100 / info.num_classes:.0f}%): was it trained on normalized inputs? Declare them with "
                "input_norm (--input-norm MEAN,STD)")
    plan_layers(architecture)  # the export rule, checked before any epoch: what cannot be exported is not trained
    check_input_norm(architecture, input_norm)
    model.to(device)
    clock = {"started": time.perf_counter()}

    def lap(phase: str) -> None:
        now = time.perf_counter()
        clock[phase], clock["started"] = now - clock["started"], now

    if cfg.float_epochs > 0:
        set_quantized(model, False)
        float_acc = _fit(model, "float", cfg.float_epochs, cfg.lr, cfg, data, generator, progress, log,
                         augment_pad=info.augment_pad).test
    lap("float")
    teacher = None
    if cfg.distill:
        teacher = copy.deepcopy(model).eval()
        set_quantized(teacher, False)
    set_quantized(model, True)
    lsq = _fit(model, "QAT", cfg.qat_epochs, cfg.qat_lr, cfg, data, generator, progress, log, teacher=teacher)
    lsq_acc = lsq.test
    validation = {"lsq": lsq.validation, "qann": lsq.validation}
    accuracies = {"float": float_acc, "lsq": lsq_acc, "qann": lsq_acc, "validation": validation}
    kept_epoch = None
    lap("qat")
    if cfg.hardware_epochs:
        integer = IntegerModel(model, architecture, info.levels, input_norm)
        exported = predictions(integer, test_x)
        accuracies["integer_before"] = float((exported == test_y).double().mean())
        accuracies["agreement_before"] = float((exported == predictions(model, test_x)).double().mean())
        validation["integer_before"] = accuracy(integer, *data[1])
        log(f"before the hardware-exact phase: LSQ QANN {100 * lsq_acc:.2f}%, the integer network it exports "
            f"{100 * accuracies['integer_before']:.2f}% (validation {100 * validation['integer_before']:.2f}%), "
            f"top-1 agreement {100 * accuracies['agreement_before']:.2f}%")
        phase_generator = torch.Generator().manual_seed(cfg.seed + 1)  # --init lsq.pt adds the same phase
        tuned = _fit(integer, "hardware", cfg.hardware_epochs, cfg.hardware_lr, cfg, data, phase_generator,
                     progress, log, teacher=teacher,
                     keep_best=Fit(accuracies["integer_before"], validation["integer_before"], 0))
        accuracies["qann"], validation["qann"], kept_epoch = tuned.test, tuned.validation, tuned.epoch
    lap("hardware")
    seconds = sum(clock[phase] for phase in ("float", "qat", "hardware"))
    qann = "hardware-exact QANN (the exported network)" if cfg.hardware_epochs else "QANN"
    log(f"float accuracy {100 * float_acc:.2f}%, {qann} accuracy {100 * accuracies['qann']:.2f}% "
        f"({info.name} test split, {len(test_x)} images), trained in {seconds:.0f} s "
        f"(hardware-exact phase {clock['hardware']:.0f} s"
        + (f", kept its epoch {kept_epoch} of {cfg.hardware_epochs}" if cfg.hardware_epochs else "") + ")")

    acts = [node["bits"] for node in architecture["nodes"] if node["op"] == "act"]
    record = {
        "arch": architecture,
        "quantized": True,
        "hardware_exact": bool(cfg.hardware_epochs),
        "bits": {"act": max(acts[:-1], default=None), "out": acts[-1], "weight": cfg.weight_bits, "layers": acts},
        "input_norm": input_norm,
        "dataset": info.name,
        "input_shape": list(info.input_shape),
        "num_classes": info.num_classes,
        "input_levels": info.levels,
        "accuracy": accuracies,
        "train": {**asdict(cfg), "seconds": seconds, "validation_images": len(data[1][0]),
                  "hardware_epoch_kept": kept_epoch,
                  "phase_seconds": {phase: clock[phase] for phase in ("float", "qat", "hardware")},
                  "torch": str(torch.__version__), "threads": torch.get_num_threads()},
    }
    if out is None:
        return {**record, "state_dict": model.state_dict()}
    try:
        content = save_model_file(out, model, record)
    except QffsError as err:
        raise QffsError(f"{err}; {keep_elsewhere(out, model, record)}") from None
    log(f"wrote {out}")
    return content


def keep_elsewhere(out: str | Path, model: nn.Module, record: dict) -> str:
    """Where a trained model whose model file could not be written at `out` was kept instead (a new folder in the
    temporary directory), said as a sentence; or that it could not be kept anywhere."""
    try:
        folder = Path(tempfile.mkdtemp(prefix="qffs-model-"))
    except OSError as err:
        return f"the trained model could not be kept anywhere either ({err.strerror or err})"
    try:
        save_model_file(folder / Path(out).name, model, record)
    except QffsError as err:
        shutil.rmtree(folder, ignore_errors=True)
        return f"the trained model could not be kept anywhere either ({err})"
    return f"the trained model was kept in {folder / Path(out).name}: move it where you want it"

