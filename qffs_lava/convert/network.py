"""Quantized ANN (model file) -> integer QFFS network: the paper's Quant-ANN-to-SNN conversion, for graphs.

plan.py says which SNN layers a model's graph becomes, integer.py what integers each neuron
layer holds (the grid, shared with the trainer's hardware-exact phase) and builds the
`ir.Network`; this file adds what the model file records about it.
"""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn

from qffs_lava.ann.datasets import is_folder
from qffs_lava.ann.folders import trained_augmentation
from qffs_lava.convert.integer import IntegerModel
from qffs_lava.ir.network import Network


def convert(content: Dict[str, Any], model: nn.Module) -> Network:
    """The integer QFFS network of a quantized model (from modelfile.load_model_file)."""
    integer_model = IntegerModel.of(content, model)
    with torch.no_grad():
        network, _ = integer_model.network()
    network.meta.update({
        "dataset": content["dataset"],
        "num_classes": int(content["arch"]["num_classes"]),
        "arch": content["arch"]["name"],
        "bits": list(content["bits"]["layers"]),
        "K": integer_model.bias_steps,
        "input_normalization": content["input_norm"],
    })
    if content.get("classes"):
        network.meta["classes"] = list(content["classes"])
    if is_folder(content["dataset"]):  # its augmentation decides how qffs-run reads the folder's images
        network.meta["augment"] = trained_augmentation(content)
    return network
