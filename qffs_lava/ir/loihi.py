"""Loihi 2's ranges (DESIGN.md section 3) and the checks every exported network must pass.

Weights are an 8-bit signed mantissa in mixed-sign mode: even integers in [-256, 254]
(lava's fixed-point Dense drops the lowest bit of any other). The membrane is 24-bit
signed, so thresholds and the worst-case |v| stay below 2^23. A per-step bias is a
13-bit mantissa times 2^e, 0 <= e <= 7.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np

from qffs_lava.ir.layers import NeuronLayer
from qffs_lava.ir.network import Network

WEIGHT_MIN, WEIGHT_MAX = -256, 254
STATE_LIMIT = 2**23
BIAS_MANTISSA_BITS, BIAS_MAX_EXP = 13, 7


def bias_mantissa_exponent(bias: int) -> Tuple[int, int]:
    """(mantissa, exponent) with bias == mantissa * 2^exponent, the smallest exponent that fits 13 bits.

    Raises ValueError when no exponent 0..7 represents `bias` exactly.
    """
    limit = 2 ** (BIAS_MANTISSA_BITS - 1)
    for exponent in range(BIAS_MAX_EXP + 1):
        mantissa, rest = divmod(int(bias), 2**exponent)
        if rest == 0 and -limit <= mantissa < limit:
            return mantissa, exponent
    raise ValueError(f"bias {bias} is not a {BIAS_MANTISSA_BITS}-bit mantissa times 2^0..2^{BIAS_MAX_EXP}")


def count_bounds(network: Network) -> List[int]:
    """For each layer, the largest net spike count its output reaches at any step.

    The input delivers K * max x_int; a neuron layer at most zMax; pools and flattens their source's.
    """
    bounds: List[int] = []
    for i, layer in enumerate(network.layers):
        if i == 0:
            bounds.append(network.bias_steps * math.floor(network.input.input_scale + 0.5))
        elif isinstance(layer, NeuronLayer):
            bounds.append(layer.neurons.z_max)
        else:
            bounds.append(bounds[layer.inputs[0]])
    return bounds


def membrane_bounds(network: Network, index: int, bounds: List[int]) -> Tuple[int, int]:
    """Worst-case (lowest, highest) membrane potential of neuron layer `index`.

    v = vInit + sum_j W_j . z_j(t) + t_b * b - th * z with 0 <= z_j <= bound of synapse j's
    source, 0 <= t_b <= K and 0 <= z <= zMax, every input assumed present (conv borders too).
    """
    layer = network.layers[index]
    n = layer.neurons
    high, low = n.v_init.astype(np.int64), n.v_init.astype(np.int64)
    for synapse, source in zip(layer.synapses, layer.inputs):
        rows = synapse.rows().astype(np.int64)
        high = high + np.clip(rows, 0, None).sum(1) * bounds[source]
        low = low + np.clip(rows, None, 0).sum(1) * bounds[source]
    bias = layer.bias.astype(np.int64)
    high = high + network.bias_steps * np.clip(bias, 0, None)
    low = low + network.bias_steps * np.clip(bias, None, 0)
    return int((low - n.threshold * n.z_max).min()), int(high.max())


def loihi_problems(network: Network) -> List[str]:
    """Every way the network leaves Loihi 2's ranges, one message each naming layer, quantity and limit."""
    problems = []
    bounds = count_bounds(network)
    for i, layer in network.neuron_layers:
        for j, synapse in enumerate(layer.synapses):
            w, where = synapse.weight, f"layer {i}" + (f" synapse {j}" if j else "")
            if w.size and (w.min() < WEIGHT_MIN or w.max() > WEIGHT_MAX):
                problems.append(f"{where}: weights span [{w.min()}, {w.max()}], Loihi 2 holds [{WEIGHT_MIN}, "
                                f"{WEIGHT_MAX}]")
            if np.any(w % 2):
                problems.append(f"{where}: {int(np.count_nonzero(w % 2))} odd weights; mixed-sign weights must "
                                "be even")
        if layer.neurons.threshold.max() >= STATE_LIMIT:
            problems.append(f"layer {i}: threshold {layer.neurons.threshold.max()} is not below 2^23")
        for b in np.unique(layer.bias):
            try:
                bias_mantissa_exponent(int(b))
            except ValueError as err:
                problems.append(f"layer {i}: {err}")
                break
        low, high = membrane_bounds(network, i, bounds)
        if max(-low, high) >= STATE_LIMIT:
            problems.append(f"layer {i}: worst-case |v| {max(-low, high)} is not below 2^23 (24-bit membrane)")
    return problems
