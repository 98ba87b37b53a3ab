"""What qffs prints and writes: the per-layer table (qffs-export, qffs-inspect), resources (qffs-inspect),
a run's per-step table and costs (qffs-run), its JSON report and its accuracy plot."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from qffs_lava.costs import macs, weight_counts
from qffs_lava.errors import ParameterError
from qffs_lava.fileio import write_atomically
from qffs_lava.ir.layers import NeuronLayer
from qffs_lava.ir.loihi import BIAS_MANTISSA_BITS, STATE_LIMIT, bias_exponents, count_bounds, membrane_bounds
from qffs_lava.ir.network import Network
from qffs_lava.latency import summary
from qffs_lava.results import RunResult


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
    exponents = bias_exponents(bias)
    if np.any(exponents < 0):
        return f"[{bias.min()}, {bias.max()}] NOT {BIAS_MANTISSA_BITS}-bit*2^e"
    return f"[{bias.min()}, {bias.max()}] e<={exponents.max(initial=0)}"


def _range_text(values: np.ndarray) -> str:
    return str(values.min()) if values.min() == values.max() else f"{values.min()}..{values.max()}"


#: A neuron layer's threshold, vInit and zMax cells, by neuron type.
NEURON_CELLS = {"QFFS": lambda n: (_range_text(n.threshold), _range_text(n.v_init), n.z_max),
                "READOUT": lambda n: ("none (read-out)", "-", "-")}
#: How a report names what the output values are, by `Network.output_kind`.
OUTPUT_VALUES = {"spiking": "counts", "read-out": "potentials"}
OUTPUT_TEXT = {"spiking": "output: spiking (prediction: argmax of the output spike counts)",
               "read-out": "output: read-out (prediction: argmax of the output potentials; it never fires)"}


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
            row += NEURON_CELLS[n.kind](n) + (f"[{weights.min()}, {weights.max()}]", _bias_text(layer.bias),
                                              f"{worst} ({worst / STATE_LIMIT:.1%})")
        elif i == 0:
            row += ("", "", "", f"inputScale {layer.input_scale:g}", "", "")
        rows.append(row + ("",) * (len(header) - len(row)))
    return render(header, [tuple(str(c) for c in row) for row in rows], numeric_from=len(header)) + \
        f"\nK = {network.bias_steps} input/bias steps, pipeline depth D = {network.pipeline_depth}; " \
        + OUTPUT_TEXT[network.output_kind]


def membrane_table(network: Network) -> str:
    """Per neuron layer, the worst-case |v| (`membrane_bounds`) and the largest |v| seen on the fidelity samples
    (meta `membrane_peak`, where qffs-export measured it), each against the 24-bit membrane's 2^23."""
    peaks, names = network.meta.get("membrane_peak") or {}, network.meta.get("layer_names")
    bounds = count_bounds(network)
    rows = []
    for i, _ in network.neuron_layers:
        low, high = membrane_bounds(network, i, bounds)
        name = names[i] if names and i < len(names) else ""
        seen = peaks.get(name)
        rows.append((str(i), name, f"{max(-low, high):,} ({max(-low, high) / STATE_LIMIT:.1%})",
                     f"{seen:,} ({seen / STATE_LIMIT:.1%})" if isinstance(seen, int) else "-"))
    where = (f"seen: the largest on the {network.meta.get('fidelity_samples')} fidelity samples, synchronous time, "
             "until settled" if peaks else "seen: not measured (qffs-export measures it on its fidelity samples)")
    return (f"membrane |v| per neuron layer against 2^23 (worst case: every source at its count bound; {where}):\n"
            + render(("#", "layer", "worst case", "seen"), rows))


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
        spikes = (_number(layer["positive_spikes"][t - 1]), _number(layer["negative_spikes"][t - 1])) \
            if layer["sends"] else ("-", "-")
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
            f"(spikes sent; SOPs = spikes x fan-out, received; docs/costs.md):\n" + render(header, rows))


#: What a run's time mode means, for its report.
TIME_MODES = {
    "sync": "synchronous time: within a step every layer sees its sources' spikes of the same step (the paper's "
            "time steps t)",
    "pipelined": "pipelined time, as Lava and Loihi 2 run it: every synapse delays by one step, so a shortcut with "
                 "fewer hops arrives earlier; reported at synchronous step t = Lava step t + D (D = {D}), so small t "
                 "can differ from a synchronous run's",
}


