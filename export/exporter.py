"""model.pt -> net.h5, with the fidelity of the integer network measured on the test split."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch
from qffs_lava.export.convert import convert

from qffs_lava.ann.datasets import load_dataset
from qffs_lava.ann.modelfile import load_model_file
from qffs_lava.ann.models import predict
from qffs_lava.backends.pytorch import qann_predict
from qffs_lava.errors import QffsError
from qffs_lava.fileio import check_outputs, check_writable
from qffs_lava.ir.loihi import loihi_problems
from qffs_lava.ir.netfile import write_net
from qffs_lava.ir.network import Network
from qffs_lava.summary import layer_table


def fidelity(network: Network, model, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Integer QANN (from the network) against the float QANN (the model): accuracies and top-1 agreement."""
    with torch.no_grad():
        float_pred = torch.cat([predict(model(images[i:i + 1000])) for i in range(0, len(images), 1000)])
    int_pred = qann_predict(network, images)
    return {
        "samples": len(images),
        "float_qann_accuracy": float((float_pred == labels).double().mean()),
        "int_qann_accuracy": float((int_pred == labels).double().mean()),
        "agreement": float((float_pred == int_pred).double().mean()),
    }


def export(model_path: str | Path, net_path: str | Path, samples: Optional[int] = None, data_dir: str = "data",
           loihi_check: bool = True, log: Callable[[str], None] = print) -> Network:
    """Convert, check Loihi 2's ranges, measure fidelity, and write net.h5 (atomically).

    `samples` limits the fidelity measurement to the first test samples; 0 skips it, so
    no dataset is needed.

    Refuses (QffsError, nothing written) when the network leaves Loihi 2's ranges,
    unless loihi_check is False, which writes it with a warning.
    """
    check_writable(net_path)
    check_outputs({"net": net_path}, {"model": model_path})
    content, model = load_model_file(model_path)
    network = convert(content, model)
    problems = loihi_problems(network)
    if problems and loihi_check:
        raise QffsError("the network does not fit Loihi 2 (use --no-loihi-check to export anyway):\n  "
                        + "\n  ".join(problems))
    for problem in problems:
        log(f"warning: {problem}")
    network.meta.update({"float_accuracy": content["accuracy"]["float"], "loihi_ranges": not problems})
    log(layer_table(network))
    if samples == 0:
        network.meta["fidelity_samples"] = 0
        log("fidelity not measured (--samples 0)")
    else:
        images, labels = load_dataset(content["dataset"], "test", data_dir)
        if samples is not None:
            images, labels = images[:samples], labels[:samples]
        figures = fidelity(network, model, images, labels)
        network.meta.update({
            "float_qann_accuracy": figures["float_qann_accuracy"],
            "int_qann_accuracy": figures["int_qann_accuracy"],
            "qann_agreement": figures["agreement"],
            "fidelity_samples": figures["samples"],
        })
        log(f"fidelity on {figures['samples']} {content['dataset']} test samples: "
            f"float QANN {100 * figures['float_qann_accuracy']:.2f}%, integer QANN "
            f"{100 * figures['int_qann_accuracy']:.2f}%, top-1 agreement {100 * figures['agreement']:.2f}%")
    write_net(net_path, network)
    log(f"wrote {net_path}")
    return network
