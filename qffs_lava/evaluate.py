"""Accuracy against time steps: run a net.h5 on a backend and compare every step with the QANN.

This is what `qffs-run` reports. Every backend returns output counts per synchronous
step; the integer QANN (closed form) is the target they converge to.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from qffs_lava.backends.pytorch import TorchNetwork
from qffs_lava.costs import Costs, cost_report
from qffs_lava.dynamics import ABLATIONS, without
from qffs_lava.errors import QffsError, QffsFormatError
from qffs_lava.fileio import atomic_output
from qffs_lava.ir.loihi import loihi_problems
from qffs_lava.ir.network import MODES, Network
from qffs_lava.summary import cost_table

BACKENDS = ("qann", "torch", "lava", "lava-float", "loihi2")


def check_inputs(network: Network, x) -> torch.Tensor:
    """Dataset values shaped (N, *input shape) (or (N, prod(shape))) as float tensor; QffsError otherwise."""
    try:
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise QffsError(f"inputs are not a numeric array: {err}") from None
    shape = tuple(network.input.shape)
    if x.dtype.is_complex or not (x.dtype.is_floating_point or x.dtype in (torch.uint8, torch.int64, torch.int32)):
        raise QffsError(f"inputs must be real numbers, got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise QffsError("no input samples")
    if tuple(x.shape[1:]) != shape and not (x.ndim == 2 and x.shape[1] == int(np.prod(shape))):
        raise QffsError(f"inputs have shape {tuple(x.shape)}; this network takes (N, {', '.join(map(str, shape))})")
    x = x.to(torch.float64).reshape(-1, *shape)
    if not torch.isfinite(x).all():
        raise QffsError("inputs contain NaN or infinite values")
    if x.min() < 0 or x.max() > 1:
        raise QffsError(f"inputs must be dataset values in [0, 1], got [{float(x.min()):g}, {float(x.max()):g}]")
    return x


def check_labels(labels, samples: int, classes: int) -> torch.Tensor:
    """N class indices in 0..classes-1 as int64; QffsError naming what is wrong otherwise."""
    values = np.asarray(labels)
    if values.ndim == 2 and values.shape == (samples, classes) and np.isin(values, (0, 1)).all() \
            and (values.sum(axis=1) == 1).all():
        raise QffsError(f"labels are one-hot {values.shape}; give the {samples} class indices instead "
                        "(labels.argmax(axis=1))")
    if values.ndim != 1:
        raise QffsError(f"labels must be one class index per sample, shape ({samples},); got shape {values.shape}")
    if len(values) != samples:
        raise QffsError(f"{len(values)} labels for {samples} inputs")
    if values.dtype.kind not in "iuf" or (values.dtype.kind == "f" and not (
            np.isfinite(values).all() and (values == np.round(values)).all())):
        raise QffsError(f"labels must be whole numbers (class indices), got dtype {values.dtype}"
                        + (f" with value {values[values != np.round(values)][0]}" if values.dtype.kind == "f" else ""))
    outside = (values < 0) | (values >= classes)
    if outside.any():
        index = int(np.argmax(outside))
        raise QffsError(f"labels must be class indices 0..{classes - 1} (the network has {classes} outputs); "
                        f"labels[{index}] is {values[index]:g}")
    return torch.as_tensor(values.astype(np.int64))


def output_counts_by_step(net: TorchNetwork, x: torch.Tensor, steps: int, backend: str, mode: str,
                          batch_size: int, progress: bool, workers: Optional[int] = None,
                          ablate: Sequence[str] = (), count_costs: bool = False) -> Tuple[torch.Tensor,
                                                                                          Optional[Costs]]:
    """(steps, N, classes) output counts after each synchronous step t = 1..steps, and with count_costs the
    run's spikes and SOPs (costs.py)."""
    with tqdm(total=len(x), desc=f"{backend} ({mode})", unit="sample",
              disable=not progress, leave=False) as bar:
        if backend == "torch":
            results = []
            for start in range(0, len(x), batch_size):
                results.append(net.simulate(x[start:start + batch_size], steps, mode, mechanisms=without(*ablate),
                                            count_costs=count_costs))
                bar.update(results[-1].output_counts.shape[1])
            costs = sum((r.costs for r in results[1:]), results[0].costs) if count_costs else None
            return torch.cat([r.synchronous_counts() for r in results], dim=1), costs
        from qffs_lava.backends.lava.runner import run_lava

        result = run_lava(net.network, x, steps, backend, progress=bar.update, workers=workers,
                          count_costs=count_costs)
        return result.synchronous_counts(), result.costs