def run_table(result: RunResult, per_class: bool = False) -> str:
    """A run's report: per step t its accuracy and agreement with the QANN (and with costs its spikes and SOPs),
    the step from which it equals the QANN, the samples' settle and decided steps, the accuracies, with costs the
    per-layer table at T, and with `per_class` (and labels) each class's accuracy and the confusion matrix."""
    if result.time_steps:
        lines = [f"backend {result.backend} ({result.mode}), {result.samples} samples, K = {result.bias_steps}, "
                 f"pipeline depth D = {result.pipeline_depth}"
                 + (f", without: {', '.join(result.ablated)} (an ablation)" if result.ablated else ""),
                 TIME_MODES[result.mode].format(D=result.pipeline_depth)]
    else:
        lines = [f"backend {result.backend} ({result.mode}, no time steps), {result.samples} samples"]
    lines.append(OUTPUT_TEXT[result.output])
    costs = result.costs
    if result.time_steps:
        equal_title = f"{OUTPUT_VALUES[result.output]} == QANN"
        width = max(14, len(equal_title))
        lines.append(f"{'t':>4}  {'accuracy':>9}  {'agree w/ QANN':>13}  {equal_title:>{width}}"
                     + (f"  {'spikes':>9}  {'SOPs':>11}  {'SOPs/MACs':>9}" if costs else ""))
        for t, (acc, agree, equal) in enumerate(zip(result.accuracy_by_step, result.agreement_by_step,
                                                     result.equal_counts_by_step), start=1):
            acc_text = "-" if acc is None else f"{100 * acc:.2f}%"
            lines.append(f"{t:>4}  {acc_text:>9}  {100 * agree:>12.2f}%  {100 * equal:>{width - 1}.2f}%" + (
                f"  {costs['total']['spikes'][t - 1]:>9,.0f}  {costs['total']['sops'][t - 1]:>11,.0f}  "
                f"{costs['total']['sops_per_mac'][t - 1]:>9.3f}" if costs else ""))
        where = result.equal_from_step
        lines.append(f"SNN == QANN on every sample from step t = {where}" if where else
                     f"SNN == QANN on every sample: not reached by t = {result.steps}")
        lines.extend(latency_lines(result))
    if result.qann_accuracy is not None:
        lines.append(f"QANN accuracy {100 * result.qann_accuracy:.2f}%" + (
            f", {result.backend} accuracy at t = {result.steps}: {100 * result.accuracy:.2f}%"
            if result.time_steps else ""))
    if costs:
        lines.append("(spikes and SOPs: per sample, cumulative up to t)\n" + cost_table(costs, result.steps))
        settled = costs.get("until_settled")
        if settled:
            lines.append(f"stopping each sample at its first silent step after the input and bias windows: "
                         f"{settled['steps']:.2f} steps and {_number(settled['neuron_updates'])} neuron updates per "
                         f"sample, against {settled['steps_fixed']} and {_number(settled['neuron_updates_fixed'])} "
                         "(the run's own steps); the spikes and SOPs are the same: nothing is sent after a sample "
                         "settles")
    if per_class and result.confusion is not None:
        lines.append(class_table(result))
    lines.append(f"wall time {result.seconds:.1f} s")
    return "\n".join(lines)


def _distribution(values: Sequence[int]) -> str:
    stats = summary(values)
    return f"mean {stats['mean']:.2f}, 99th percentile {stats['p99']}, max {stats['max']}"


def latency_lines(result: RunResult) -> List[str]:
    """Each sample's settle step and decided step (latency.py), as mean, 99th percentile and maximum; with
    steps="auto", the T reached."""
    if result.settled_at is None:
        return []
    settled = [v for v in result.settled_at if v is not None]
    lines = []
    if result.steps_bound is not None:
        lines.append(f"--steps auto: T = {result.steps} reached, where " + (
            "every sample had settled" if len(settled) == len(result.settled_at) else "the bound stopped it")
            + f" (bound {result.steps_bound})")
    pipelined = result.mode == "pipelined"
    convention = " (reported steps: Lava step - D, 0 where it was at or before D)" if pipelined else ""
    if settled:
        lines.append(f"settled at (the step of the last spike of any neuron; every count is final from it): "
                     f"{_distribution(settled)}{convention}" + (
                         f"; {len(result.settled_at) - len(settled)} samples not settled by t = {result.steps}"
                         if len(settled) < len(result.settled_at) else ""))
    else:
        lines.append(f"settled at: no sample had settled by t = {result.steps}")
    lines.append(f"decided at (the step from which the prediction is the one at t = {result.steps}): "
                 f"{_distribution(result.decided_at)}")
    return lines


