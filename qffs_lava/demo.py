"""`make demo`: the whole pipeline on scikit-learn's digits, no download, a few minutes on a CPU.

Trains the MLP (float, then LSQ 2-bit), exports net.h5, inspects it, runs the qann,
torch and lava backends on the test split, prints one table and writes the
accuracy-against-steps plot.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from pathlib import Path
from typing import Dict

import qffs_lava as qffs
from qffs_lava.ann.datasets import load_dataset
from qffs_lava.cli import command
from qffs_lava.ir.loihi import loihi_problems
from qffs_lava.reports import layer_table, plot_accuracy, write_json


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


@contextlib.contextmanager
def _unsaid(verb):
    """A verb's INFO messages left unsaid while it runs (the demo says what it did in its own lines)."""
    logger = logging.getLogger(verb.__module__)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def run_demo(out_dir: str | Path = "runs/demo", steps: int = 8, samples: int | None = None,
             progress: bool = True) -> Dict:
    """Run the pipeline, printing what it does on stdout; return the summary (also written to
    OUT_DIR/summary.json)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path, net_path = out / "digits.pt", out / "digits.h5"

    print(f"$ qffs-train --dataset digits --arch mlp --out {model_path}")
    with _unsaid(qffs.train):
        content, train_s = _timed(lambda: qffs.train("digits", "mlp", out=model_path, progress=False))
    print(f"  float {100 * content['accuracy']['float']:.2f}%, QANN {100 * content['accuracy']['qann']:.2f}% "
          f"({train_s:.1f} s)")
    print(f"$ qffs-export {model_path} {net_path}")
    with _unsaid(qffs.export):
        _, export_s = _timed(lambda: qffs.export(model_path, net_path))
    print(f"$ qffs-inspect {net_path}")
    network = qffs.read_net(net_path)
    print(layer_table(network))
    print("Loihi 2 ranges: " + ("ok" if not loihi_problems(network) else "EXCEEDED"))

    x, y = load_dataset("digits", "test")
    if samples is not None:
        x, y = x[:samples], y[:samples]
    reports, seconds = {}, {}
    for backend in ("qann", "torch", "lava"):
        print(f"$ qffs-run {net_path} --dataset digits --backend {backend} --steps {steps}")
        reports[backend], seconds[backend] = _timed(
            lambda: qffs.run(network, x, y, steps, backend, progress=progress))

    torch_report, lava_report = reports["torch"], reports["lava"]
    lava_agrees = lava_report.output_counts == torch_report.output_counts
    summary = {
        "samples": len(x), "steps": steps, "pipeline_depth": network.pipeline_depth,
        "float_accuracy": content["accuracy"]["float"],
        "qann_accuracy": network.meta["qann_accuracy"],
        "int_qann_accuracy": reports["qann"].accuracy,
        "qann_agreement": network.meta["qann_agreement"],
        "accuracy_by_step": {b: reports[b].accuracy_by_step for b in ("torch", "lava")},
        "equal_from_step": {b: reports[b].equal_from_step for b in ("torch", "lava")},
        "lava_equals_torch": lava_agrees,
        "lava_prediction_agreement": sum(
            a == b for a, b in zip(lava_report.predictions, torch_report.predictions)) / len(x),
        "seconds": {"train": train_s, "export": export_s, **seconds},
    }
    plot_path = out / "accuracy_vs_steps.png"
    plot_accuracy(plot_path, {b: reports[b] for b in ("torch", "lava")},
                title=f"digits MLP, {len(x)} test samples (2-bit hidden, 3-bit output)")
    write_json(out / "summary.json", summary)
    print()
    print(summary_table(summary))
    print(f"\nplot: {plot_path}\nsummary: {out / 'summary.json'}")
    return summary


def summary_table(summary: Dict) -> str:
    """The demo's one table."""
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    lines = [
        f"digits MLP, {summary['samples']} test samples, pipeline depth D = {summary['pipeline_depth']}",
        f"  float model accuracy                {pct(summary['float_accuracy'])}",
        f"  QANN accuracy as trained (model.pt) {pct(summary['qann_accuracy'])}",
        f"  integer QANN accuracy (net.h5)      {pct(summary['int_qann_accuracy'])}",
        f"  integer vs trained QANN agreement   {pct(summary['qann_agreement'])}",
        "",
        "  t  " + "  ".join(f"{b:>8}" for b in summary["accuracy_by_step"]),
    ]
    rows = zip(*summary["accuracy_by_step"].values())
    for t, accs in enumerate(rows, start=1):
        lines.append(f"{t:>3}  " + "  ".join(f"{pct(a):>8}" for a in accs))
    for backend, step in summary["equal_from_step"].items():
        lines.append(f"  {backend}: SNN == QANN on every sample from t = {step}" if step else
                     f"  {backend}: SNN != QANN at t = {summary['steps']}")
    lines.append(f"  Lava (fixed_pt) output counts equal torch's at every step: {summary['lava_equals_torch']}; "
                 f"prediction agreement {pct(summary['lava_prediction_agreement'])}")
    lines.append("  wall time: " + ", ".join(f"{k} {v:.2f} s" for k, v in summary["seconds"].items()))
    return "\n".join(lines)


def _demo_parser():
    from qffs_lava.cli import integer_at_least, new_parser

    defaults = {name: p.default for name, p in inspect.signature(run_demo).parameters.items()}
    parser = new_parser("python -m qffs_lava.demo", __doc__.splitlines()[0])
    parser.add_argument("--out", default=defaults["out_dir"],
                        help="folder for the model, net and plot (default %(default)s)")
    parser.add_argument("--steps", type=integer_at_least(1), default=defaults["steps"],
                        help="T, the synchronous time steps each backend runs (default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


@command(_demo_parser)
def main(args, parser) -> None:
    """`make demo`: the pipeline on digits."""
    run_demo(args.out, args.steps, progress=not args.quiet)


if __name__ == "__main__":
    raise SystemExit(main())