def evaluate(network: Network, x, labels: Optional[torch.Tensor], steps: int, backend: str = "torch",
             mode: str = "sync", batch_size: int = 256, progress: bool = True, loihi_check: bool = True,
             device: str = "cpu", workers: Optional[int] = None, ablate: Sequence[str] = (),
             stats: bool = False) -> Dict:
    """Run and compare with the QANN after every step; returns the report (JSON-ready).

    The Lava backends run chunks of samples in `workers` runtimes at once (default: one per core).
    `ablate` names QFFS mechanisms the torch backend leaves out (keys of dynamics.ABLATIONS:
    the paper's ablation study); the QANN stays the full network's. `stats` adds the report's
    "costs": spikes, synaptic operations and the ANN's MACs per layer and step (costs.py).

    The QANN and the torch backend run on `device` ("cuda" for a GPU). The Lava backends
    refuse (QffsFormatError) a network outside Loihi 2's ranges unless loihi_check is
    False; then weights, currents and membranes saturate as the fixed-point models do.
    """
    if backend not in BACKENDS:
        raise QffsError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if mode not in MODES:
        raise QffsError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    if backend != "qann" and steps < network.bias_steps:
        raise QffsError(f"T = {steps} steps: the network needs at least K = {network.bias_steps} steps, "
                        f"the steps over which its input is presented")
    if batch_size < 1:
        raise QffsError(f"batch size must be at least 1, got {batch_size}")
    unknown = [name for name in ablate if name not in ABLATIONS]
    if unknown:
        raise QffsError(f"unknown ablation {unknown[0]!r} (choose from {', '.join(ABLATIONS)})")
    if ablate and backend != "torch":
        raise QffsError(f"ablations run on the torch backend only, not {backend}")
    if stats and backend == "qann":
        raise QffsError("--stats counts spikes over time steps; the qann backend has none (choose torch or lava)")
    x = check_inputs(network, x)
    if backend in ("lava", "lava-float", "loihi2"):
        mode = "pipelined"  # how Lava runs; results are still reported in synchronous steps
        problems = loihi_problems(network)
        if problems and loihi_check:
            raise QffsFormatError("the network leaves Loihi 2's ranges, which the Lava backends model "
                                  "(--no-loihi-check runs it anyway): " + "; ".join(problems))
    if backend == "loihi2":
        from qffs_lava.backends.lava.runner import require_lava_loihi

        require_lava_loihi()
    if device not in ("cpu", "cuda"):
        raise QffsError(f"device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise QffsError("--device cuda, but PyTorch sees no CUDA GPU here; use --device cpu")
    if labels is not None:
        labels = check_labels(labels, len(x), network.num_classes)
    started = time.perf_counter()
    # without the count bound, counts (and currents) exceed what exact_dtype planned for
    net = TorchNetwork(network, torch.float64 if "count-bound" in ablate else None).to(device)
    qann = torch.cat([net.qann(x[i:i + batch_size]).cpu() for i in range(0, len(x), batch_size)])
    qann_pred = qann.argmax(dim=1)
    report = {
        "backend": backend, "mode": mode, "steps": steps, "samples": len(x), "device": device,
        "pipeline_depth": network.pipeline_depth, "bias_steps": network.bias_steps, "ablated": list(ablate),
        "qann_accuracy": _accuracy(qann_pred, labels),
    }
    if backend == "qann":
        counts, by_step = qann, None
    else:
        by_step, costs = output_counts_by_step(net, x, steps, backend, mode, batch_size, progress, workers, ablate,
                                               stats)
        counts = by_step[-1]
        if costs is not None:
            report["costs"] = cost_report(network, costs, mode)
    seconds = time.perf_counter() - started
    predictions = counts.argmax(dim=1)
    report.update({
        "accuracy": _accuracy(predictions, labels),
        "seconds": seconds,
        "output_counts": counts.tolist(),
        "predictions": predictions.tolist(),
        "labels": labels.tolist() if labels is not None else None,
        "qann_predictions": qann_pred.tolist(),
    })
    if by_step is not None:
        equal = (by_step == qann.unsqueeze(0)).all(dim=2)  # (steps, N): counts equal the QANN's
        pred_by_step = by_step.argmax(dim=2)
        report.update({
            "accuracy_by_step": [_accuracy(p, labels) for p in pred_by_step],
            "agreement_by_step": [float((p == qann_pred).double().mean()) for p in pred_by_step],
            "equal_counts_by_step": [float(e.double().mean()) for e in equal],
            "equal_from_step": _equal_from_step(equal),
        })
    return report


def _accuracy(predictions: torch.Tensor, labels: Optional[torch.Tensor]) -> Optional[float]:
    return None if labels is None else float((predictions == labels).double().mean())


def holds_from_step(flags: Sequence[bool]) -> Optional[int]:
    """The first step t (1-based) from which a condition holds at every later step measured; None if not at the
    last one."""
    if not flags[-1]:
        return None
    t = len(flags)
    while t > 1 and flags[t - 2]:
        t -= 1
    return t


def _equal_from_step(equal: torch.Tensor) -> Optional[int]:
    """The first step t from which every sample's output counts equal the QANN's at every later step."""
    return holds_from_step(equal.all(dim=1).tolist())


def format_report(report: Dict) -> str:
    """The table of accuracy and agreement with the QANN per step, and the summary lines."""
    lines = [f"backend qann (the closed form, no time steps), {report['samples']} samples" if report["backend"] ==
             "qann" else f"backend {report['backend']} ({report['mode']}), {report['samples']} samples, "
             f"K = {report['bias_steps']}, pipeline depth D = {report['pipeline_depth']}"
             + (f", without: {', '.join(report['ablated'])} (an ablation)" if report.get("ablated") else "")]
    costs = report.get("costs")
    if report.get("accuracy_by_step") is not None:
        lines.append(f"{'t':>4}  {'accuracy':>9}  {'agree w/ QANN':>13}  {'counts == QANN':>14}"
                     + (f"  {'spikes':>9}  {'SOPs':>11}  {'SOPs/MACs':>9}" if costs else ""))
        for t, (acc, agree, equal) in enumerate(zip(report["accuracy_by_step"], report["agreement_by_step"],
                                                     report["equal_counts_by_step"]), start=1):
            acc_text = "-" if acc is None else f"{100 * acc:.2f}%"
            lines.append(f"{t:>4}  {acc_text:>9}  {100 * agree:>12.2f}%  {100 * equal:>13.2f}%" + (
                f"  {costs['total']['spikes'][t - 1]:>9,.0f}  {costs['total']['sops'][t - 1]:>11,.0f}  "
                f"{costs['total']['sops_per_mac'][t - 1]:>9.3f}" if costs else ""))
        where = report["equal_from_step"]
        lines.append("SNN == QANN on every sample from step " + (f"t = {where}" if where else
                     f"(not reached by t = {report['steps']})") + " (synchronous steps; Lava adds D = "
                     f"{report['pipeline_depth']} steps of pipeline delay)")
    if report["qann_accuracy"] is not None:
        lines.append(f"QANN accuracy {100 * report['qann_accuracy']:.2f}%" + (
            "" if report["backend"] == "qann" else
            f", {report['backend']} accuracy at t = {report['steps']}: {100 * report['accuracy']:.2f}%"))
    if costs:
        lines.append("(spikes and SOPs: per sample, cumulative up to t)\n" + cost_table(costs, report["steps"]))
    lines.append(f"wall time {report['seconds']:.1f} s")
    return "\n".join(lines)


def write_json(path: str | Path, report: Dict) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(report, indent=1))


def plot_report(path: str | Path, reports: Dict[str, Dict], title: str = "") -> None:
    """Accuracy and agreement with the QANN against synchronous time step, one curve per report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for name, report in reports.items():
        steps = range(1, len(report["agreement_by_step"]) + 1)
        if report["accuracy_by_step"][0] is not None:
            axes[0].plot(steps, [100 * a for a in report["accuracy_by_step"]], marker="o", label=name)
        axes[1].plot(steps, [100 * a for a in report["agreement_by_step"]], marker="o", label=name)
    first = next(iter(reports.values()))
    if first["qann_accuracy"] is not None:
        axes[0].axhline(100 * first["qann_accuracy"], color="gray", linestyle="--", label="QANN")
    axes[0].set(xlabel="time step t (synchronous)", ylabel="accuracy (%)", title="SNN accuracy")
    axes[1].set(xlabel="time step t (synchronous)", ylabel="agreement (%)", title="prediction == QANN's")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
