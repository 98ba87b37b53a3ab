"""`make ablation`: the paper's ablation study (its Table 4 and Figure 3) on this project's networks.

Runs the torch simulator with `qffs-run --ablate` on the full test splits for t = 1..16, on
the MNIST LeNet and the Fashion-MNIST ResNet-8 that `make bench` trained (runs/bench/):
QFFS as it is; without negative spikes; without the count bound; without both (the
paper's Figure 3: occasional noise not handled); without the half-threshold pre-charge.
Average pooling in place of max pooling is a training-side choice: the LeNet is trained
again with `qffs-train --pool avg` (the ResNet-8 has no max pooling to replace). Writes
bench/ablation.json, bench/ablation.png and the README's bench:ablation block. About 40
minutes on a 2-core CPU, after `make bench`.
"""

import datetime
import json
import multiprocessing
import platform
import sys

import torch
from run_bench import README, ROOT, RUNS, STEPS, duration, pct, replace_block, run

from qffs_lava.reports import write_json

#: name -> (the --ablate options, its label)
VARIANTS = {
    "qffs": ((), "QFFS (all mechanisms)"),
    "no-negative": (("negative-spikes",), "without negative spikes"),
    "no-bound": (("count-bound",), "without the count bound"),
    "no-noise-handling": (("negative-spikes", "count-bound"), "without both (occasional noise not handled)"),
    "no-precharge": (("precharge",), "without the half-threshold pre-charge"),
}
NETWORKS = {"mnist_lenet": ("mnist", "MNIST LeNet"), "fashionmnist_resnet8": ("fashionmnist", "Fashion-MNIST ResNet-8")}
AVG = "mnist_lenet_avg"
AVG_TRAIN = f"qffs-train --dataset mnist --arch lenet --pool avg --out {AVG}.pt --threads 2 --quiet"


def simulate(name: str, dataset: str, ablate=()) -> dict:
    """qffs-run over the whole test split for t = 1..16 with the named mechanisms left out; its figures."""
    options = "".join(f" --ablate {a}" for a in ablate)
    out = f"{name}_ablation{''.join('_' + a for a in ablate)}.json"
    result = run(f"qffs-run {name}.h5 --dataset {dataset} --steps {STEPS}{options} --threads 2 --json {out} --quiet")
    report = json.loads((RUNS / out).read_text())
    return {"command": result["command"], "seconds": result["seconds"], "qann_accuracy": report["qann_accuracy"],
            "accuracy_by_step": report["accuracy_by_step"], "equal_from_step": report["equal_from_step"]}


def measure() -> dict:
    for name in NETWORKS:
        if not (RUNS / f"{name}.h5").exists():
            sys.exit(f"runs/bench/{name}.h5 is missing: run `make bench` first (it trains and exports it)")
    results = {"date": datetime.date.today().isoformat(),
               "machine": f"{platform.machine()}, {multiprocessing.cpu_count()} cores, torch {torch.__version__}",
               "threads": 2, "networks": {}}
    for name, (dataset, _) in NETWORKS.items():
        results["networks"][name] = {key: simulate(name, dataset, ablate) for key, (ablate, _) in VARIANTS.items()}
    if not (RUNS / f"{AVG}.pt").exists():
        trained = run(AVG_TRAIN)
        results["avg_train_seconds"] = trained["seconds"]
    run(f"qffs-export {AVG}.pt {AVG}.h5")
    results["networks"]["mnist_lenet"]["avg-pool"] = simulate(AVG, "mnist")
    results["networks"]["mnist_lenet"]["avg-pool"]["train_command"] = AVG_TRAIN.replace(" --quiet", "")
    return results


LABELS = {**{key: label for key, (_, label) in VARIANTS.items()},
          "avg-pool": "average pooling in place of max pooling (trained so)"}


def table(results: dict) -> str:
    header = "| network | variant | QANN | " + " | ".join(f"t = {t}" for t in range(1, STEPS + 1)) + " |"
    lines = [header, "|" + "---|" * (STEPS + 3)]
    for name, variants in results["networks"].items():
        for key, figures in variants.items():
            lines.append(f"| {NETWORKS[name][1]} | {LABELS[key]} | {pct(figures['qann_accuracy'])} | "
                         + " | ".join(pct(a) for a in figures["accuracy_by_step"]) + " |")
    return "\n".join(lines)


def worth(results: dict) -> str:
    """What each mechanism is worth: QFFS's accuracy minus the variant's, in points, at t = 4 and 8."""
    lines = ["| network | mechanism (variant without it) | worth at t = 4 | worth at t = 8 | at t = 16 |",
             "|---|---|---|---|---|"]
    for name, variants in results["networks"].items():
        full = variants["qffs"]["accuracy_by_step"]
        for key, figures in variants.items():
            if key != "qffs":
                points = [100 * (full[t - 1] - figures["accuracy_by_step"][t - 1]) for t in (4, 8, 16)]
                lines.append(f"| {NETWORKS[name][1]} | {LABELS[key]} | "
                             + " | ".join(f"{p:+.2f}" for p in points) + " |")
    return "\n".join(lines)


def readme_block(results: dict) -> str:
    seconds = sum(f["seconds"] for v in results["networks"].values() for f in v.values())
    return (f"Measured {results['date']} by `make ablation` ({results['machine']}, {results['threads']} threads; "
            f"simulations {duration(seconds)}), accuracy on the full test splits at synchronous step t:\n\n"
            f"{table(results)}\n\nWhat each mechanism is worth (QFFS's accuracy minus that without it, in "
            f"points):\n\n{worth(results)}")


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results["networks"]), figsize=(11, 4), constrained_layout=True)
    for ax, (name, variants) in zip(axes, results["networks"].items()):
        for key, figures in variants.items():
            ax.plot(range(1, STEPS + 1), [100 * a for a in figures["accuracy_by_step"]], marker="o", markersize=3,
                    label=LABELS[key])
        ax.axhline(100 * variants["qffs"]["qann_accuracy"], color="gray", linestyle="--", label="QANN")
        ax.set(xlabel="time step t (synchronous)", ylabel="accuracy (%)", title=NETWORKS[name][1], ylim=(0, 100))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("QFFS ablations (torch simulator, full test splits)")
    fig.savefig(ROOT / "bench" / "ablation.png", dpi=110)
    plt.close(fig)


def main():
    results = measure()
    write_json(ROOT / "bench" / "ablation.json", results)
    plot(results)
    README.write_text(replace_block(README.read_text(), "ablation", readme_block(results)))
    print(readme_block(results))
    print("wrote bench/ablation.json, bench/ablation.png and the README's bench:ablation block")


if __name__ == "__main__":
    main()
