"""Quantized ANN (model file) -> integer QFFS network: the paper's Quant-ANN-to-SNN conversion, for graphs.

plan.py says which SNN layers a model's graph becomes, integer.py what integers each
neuron layer holds (the grid, shared with the trainer's hardware-exact phase); this file
turns them into the net.h5 layers of an `ir.Network`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List

import numpy as np
import torch
from qffs_lava.export.integer import IntegerLayer, IntegerModel
from torch import nn

from qffs_lava.ir.layers import ConvSynapse, DenseSynapse, Layer, NeuronLayer, Neurons
from qffs_lava.ir.network import Network


def _ints(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.int64)


def _neuron_layer(integers: IntegerLayer, shape, inputs, bias_steps: int) -> NeuronLayer:
    synapses = tuple(ConvSynapse(_ints(s.weight), s.stride, s.padding, (1, 1), int(s.groups)) if s.conv
                     else DenseSynapse(_ints(s.weight)) for s in integers.synapses)
    threshold = _ints(integers.threshold)
    neurons = Neurons(threshold=threshold, v_init=_ints(integers.v_init), z_max=integers.z_max,
                      bias_steps=bias_steps)
    return NeuronLayer(tuple(shape), synapses, _ints(integers.bias), neurons, inputs)


def convert(content: Dict[str, Any], model: nn.Module) -> Network:
    """The integer QFFS network of a quantized model (from modelfile.load_model_file)."""
    integer_model = IntegerModel.of(content, model)
    with torch.no_grad():
        integers = integer_model.layers()
    index: Dict[str, int] = {}
    layers: List[Layer] = []
    for planned in integer_model.plan:
        inputs = tuple(index[s] for s in planned.sources)
        if planned.paths:
            layers.append(_neuron_layer(integers[planned.name], integer_model.shapes[planned.name], inputs,
                                        integer_model.bias_steps))
        else:
            layers.append(dataclasses.replace(planned.layer, inputs=inputs))
        index[planned.name] = len(layers) - 1
    return Network(layers, {
        "dataset": content["dataset"],
        "num_classes": int(content["arch"]["num_classes"]),
        "arch": content["arch"]["name"],
        "bits": list(content["bits"]["layers"]),
        "K": integer_model.bias_steps,
        "input_normalization": content["input_norm"],
        "layer_names": [planned.name for planned in integer_model.plan],
    })
