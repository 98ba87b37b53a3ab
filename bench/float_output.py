"""The full-precision output layer (`--out-bits float`, the paper's Figure 7) against the 3-bit output, and each
sample's latency, on the MNIST LeNet and the Fashion-MNIST ResNet-8 of `make bench`.

For each network: its make bench model (runs/bench/NAME.pt, trained here if missing) and the same command with
`--out-bits float` (NAME_float.pt), both exported and run on the torch backend over the whole test split for
t = 1..16, then with `--steps auto` (each batch until every sample has settled: the T it reached and the wall
time against --steps 16), and the float-output network on the Lava backend (its first samples, as make bench
runs the 3-bit one) against the torch run's predictions. Writes bench/float_output.json, bench/float_output.png
(accuracy against t, and the settle and decision steps' histograms) and the README's bench:float-output block.
About 90 minutes on a 2-core CPU with both float-output networks to train; 15 once they are trained.
`--networks NAME ...` measures those only and keeps the others' figures.
"""

import argparse
import datetime
import json
import multiprocessing
import platform
import sys

import torch
from run_bench import README, ROOT, RUNS, STEPS, duration, model_figures, pct, replace_block, run, run_figures

from qffs_lava.latency import summary
from qffs_lava.reports import write_json

#: name -> (dataset, architecture, title, samples of the float-output network's Lava run)
NETWORKS = {"mnist_lenet": ("mnist", "lenet", "MNIST LeNet", 200),
            "fashionmnist_resnet8": ("fashionmnist", "resnet8", "Fashion-MNIST ResNet-8", 20)}
#: output -> (the model file's suffix, qffs-train's option)
OUTPUTS = {"3-bit": ("", ""), "float": ("_float", " --out-bits float")}
SHOWN_STEPS = (1, 2, 3, 4, 8, 16)


def latency_figures(auto: dict, fixed: dict) -> dict:
    """The settle and decision steps' mean, 99th percentile and maximum over the samples, from the run until
    settled (every sample settles in it); the fixed-T run must agree on every sample that settled within T."""
    assert all(b is None or a == b for a, b in zip(auto["settled_at"], fixed["settled_at"])), "settled elsewhere"
    return {"settled_at": summary(auto["settled_at"]), "decided_at": summary(auto["decided_at"]),
            "unsettled_at_16": fixed["settled_at"].count(None)}


def network_figures(name: str, dataset: str, arch: str, lava_samples: int) -> dict:
    figures = {}
    for output, (suffix, option) in OUTPUTS.items():
        model = f"{name}{suffix}"
        trained = model_figures(model, dataset, arch, option)
        fixed = run_figures(model, dataset)  # the whole test split, --steps 16
        report = json.loads((RUNS / f"{model}_torch.json").read_text())
        auto = run(f"qffs-run {model}.h5 --dataset {dataset} --steps auto --json {model}_auto.json --quiet")
        auto_report = json.loads((RUNS / f"{model}_auto.json").read_text())
        figures[output] = {
            "train_command": trained["train_command"], "float_accuracy": trained["float_accuracy"],
            "qann_accuracy": fixed["qann_accuracy"], "samples": fixed["samples"],
            "accuracy_by_step": fixed["accuracy_by_step"], "equal_from_step": fixed["equal_from_step"],
            "steps16_seconds": fixed["wall_seconds"], "steps16_command": fixed["command"],
            "auto_command": auto["command"], "auto_seconds": auto["seconds"], "auto_steps": auto_report["steps"],
            "auto_steps_bound": auto_report["steps_bound"], **latency_figures(auto_report, report)}
    model = f"{name}_float"
    lava = run_figures(model, dataset, "lava", samples=lava_samples)
    lava_report = json.loads((RUNS / f"{model}_lava.json").read_text())
    torch_report = json.loads((RUNS / f"{model}_torch.json").read_text())
    figures["float"]["lava"] = {
        "command": lava["command"], "samples": lava["samples"], "wall_seconds": lava["wall_seconds"],
        "same_predictions": sum(a == b for a, b in zip(lava_report["predictions"], torch_report["predictions"]))}
    return figures


def measure(names, previous: dict) -> dict:
    """The named networks measured now; the others' figures kept from `previous` (bench/float_output.json)."""
    results = {"date": datetime.date.today().isoformat(),
               "machine": f"{platform.machine()}, {multiprocessing.cpu_count()} cores, torch {torch.__version__}",
               "networks": {name: figures for name, figures in previous.get("networks", {}).items()
                            if name in NETWORKS and name not in names}}
    for name in names:
        dataset, arch, _, lava_samples = NETWORKS[name]
        results["networks"][name] = network_figures(name, dataset, arch, lava_samples)
    results["networks"] = {name: results["networks"][name] for name in NETWORKS if name in results["networks"]}
    return results


