"""The tables qffs prints: the per-layer table (qffs-export, qffs-inspect), resources (qffs-inspect) and
costs (qffs-run --stats)."""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from qffs_lava.costs import macs, weight_counts
from qffs_lava.ir.layers import NeuronLayer
from qffs_lava.ir.loihi import STATE_LIMIT, bias_mantissa_exponent, count_bounds, membrane_bounds
from qffs_lava.ir.network import Network


def render(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 2) -> str:
    """A plain-text table: a header, a rule, the rows; columns from `numeric_from` on right-aligned."""
    table = [tuple(header)] + [tuple(row) for row in rows]
    widths = [max(len(row[c]) for row in table) for c in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if c >= numeric_from else cell.ljust(w)
                       for c, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


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
    return render(header, [tuple(str(c) for c in row) for row in rows], numeric_from=len(header)) + \
        f"\nK = {network.bias_steps} input/bias steps, pipeline depth D = {network.pipeline_depth}"


def resource_table(network: Network) -> str:
    """One row per layer and the totals: neurons, synapses (connections, = the ANN's MACs per sample), and the
    integer weights stored with their memory at Loihi 2's 8-bit mantissa."""
    header = ("#", "type", "neurons", "synapses", "weights", "weight memory")
    neurons = [int(np.prod(shape)) if isinstance(layer, NeuronLayer) else 0
               for layer, shape in zip(network.layers, network.shapes)]
    synapses, weights = macs(network), weight_counts(network)
    rows = [(str(i), layer.describe(), f"{neurons[i]:,}" if neurons[i] else "", f"{synapses[i]:,}" if neurons[i]
             else "", f"{weights[i]:,}" if neurons[i] else "", _bytes(weights[i]) if neurons[i] else "")
            for i, layer in enumerate(network.layers)]
    rows.append(("", "total", f"{sum(neurons):,}", f"{synapses.sum():,}", f"{weights.sum():,}",
                 _bytes(weights.sum())))
    return ("resources (synapses: connections, each used once per sample by the ANN as one MAC; weights as "
            "net.h5 stores them, a conv kernel once, at 8 bits):\n" + render(header, rows))


def _bytes(count: int) -> str:
    return f"{count / 1024:.1f} KiB" if count >= 1024 else f"{count} B"


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 or value == 0 else f"{value:.2f}"


def cost_table(report: Dict, t: int) -> str:
    """The per-layer table at step t: neurons, spikes sent, SOPs received, the ANN's MACs and their ratio."""
    header = ("#", "type", "neurons", "+spikes", "-spikes", "SOPs", "MACs (ANN)", "SOPs/MACs")
    rows = []
    for layer in report["layers"]:
        sends = layer["index"] == 0 or layer["type"] != "flatten"
        spikes = (_number(layer["positive_spikes"][t - 1]), _number(layer["negative_spikes"][t - 1])) \
            if sends else ("-", "-")
        ratio = f"{layer['sops'][t - 1] / layer['macs']:.3f}" if layer["macs"] else ""
        neurons = f"{layer['neurons']:,}" if layer["neurons"] else ""
        rows.append((str(layer["index"]), layer["type"] + (" (events)" if layer["index"] == 0 else ""), neurons,
                     *spikes, _number(layer["sops"][t - 1]) if layer["macs"] else "",
                     f"{layer['macs']:,}" if layer["macs"] else "", ratio))
    total = report["total"]
    rows.append(("", "total", f"{sum(layer['neurons'] for layer in report['layers']):,}",
                 _number(total["positive_spikes"][t - 1]), _number(total["negative_spikes"][t - 1]),
                 _number(total["sops"][t - 1]), f"{total['macs']:,}", f"{total['sops_per_mac'][t - 1]:.3f}"))
    where = f" (Lava/pipelined: steps 1..{t + report['pipeline_depth']})" if report["mode"] == "pipelined" else ""
    return (f"cost per sample up to t = {t}{where}, mean over {report['samples']} samples "
            f"(spikes sent; SOPs = spikes x fan-out, received; DESIGN.md section 9):\n" + render(header, rows))
