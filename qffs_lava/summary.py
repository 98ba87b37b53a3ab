"""The per-layer table that qffs-export prints and qffs-inspect prints from net.h5 alone."""

from __future__ import annotations

from typing import List

import numpy as np

from qffs_lava.ir.layers import NeuronLayer
from qffs_lava.ir.loihi import STATE_LIMIT, bias_mantissa_exponent, count_bounds, membrane_bounds
from qffs_lava.ir.network import Network


def _bias_text(bias: np.ndarray) -> str:
    """The per-step bias range and the largest exponent e its 13-bit mantissas need (bias = m * 2^e)."""
    try:
        exponent = max((bias_mantissa_exponent(int(b))[1] for b in np.unique(bias)), default=0)
    except ValueError:
        return f"[{bias.min()}, {bias.max()}] NOT 13-bit*2^e"
    return f"[{bias.min()}, {bias.max()}] e<={exponent}"


def _range_text(values: np.ndarray) -> str:
    return str(values.min()) if values.min() == values.max() else f"{values.min()}..{values.max()}"


def layer_table(network: Network) -> str:
    """One row per layer: type, inputs, shape, threshold, zMax, weight range, bias, worst-case |v| against 2^23."""
    header = ("#", "type", "inputs", "shape", "threshold", "vInit", "zMax", "weights", "bias per step",
              "max |v| / 2^23")
    rows: List[tuple] = []
    bounds = count_bounds(network)
    for i, (layer, shape) in enumerate(zip(network.layers, network.shapes)):
        inputs = ",".join(map(str, layer.inputs))
        row = (i, layer.describe(), inputs, "x".join(str(s) for s in shape))
        if isinstance(layer, NeuronLayer):
            n = layer.neurons
            low, high = membrane_bounds(network, i, bounds)
            worst = max(-low, high)
            weights = np.concatenate([s.weight.reshape(-1) for s in layer.synapses])
            row += (_range_text(n.threshold), _range_text(n.v_init), n.z_max, f"[{weights.min()}, {weights.max()}]",
                    _bias_text(layer.bias), f"{worst} ({worst / STATE_LIMIT:.1%})")
        elif i == 0:
            row += ("", "", "", f"inputScale {layer.input_scale:g}", "", "")
        rows.append(row + ("",) * (len(header) - len(row)))
    table = [header] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[c]) for row in table) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"K = {network.bias_steps} input/bias steps, pipeline depth D = {network.pipeline_depth}")
    return "\n".join(lines)
