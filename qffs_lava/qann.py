"""The integer quantized ANN: the closed form every QFFS network settles to ("qann" backend).

For each synaptic layer, with z_prev the previous layer's spike counts (the first layer
sees K * x_int), DESIGN.md section 3:

    z = clip(floor((W . z_prev + K * b + vInit) / th), 0, zMax)

max pooling takes the max of the counts, flatten reshapes. Computed in float64 with
torch, which is exact for these integers (all far below 2^53).
"""

from __future__ import annotations

from typing import List

import numpy as np
import torch
import torch.nn.functional as F

from qffs_lava.dynamics import NeuronParams, settled_count
from qffs_lava.netfile import ConvLayer, DenseLayer, FlattenLayer, InputLayer, MaxPoolLayer, Network


def encode_inputs(x, input_layer: InputLayer) -> torch.Tensor:
    """x_int = floor(x * inputScale + 1/2) as int64, for dataset values x (floats in [0, 1])."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float64)
    return torch.floor(x * input_layer.input_scale + 0.5).to(torch.int64)


def neuron_params(layer) -> NeuronParams:
    """A layer's QFFS parameters as int64 tensors broadcasting over (batch, N) or (batch, C, H, W)."""
    n = layer.neurons
    shape = (-1,) if isinstance(layer, DenseLayer) else (-1, 1, 1)
    return NeuronParams(threshold=torch.as_tensor(n.threshold).reshape(shape), z_max=n.z_max,
                        v_init=torch.as_tensor(n.v_init).reshape(shape))


def synaptic_input(layer, counts: torch.Tensor) -> torch.Tensor:
    """W . counts for a dense or conv layer, in float64 (batch first, no bias)."""
    weight = torch.as_tensor(layer.weight, dtype=torch.float64)
    counts = counts.to(torch.float64)
    if isinstance(layer, DenseLayer):
        return counts @ weight.T
    return F.conv2d(counts, weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)


def layer_bias(layer, ndim: int) -> torch.Tensor:
    """The per-step bias, shaped to broadcast over (batch, N) or (batch, C, H, W)."""
    bias = torch.as_tensor(layer.bias, dtype=torch.float64)
    return bias if ndim == 2 else bias[:, None, None]


def qann_forward(network: Network, x, all_layers: bool = False):
    """Output counts (batch, classes) as int64, or every layer's counts when all_layers.

    x: dataset values (batch, *input shape), floats in [0, 1].
    """
    x_int = encode_inputs(x, network.input).reshape(-1, *network.input.shape)
    counts = x_int * network.bias_steps  # the input is presented for K steps
    outputs: List[torch.Tensor] = [counts]
    for layer in network.layers[1:]:
        if isinstance(layer, (DenseLayer, ConvLayer)):
            total = synaptic_input(layer, counts) + network.bias_steps * layer_bias(layer, counts.dim())
            counts = settled_count(total, neuron_params(layer)).to(torch.int64)
        elif isinstance(layer, MaxPoolLayer):
            counts = F.max_pool2d(counts.to(torch.float64), layer.kernel_size, layer.stride, layer.padding).to(torch.int64)
        elif isinstance(layer, FlattenLayer):
            counts = counts.reshape(counts.shape[0], -1)
        outputs.append(counts)
    return outputs if all_layers else counts


def qann_predict(network: Network, x, batch_size: int = 1000) -> torch.Tensor:
    """Predicted classes: argmax of the output counts, lowest index on ties."""
    return torch.cat([qann_forward(network, x[i:i + batch_size]).argmax(dim=1) for i in range(0, len(x), batch_size)])
