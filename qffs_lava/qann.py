"""The integer quantized ANN: the closed form every QFFS network settles to ("qann" backend).

For each synaptic layer, with z_prev the previous layer's spike counts (the first layer
sees K * x_int), DESIGN.md section 3:

    z = clip(floor((W . z_prev + K * b + vInit) / th), 0, zMax)

max pooling takes the max of the counts, flatten reshapes. Computed with torch in
`exact_dtype(network)`: float32 where every value the network can reach stays below
2^24 in magnitude (every network inside Loihi 2's ranges), else float64.
"""

from __future__ import annotations

from typing import List

import numpy as np
import torch
import torch.nn.functional as F

from qffs_lava.dynamics import NeuronParams, settled_count
from qffs_lava.netfile import (
    ConvLayer,
    DenseLayer,
    FlattenLayer,
    InputLayer,
    MaxPoolLayer,
    Network,
    membrane_bounds,
    presynaptic_count_bounds,
)


def exact_dtype(network: Network) -> torch.dtype:
    """float32 when every count, current, membrane and QANN sum stays below 2^23 in magnitude, else float64."""
    bounds = presynaptic_count_bounds(network)
    worst = max(bounds)
    for layer, bound in zip(network.synaptic_layers, bounds):
        low, high = membrane_bounds(layer, bound, network.bias_steps)
        fan_in = int(np.abs(layer.weight.reshape(layer.weight.shape[0], -1)).sum(1).max())
        total = fan_in * bound + network.bias_steps * int(np.abs(layer.bias).max()) + int(layer.neurons.threshold.max())
        worst = max(worst, -low, high, total)
    return torch.float32 if worst < 2**23 else torch.float64


def encode_inputs(x, input_layer: InputLayer) -> torch.Tensor:
    """x_int = floor(x * inputScale + 1/2) as int64, for dataset values x (floats in [0, 1])."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float64)
    return torch.floor(x * input_layer.input_scale + 0.5).to(torch.int64)


def neuron_params(layer, dtype: torch.dtype) -> NeuronParams:
    """A layer's QFFS parameters as `dtype` tensors broadcasting over (batch, N) or (batch, C, H, W)."""
    n = layer.neurons
    shape = (-1,) if isinstance(layer, DenseLayer) else (-1, 1, 1)
    return NeuronParams(threshold=torch.as_tensor(n.threshold, dtype=dtype).reshape(shape), z_max=n.z_max,
                        v_init=torch.as_tensor(n.v_init, dtype=dtype).reshape(shape))


def synaptic_input(layer, inputs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """W . inputs for a dense or conv layer (batch first, no bias), in the dtype of `weight`."""
    inputs = inputs.to(weight.dtype)
    if isinstance(layer, DenseLayer):
        return inputs @ weight.T
    return F.conv2d(inputs, weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)


def layer_bias(layer, dtype: torch.dtype) -> torch.Tensor:
    """The per-step bias as `dtype`, shaped to broadcast over (batch, N) or (batch, C, H, W)."""
    bias = torch.as_tensor(layer.bias, dtype=dtype)
    return bias if isinstance(layer, DenseLayer) else bias[:, None, None]


def qann_forward(network: Network, x, all_layers: bool = False):
    """Output counts (batch, classes) as int64, or every layer's counts when all_layers.

    x: dataset values (batch, *input shape), floats in [0, 1].
    """
    dtype = exact_dtype(network)
    x_int = encode_inputs(x, network.input).reshape(-1, *network.input.shape)
    counts = (x_int * network.bias_steps).to(dtype)  # the input is presented for K steps
    outputs: List[torch.Tensor] = [counts]
    for layer in network.layers[1:]:
        if isinstance(layer, (DenseLayer, ConvLayer)):
            weight = torch.as_tensor(layer.weight, dtype=dtype)
            total = synaptic_input(layer, counts, weight) + network.bias_steps * layer_bias(layer, dtype)
            counts = settled_count(total, neuron_params(layer, dtype))
        elif isinstance(layer, MaxPoolLayer):
            counts = F.max_pool2d(counts, layer.kernel_size, layer.stride, layer.padding)
        elif isinstance(layer, FlattenLayer):
            counts = counts.reshape(counts.shape[0], -1)
        outputs.append(counts)
    outputs = [c.to(torch.int64) for c in outputs]
    return outputs if all_layers else outputs[-1]


def qann_predict(network: Network, x, batch_size: int = 1000) -> torch.Tensor:
    """Predicted classes: argmax of the output counts, lowest index on ties."""
    return torch.cat([qann_forward(network, x[i:i + batch_size]).argmax(dim=1) for i in range(0, len(x), batch_size)])
