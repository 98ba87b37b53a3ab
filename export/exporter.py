"""model.pt -> net.h5, with the fidelity of the integer network measured on the test split."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from qffs_lava.ann.datasets import FOLDER_PREFIX, dataset_info, is_folder, not_found, open_split
from qffs_lava.ann.folders import FolderError, check_classes, trained_augmentation
from qffs_lava.ann.loaders import Shard, Tensors, loader
from qffs_lava.ann.modelfile import load_model_file
from qffs_lava.ann.models import predict
from qffs_lava.backends.pytorch import TorchNetwork
from qffs_lava.convert.integer import trained_qann
from qffs_lava.convert.network import convert
from qffs_lava.distributed import all_combined, world
from qffs_lava.errors import DatasetNotFound, ParameterError, QffsError
from qffs_lava.fileio import check_outputs, check_writable
from qffs_lava.ir.loihi import loihi_problems
from qffs_lava.ir.netfile import write_net
from qffs_lava.ir.network import Network
from qffs_lava.reports import layer_table, membrane_table

log = logging.getLogger(__name__)


def fidelity(network: Network, trained: nn.Module, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """The integer QANN (the network) against the QANN as trained (`convert.integer.trained_qann`), over (images,
    labels) batches (under torchrun, this rank's share; the figures are all ranks').

    Accuracies and top-1 agreement, and per neuron layer (by model name) the largest
    |pre-activation difference| in threshold units and the share of neurons whose counts
    differ, each network run on its own (so a difference carries forward), and the largest |v|
    its neurons reach in the SNN (the torch backend, synchronous time, run until it settles). A read-out output
    is measured by the agreement of its argmax (its potential is the logits on another scale) and its largest |v|.
    """
    torch_net = TorchNetwork(network)
    names = network.meta["layer_names"]
    counts = {"samples": 0, "qann": 0, "int_qann": 0, "agreement": 0}
    largest: Dict[str, float] = {}
    differing: Dict[str, int] = {}
    neurons: Dict[str, int] = {}
    peaks: Dict[str, int] = {}
    was_training = trained.training
    trained.eval()
    with torch.no_grad():
        for x, labels in batches:
            ours: Dict[str, torch.Tensor] = {}
            trained_pred = predict(trained(x, ours))
            exact: Dict[int, torch.Tensor] = {}
            int_pred = predict(torch_net.qann(x, preactivations=exact)).cpu()
            for index, peak in torch_net.membrane_peaks(x).items():
                peaks[names[index]] = max(peaks.get(names[index], 0), peak)
            counts["samples"] += len(x)
            counts["qann"] += int((trained_pred == labels).sum())
            counts["int_qann"] += int((int_pred == labels).sum())
            counts["agreement"] += int((trained_pred == int_pred).sum())
            for index, pre in exact.items():
                name, layer = names[index], network.layers[index]
                if not layer.neurons.fires:  # a read-out: no counts, its potential on another scale (agreement)
                    continue
                mine = ours[name].double().reshape(pre.shape)
                pre = pre.double().cpu()
                z_max = layer.neurons.z_max
                largest[name] = max(largest.get(name, 0.0), float((mine - pre).abs().max()))
                changed = torch.floor(mine).clamp(0, z_max) != torch.floor(pre).clamp(0, z_max)
                differing[name] = differing.get(name, 0) + int(changed.sum())
                neurons[name] = neurons.get(name, 0) + pre.numel()
    trained.train(was_training)
    counts, differing, neurons = (all_combined(figures) for figures in (counts, differing, neurons))
    largest, peaks = (all_combined(figures, max) for figures in (largest, peaks))
    samples = counts["samples"]
    return {
        "samples": samples,
        "qann_accuracy": counts["qann"] / samples,
        "int_qann_accuracy": counts["int_qann"] / samples,
        "agreement": counts["agreement"] / samples,
        "preactivation_max_difference": largest,
        "count_mismatch": {name: differing[name] / neurons[name] for name in neurons},
        "membrane_peak": peaks,
    }


def test_split(content: dict, model_path: str | Path, data_dir: str | Path, dataset: Optional[str] = None
               ) -> Dataset:
    """The test split of the data a model file was trained on, found in `data_dir`, or for an image folder that has
    moved in `dataset` (folder:NEWPATH); an image folder's at the model's input size, read as it was trained, its
    classes checked against the model's. A QffsError that says how to go on where the data is not there."""
    trained = content["dataset"]
    if trained.startswith("python:"):
        raise QffsError(f"{model_path} was trained on your own {trained[7:]} data, which qffs-export cannot load: "
                        "export without measuring fidelity ({}), then measure it with qffs.run", ("samples", 0))
    folder = is_folder(trained)
    if dataset is not None and not (folder and is_folder(dataset)):
        where = ("give its new place as folder:PATH" if folder else f"{trained} is found in {{}}")
        raise ParameterError(f"{{}} is for a model trained on an image folder that has moved; {model_path} was "
                             f"trained on {trained}: {where}", ("dataset", dataset), *(() if folder else ("data_dir",)))
    if folder and dataset is None and not Path(trained[len(FOLDER_PREFIX):]).is_dir():
        raise FolderError(f"image folder {trained[len(FOLDER_PREFIX):]}/, which {model_path} was trained on, is not "
                          "there (moved or deleted): give its new place with {} (its classes must be the model's), "
                          "or export without measuring fidelity: {}", ("dataset", "folder:NEWPATH"), ("samples", 0))
    source = dataset or trained
    try:
        info = dataset_info(source, content["input_shape"][1] if folder else None,
                            trained_augmentation(content) if folder else None)
        check_classes(info, content.get("classes"), "the model")
        return open_split(info, "test", data_dir)
    except DatasetNotFound:
        raise not_found(dataset_info(trained), Path(data_dir), False,
                        ("export without measuring fidelity: {}", ("samples", 0))) from None


