"""model.pt -> net.h5, with the fidelity of the integer network measured on the test split."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional

import torch
from qffs_export.convert import convert
from qffs_export.integer import trained_qann
from torch import nn

from qffs_lava.ann.datasets import dataset_info, load_dataset, not_found
from qffs_lava.ann.modelfile import load_model_file
from qffs_lava.ann.models import predict
from qffs_lava.backends.pytorch import TorchNetwork
from qffs_lava.errors import DatasetNotFound, QffsError
from qffs_lava.fileio import check_outputs, check_writable
from qffs_lava.ir.loihi import loihi_problems
from qffs_lava.ir.netfile import write_net
from qffs_lava.ir.network import Network
from qffs_lava.reports import layer_table


def fidelity(network: Network, trained: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 1000) -> dict:
    """The integer QANN (the network) against the QANN as trained (`integer.trained_qann`).

    Accuracies and top-1 agreement, and per neuron layer (by model name) the largest
    |pre-activation difference| in threshold units and the share of neurons whose counts
    differ, each network run on its own (so a difference carries forward).
    """
    torch_net = TorchNetwork(network)
    names = network.meta["layer_names"]
    trained_pred, int_pred = [], []
    largest: Dict[str, float] = {}
    differing: Dict[str, int] = {}
    neurons: Dict[str, int] = {}
    was_training = trained.training
    trained.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            ours: Dict[str, torch.Tensor] = {}
            trained_pred.append(predict(trained(x, ours)))
            exact: Dict[int, torch.Tensor] = {}
            int_pred.append(predict(torch_net.qann(x, preactivations=exact)).cpu())
            for index, pre in exact.items():
                name, layer = names[index], network.layers[index]
                mine = ours[name].double().reshape(pre.shape)
                pre = pre.double().cpu()
                z_max = layer.neurons.z_max
                largest[name] = max(largest.get(name, 0.0), float((mine - pre).abs().max()))
                changed = torch.floor(mine).clamp(0, z_max) != torch.floor(pre).clamp(0, z_max)
                differing[name] = differing.get(name, 0) + int(changed.sum())
                neurons[name] = neurons.get(name, 0) + pre.numel()
    trained.train(was_training)
    trained_pred, int_pred = torch.cat(trained_pred), torch.cat(int_pred)
    return {
        "samples": len(images),
        "qann_accuracy": float((trained_pred == labels).double().mean()),
        "int_qann_accuracy": float((int_pred == labels).double().mean()),
        "agreement": float((trained_pred == int_pred).double().mean()),
        "preactivation_max_difference": largest,
        "count_mismatch": {name: differing[name] / neurons[name] for name in neurons},
    }


def export(model_path: str | Path, net_path: str | Path, samples: Optional[int] = None, data_dir: str = "data",
           loihi_check: bool = True, log: Callable[[str], None] = print) -> Network:
    """Convert, check Loihi 2's ranges, measure fidelity, and write net.h5 (atomically).

    `samples` limits the fidelity measurement to the first test samples; 0 skips it, so
    no dataset is needed.

    Refuses (QffsError, nothing written) when the network leaves Loihi 2's ranges,
    unless loihi_check is False, which writes it with a warning. Returns the network written.

    Example:
        >>> network = qffs.export("digits.pt", "digits.h5")   # prints the layer table and the fidelity
        >>> network.meta["qann_agreement"]                    # top-1 agreement with the QANN as trained
    """
    check_writable(net_path)
    check_outputs({"net_path": net_path}, {"model_path": model_path})
    content, model = load_model_file(model_path)
    network = convert(content, model)
    problems = loihi_problems(network)
    if problems and loihi_check:
        raise QffsError("the network does not fit Loihi 2 ({} exports it anyway):\n  " + "\n  ".join(problems),
                        ("loihi_check", False))
    for problem in problems:
        log(f"warning: {problem}")
    qann = "hardware-exact" if content.get("hardware_exact") else "LSQ, float weights"
    network.meta.update({"float_accuracy": content["accuracy"]["float"], "loihi_ranges": not problems,
                         "qann_forward": qann})
    log(layer_table(network))
    if samples == 0:
        network.meta["fidelity_samples"] = 0
        log("fidelity not measured (0 test samples)")
    else:
        try:
            images, labels = load_dataset(content["dataset"], "test", data_dir)
        except DatasetNotFound:
            raise not_found(dataset_info(content["dataset"]), Path(data_dir), False,
                            ("export without measuring fidelity: {}", ("samples", 0))) from None
        if samples is not None:
            images, labels = images[:samples], labels[:samples]
        figures = fidelity(network, trained_qann(content, model), images, labels)
        network.meta.update({
            "qann_accuracy": figures["qann_accuracy"],
            "int_qann_accuracy": figures["int_qann_accuracy"],
            "qann_agreement": figures["agreement"],
            "preactivation_max_difference": figures["preactivation_max_difference"],
            "count_mismatch": figures["count_mismatch"],
            "fidelity_samples": figures["samples"],
        })
        log(f"fidelity on {figures['samples']} {content['dataset']} test samples: "
            f"QANN as trained ({qann}) {100 * figures['qann_accuracy']:.2f}%, integer QANN "
            f"{100 * figures['int_qann_accuracy']:.2f}%, top-1 agreement {100 * figures['agreement']:.2f}%")
        log("largest pre-activation difference in threshold units (share of counts that differ), per layer: "
            + ", ".join(f"{name} {diff:.3g} ({100 * figures['count_mismatch'][name]:.2f}%)"
                        for name, diff in figures["preactivation_max_difference"].items()))
    write_net(net_path, network)
    log(f"wrote {net_path}")
    return network