def steps_text(figures: dict) -> str:
    s, d = figures["settled_at"], figures["decided_at"]
    return (f"{s['mean']:.2f} / {s['p99']:g} / {s['max']:g} | {d['mean']:.2f} / {d['p99']:g} / {d['max']:g} | "
            f"T = {figures['auto_steps']} (bound {figures['auto_steps_bound']}): {duration(figures['auto_seconds'])}"
            f" against {duration(figures['steps16_seconds'])}")


def table(results: dict) -> str:
    shown = " / ".join(str(t) for t in SHOWN_STEPS)
    lines = [f"| network | output | QANN | SNN accuracy at t = {shown} | settled at: mean / p99 / max | decided at: "
             "mean / p99 / max | `--steps auto` against `--steps 16` (the commands' wall time) |",
             "|---|---|---|---|---|---|---|"]
    for name, outputs in results["networks"].items():
        for output, f in outputs.items():
            accuracy = " / ".join(pct(f["accuracy_by_step"][t - 1]) for t in SHOWN_STEPS)
            lines.append(f"| {NETWORKS[name][2]} | {output} | {pct(f['qann_accuracy'])} | {accuracy} | "
                         f"{steps_text(f)} |")
    return "\n".join(lines)


def comparison(name: str, outputs: dict) -> str:
    """What the float output changes, in words: accuracy at t = 1, the mean settle step, the QANN."""
    q, f = outputs["3-bit"], outputs["float"]
    return (f"{NETWORKS[name][2]}: {pct(f['accuracy_by_step'][0])} at t = 1 against {pct(q['accuracy_by_step'][0])}, "
            f"settled {q['settled_at']['mean'] - f['settled_at']['mean']:.2f} steps earlier on average, QANN "
            f"{100 * (f['qann_accuracy'] - q['qann_accuracy']):+.2f} points")


def readme_block(results: dict) -> str:
    lava = [f"{NETWORKS[name][2]}: {o['float']['lava']['same_predictions']} of {o['float']['lava']['samples']}"
            for name, o in results["networks"].items()]
    compared = "; ".join(comparison(name, outputs) for name, outputs in results["networks"].items())
    return (f"Measured {results['date']} by `python bench/float_output.py` ({results['machine']}), on the full "
            "test splits (torch backend, synchronous time), each network as `make bench` trains it and with "
            "`--out-bits float` added to its command:\n\n"
            f"{table(results)}\n\nThe float output improves both accuracy and latency, as the paper's Figure 7 "
            f"reports for ImageNet: {compared}. In a chain the output layer settles last (its inputs must be final "
            "first); a read-out sends no spikes, so the network settles when its last hidden layer does. The "
            "float-output networks' Lava runs (`--backend lava`, the "
            f"first samples) predict as the torch runs do: {'; '.join(lava)}. Plot: bench/float_output.png.")


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results["networks"]), figsize=(11, 7), constrained_layout=True, squeeze=False)
    for column, (name, outputs) in enumerate(results["networks"].items()):
        top, bottom = axes[0][column], axes[1][column]
        for output, f in outputs.items():
            line, = top.plot(range(1, STEPS + 1), [100 * a for a in f["accuracy_by_step"]], marker="o",
                             markersize=3, label=f"{output} output (QANN {pct(f['qann_accuracy'])})")
            report = json.loads((RUNS / f"{name}{OUTPUTS[output][0]}_auto.json").read_text())
            for key, style in (("settled_at", "-"), ("decided_at", ":")):
                counts = torch.bincount(torch.tensor(report[key]))
                bottom.step(range(len(counts)), 100 * counts / len(report[key]), where="mid", linestyle=style,
                            color=line.get_color(), label=f"{output} output: {key.replace('_at', '')}")
        top.set(xlabel="time step t (synchronous)", ylabel="accuracy (%)", title=NETWORKS[name][2])
        top.set_ylim(max(0, min(top.get_ylim()[0], 90)), 100)
        bottom.set(xlabel="time step (synchronous)", ylabel="samples (%)", title="settle and decision steps")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("3-bit against full-precision (read-out) output, QFFS SNN (torch simulator, full test splits)")
    fig.savefig(ROOT / "bench" / "float_output.png", dpi=110)
    plt.close(fig)


def write_readme(results: dict) -> None:
    README.write_text(replace_block(README.read_text(), "float-output", readme_block(results)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS),
                        help="measure these only, keeping the others' figures from bench/float_output.json")
    parser.add_argument("--readme-only", action="store_true",
                        help="measure nothing: rewrite the README's block from bench/float_output.json")
    args = parser.parse_args()
    saved = ROOT / "bench" / "float_output.json"
    if args.readme_only:
        return write_readme(json.loads(saved.read_text()))
    RUNS.mkdir(parents=True, exist_ok=True)
    if not (RUNS / "data").exists():
        (RUNS / "data").symlink_to(ROOT / "data")
    results = measure(args.networks, json.loads(saved.read_text()) if saved.exists() else {})
    write_json(saved, results)
    plot(results)
    write_readme(results)
    print(readme_block(results))
    print("wrote bench/float_output.json, bench/float_output.png and the README's bench:float-output block")


if __name__ == "__main__":
    sys.exit(main())
