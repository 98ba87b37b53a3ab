"""The per-layer table that qffs-export prints and qffs-inspect prints from net.h5 alone."""

from __future__ import annotations

from typing import List

import numpy as np

from qffs_lava.netfile import (
    STATE_LIMIT,
    ConvLayer,
    DenseLayer,
    InputLayer,
    MaxPoolLayer,
    Network,
    bias_mantissa_exponent,
    membrane_bounds,
    presynaptic_count_bounds,
)


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
    """One row per layer: type, shape, threshold, zMax, weight range, bias, worst-case |v| against 2^23."""
    header = ("#", "type", "shape", "threshold", "vInit", "zMax", "weights", "bias per step", "max |v| / 2^23")
    rows: List[tuple] = []
    bounds = iter(presynaptic_count_bounds(network))
    shapes = network.shapes()
    for i, (layer, shape) in enumerate(zip(network.layers, shapes)):
        shape_text = "x".join(str(s) for s in shape)
        if isinstance(layer, InputLayer):
            rows.append((i, "input", shape_text, "", "", "", f"inputScale {layer.input_scale:g}", "", ""))
        elif isinstance(layer, (DenseLayer, ConvLayer)):
            n = layer.neurons
            low, high = membrane_bounds(layer, next(bounds), network.bias_steps)
            worst = max(-low, high)
            kind = "dense" if isinstance(layer, DenseLayer) else f"conv {'x'.join(map(str, layer.kernel_size))}"
            rows.append((i, kind, shape_text, _range_text(n.threshold), _range_text(n.v_init), n.z_max,
                         f"[{layer.weight.min()}, {layer.weight.max()}]", _bias_text(layer.bias),
                         f"{worst} ({worst / STATE_LIMIT:.1%})"))
        elif isinstance(layer, MaxPoolLayer):
            rows.append((i, f"maxpool {'x'.join(map(str, layer.kernel_size))}", shape_text, "", "", "", "", "", ""))
        else:
            rows.append((i, "flatten", shape_text, "", "", "", "", "", ""))
    table = [header] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[c]) for row in table) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"K = {network.bias_steps} input/bias steps, pipeline depth D = {network.pipeline_depth}")
    return "\n".join(lines)