def class_table(result: RunResult) -> str:
    """Per true class: its samples and accuracy at T; and the confusion matrix, up to 20 classes."""
    confusion = result.confusion
    rows = [(str(c), f"{sum(row):,}", "-" if acc is None else f"{100 * acc:.2f}%")
            for c, (row, acc) in enumerate(zip(confusion, result.class_accuracy))]
    text = f"per class at t = {result.steps}:\n" + render(("class", "samples", "accuracy"), rows, numeric_from=1)
    if len(confusion) <= 20:
        header = ("true \\ predicted",) + tuple(str(c) for c in range(len(confusion)))
        text += "\nconfusion matrix (samples):\n" + render(
            header, [(str(c),) + tuple(str(n) for n in row) for c, row in enumerate(confusion)], numeric_from=1)
    else:
        text += "\n(the confusion matrix is in the --json report: confusion)"
    return text


def write_json(path: str | Path, data: Any) -> None:
    """Write plain data as indented JSON, atomically."""
    write_atomically(path, json.dumps(data, indent=1).encode())


#: The image formats a plot is written in, by the file name's suffix.
PLOT_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg", "eps", "tif", "tiff", "webp")


def plot_format(path: str | Path) -> str:
    """The format the suffix of `path` names; ParameterError (naming `plot`) for any other suffix."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        raise ParameterError(f"{{}} {path}: name the image format by the suffix, one of "
                             f"{', '.join('.' + f for f in PLOT_FORMATS)}", "plot")
    return suffix


def _latency_histogram(ax, results: Dict[str, RunResult]) -> None:
    """The samples' settle steps (bars) and decided steps (steps outline) per run, one bin per step."""
    for name, result in results.items():
        settled = [v for v in result.settled_at if v is not None]
        top = max(settled + list(result.decided_at) + [1])
        bins = np.arange(-0.5, top + 1.5)
        ax.hist(settled, bins=bins, alpha=0.5, label=f"{name}: settled at")
        ax.hist(result.decided_at, bins=bins, histtype="step", linewidth=2, label=f"{name}: decided at")
    ax.set(xlabel="time step t (synchronous)", ylabel="samples", title="last spike and final prediction")


def plot_accuracy(path: str | Path, results: Dict[str, RunResult], title: str = "") -> None:
    """Accuracy and agreement with the QANN against synchronous time step, one curve per run, and where every
    run has them the histogram of its samples' settle and decided steps, in the format the file name's suffix
    names (`plot_format`)."""
    image_format = plot_format(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latency = all(result.settled_at is not None for result in results.values())
    fig, axes = plt.subplots(1, 3 if latency else 2, figsize=(15 if latency else 10, 4), constrained_layout=True)
    for name, result in results.items():
        if result.ablated:
            name += f" without {', '.join(result.ablated)}"
        if result.output != "spiking":
            name += f" ({result.output} output)"
        steps = range(1, len(result.agreement_by_step) + 1)
        if result.accuracy_by_step[0] is not None:
            axes[0].plot(steps, [100 * a for a in result.accuracy_by_step], marker="o", label=name)
        axes[1].plot(steps, [100 * a for a in result.agreement_by_step], marker="o", label=name)
    first = next(iter(results.values()))
    if first.qann_accuracy is not None:
        axes[0].axhline(100 * first.qann_accuracy, color="gray", linestyle="--", label="QANN")
    axes[0].set(xlabel="time step t (synchronous)", ylabel="accuracy (%)", title="SNN accuracy")
    axes[1].set(xlabel="time step t (synchronous)", ylabel="agreement (%)", title="prediction == QANN's")
    if latency:
        _latency_histogram(axes[2], results)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    image = io.BytesIO()
    fig.savefig(image, format=image_format, dpi=110)
    plt.close(fig)
    write_atomically(path, image.getvalue())
