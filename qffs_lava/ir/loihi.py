"""Loihi 2's ranges (docs/format.md, "Loihi 2's ranges") and the checks every exported network must pass.

Every Loihi 2 range the project uses is stated here and only here. Weights are an 8-bit
signed mantissa m in [-128, 127] in mixed-sign mode, stored as the even integers 2 m in
[-256, 254] (lava's fixed-point Dense drops the lowest bit of any other). The membrane is
24-bit signed, so thresholds and the worst-case |v| stay below 2^23. A per-step bias is a
13-bit signed mantissa times 2^e, 0 <= e <= 7.

The worst case (`membrane_bounds`) assumes every source at its count bound (`count_bounds`)
at once; `convert.integer` chooses each channel's grid so that it holds after rounding.
"""

from __future__ import annotations

import math
from typing import Any, List, Tuple

import numpy as np

from qffs_lava.dynamics import round_half_up
from qffs_lava.ir.layers import NeuronLayer
from qffs_lava.ir.network import Network

#: A weight's 8-bit signed mantissa; stored weights are twice it (even, mixed-sign mode).
WEIGHT_MANTISSA_MIN, WEIGHT_MANTISSA_MAX = -128, 127
WEIGHT_MIN, WEIGHT_MAX = 2 * WEIGHT_MANTISSA_MIN, 2 * WEIGHT_MANTISSA_MAX
STATE_LIMIT = 2**23
BIAS_MANTISSA_BITS, BIAS_MAX_EXP = 13, 7
#: A value of |value| < BIAS_LIMIT has a nearest bias (at e = 7 its mantissa round(value / 2^7) fits 13 bits).
#: Rounding moves it by at most max(1/2, BIAS_ROUNDING |value|): e is the smallest exponent that fits, so
#: e >= 1 only where round(value / 2^(e-1)) did not, i.e. 2^(e-1) <= |value| / (2^12 - 1/2).
BIAS_LIMIT = (2 ** (BIAS_MANTISSA_BITS - 1) - 0.5) * 2**BIAS_MAX_EXP
BIAS_ROUNDING = 1 / (2 ** (BIAS_MANTISSA_BITS - 1) - 0.5)

Array = Any  # a numpy array or a torch tensor


def bias_grid(value: Array) -> Tuple[Array, Array]:
    """Per element, Loihi 2's nearest per-step bias: (mantissa, exponent) with the smallest exponent e in 0..7
    whose mantissa round(value / 2^e) fits 13 signed bits, and (round(value), -1) where none does.

    The bias it holds is mantissa * 2^max(e, 0); it equals `value` exactly when e >= 0 and nothing was
    rounded. numpy arrays and torch tensors alike (round half up, as everywhere in QFFS).
    """
    limit = 2 ** (BIAS_MANTISSA_BITS - 1)
    mantissa, exponent = round_half_up(value), value * 0 - 1
    for e in range(BIAS_MAX_EXP, -1, -1):  # the smallest fitting exponent is written last
        candidate = round_half_up(value / 2**e)
        fits = (candidate >= -limit) & (candidate < limit)
        mantissa = candidate * fits + mantissa * ~fits
        exponent = e * fits + exponent * ~fits
    return mantissa, exponent


def nearest_bias(value: Array) -> Array:
    """The per-step bias Loihi 2 holds nearest `value` (`bias_grid`; round(value) where none fits)."""
    mantissa, exponent = bias_grid(value)
    return mantissa * 2 ** exponent.clip(0, None)


def bias_exponents(bias: np.ndarray) -> np.ndarray:
    """Per integer bias, the exponent e of its exact 13-bit mantissa times 2^e; -1 where none represents it."""
    mantissa, exponent = bias_grid(np.asarray(bias, dtype=np.float64))
    exact = (exponent >= 0) & (mantissa * 2.0 ** exponent.clip(0, None) == bias)
    return np.where(exact, exponent, -1).astype(np.int64)


def input_count_bound(input_scale: float, bias_steps: int) -> int:
    """The most counts the input delivers: K steps of the largest x_int, floor(inputScale + 1/2)."""
    return bias_steps * math.floor(input_scale + 0.5)


def count_bounds(network: Network) -> List[int]:
    """For each layer, the largest net spike count its output reaches at any step.

    The input delivers `input_count_bound`; a neuron layer at most zMax; pools and flattens their source's.
    """
    bounds: List[int] = []
    for i, layer in enumerate(network.layers):
        if i == 0:
            bounds.append(input_count_bound(network.input.input_scale, network.bias_steps))
        elif isinstance(layer, NeuronLayer):
            bounds.append(layer.neurons.z_max)
        else:
            bounds.append(bounds[layer.inputs[0]])
    return bounds


def step_current_bound(network: Network) -> int:
    """The largest |current| one synapse can deliver to one neuron in one step: sum |W| times the most its
    source sends per step (the input its x_int, a spiking layer 1; pools and flattens their source's).
    Graded messages carry 24 bits: lava-nc's Conv wraps a current of 2^23 or more."""
    per_step: List[int] = []
    largest = 0
    for i, layer in enumerate(network.layers):
        if i == 0:
            per_step.append(math.floor(network.input.input_scale + 0.5))
        elif isinstance(layer, NeuronLayer):
            per_step.append(1)
            for synapse, source in zip(layer.synapses, layer.inputs):
                rows = np.abs(synapse.rows().astype(np.int64)).sum(1) * per_step[source]
                largest = max(largest, int(rows.max(initial=0)))
        else:
            per_step.append(per_step[layer.inputs[0]])
    return largest


def membrane_bounds(network: Network, index: int, bounds: List[int]) -> Tuple[int, int]:
    """Worst-case (lowest, highest) membrane potential of neuron layer `index`, at any step.

    QFFS neurons: v = vInit + sum_j W_j . z_j(t) + t_b * b - th * z; a read-out: v = sum_j W_j . z_j(t) + t_b * b
    (it never fires; `dynamics.readout_step`), with 0 <= z_j <= bound of synapse j's source, 0 <= t_b <= K and
    0 <= z <= zMax, every input assumed present (conv borders too).
    """
    layer = network.layers[index]
    high = low = np.zeros(layer.channels, dtype=np.int64)
    for synapse, source in zip(layer.synapses, layer.inputs):
        rows = synapse.rows().astype(np.int64)
        high = high + np.clip(rows, 0, None).sum(1) * bounds[source]
        low = low + np.clip(rows, None, 0).sum(1) * bounds[source]
    bias = layer.bias.astype(np.int64)
    high = high + network.bias_steps * np.clip(bias, 0, None)
    low = low + network.bias_steps * np.clip(bias, None, 0)
    return layer.neurons.potential_bounds(low, high)


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
        problems += layer.neurons.problems(f"layer {i}", STATE_LIMIT)
        unfit = layer.bias[bias_exponents(layer.bias) < 0]
        if unfit.size:
            problems.append(f"layer {i}: bias {unfit[0]} is not a {BIAS_MANTISSA_BITS}-bit mantissa times "
                            f"2^0..2^{BIAS_MAX_EXP}")
        low, high = membrane_bounds(network, i, bounds)
        if max(-low, high) >= STATE_LIMIT:
            what = "|v|" if layer.neurons.fires else "read-out potential |v| over the run"
            problems.append(f"layer {i}: worst-case {what} {max(-low, high)} is not below 2^23 (24-bit membrane)")
    return problems