def export(model_path: str | Path, net_path: str | Path, samples: Optional[int] = None, data_dir: str = "data",
           loihi_check: bool = True, dataset: Optional[str] = None) -> Network:
    """Convert, check Loihi 2's ranges, measure fidelity, and write net.h5 (atomically).

    `samples` limits the fidelity measurement to the first test samples; 0 skips it, so
    no dataset is needed. The test split is the model's dataset's, found in `data_dir`;
    for a model trained on an image folder that has moved, `dataset` ("folder:NEWPATH")
    gives its new place (its classes must be the model's). The data is found before
    anything is converted or logged.

    The layer table, the fidelity and the membrane table are logged at INFO (logger "qffs_export.exporter";
    qffs-export prints them on stdout). Under torchrun, the ranks share the fidelity samples; rank 0 writes.

    Refuses (QffsError, nothing written) when the network leaves Loihi 2's ranges,
    unless loihi_check is False, which writes it with a warning. Returns the network written.

    Example:
        >>> network = qffs.export("digits.pt", "digits.h5")   # logs the layer table and the fidelity
        >>> network.meta["qann_agreement"]                    # top-1 agreement with the QANN as trained
    """
    check_writable(net_path)
    check_outputs({"net_path": net_path}, {"model_path": model_path})
    ranks = world()
    content, model = load_model_file(model_path)
    test = test_split(content, model_path, data_dir, dataset) if samples != 0 else None
    network = convert(content, model)
    problems = loihi_problems(network)
    if problems and loihi_check:
        raise QffsError("the network does not fit Loihi 2 ({} exports it anyway):\n  " + "\n  ".join(problems),
                        ("loihi_check", False))
    for problem in problems:
        log.warning(problem)
    qann = "hardware-exact" if content.get("hardware_exact") else "LSQ, float weights"
    network.meta.update({"float_accuracy": content["accuracy"]["float"], "loihi_ranges": not problems,
                         "qann_forward": qann})
    log.info(layer_table(network))
    if test is None:
        network.meta["fidelity_samples"] = 0
        log.info("fidelity not measured (0 test samples)")
    else:
        if samples is not None:
            test = Subset(test, range(min(samples, len(test))))
        in_memory = isinstance(test, Tensors) or isinstance(getattr(test, "dataset", None), Tensors)
        batch = 1000 if in_memory else 128
        log.debug(f"fidelity: {len(test)} test samples in batches of {batch}, over {ranks.size} rank(s)")
        batches = loader(test, batch, Shard(len(test), ranks), 0 if in_memory else 2)
        figures = fidelity(network, trained_qann(content, model), batches)
        network.meta.update({
            "qann_accuracy": figures["qann_accuracy"],
            "int_qann_accuracy": figures["int_qann_accuracy"],
            "qann_agreement": figures["agreement"],
            "preactivation_max_difference": figures["preactivation_max_difference"],
            "count_mismatch": figures["count_mismatch"],
            "membrane_peak": figures["membrane_peak"],
            "fidelity_samples": figures["samples"],
        })
        log.info(f"fidelity on {figures['samples']} {dataset or content['dataset']} test samples: "
                 f"QANN as trained ({qann}) {100 * figures['qann_accuracy']:.2f}%, integer QANN "
                 f"{100 * figures['int_qann_accuracy']:.2f}%, top-1 agreement {100 * figures['agreement']:.2f}%")
        log.info("largest pre-activation difference in threshold units (share of counts that differ), per layer: "
                 + ", ".join(f"{name} {diff:.3g} ({100 * figures['count_mismatch'][name]:.2f}%)"
                             for name, diff in figures["preactivation_max_difference"].items()))
        log.info(membrane_table(network))
    if ranks.main:
        write_net(net_path, network)
        log.info(f"wrote {net_path}")
    return network
