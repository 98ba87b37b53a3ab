"""`make bench`: full MNIST, LeNet with max pooling: train (or reuse), export, torch on the whole
test split for t = 1..16, Lava on 200 samples, the two speed benchmarks; writes
bench/results.json and bench/accuracy_vs_steps.png.
"""

import argparse
import datetime
import platform
import time
from pathlib import Path

import lava_neuron_speed
import sim_speed
import torch
from qffs_lava.export.exporter import export

from qffs_lava.ann.datasets import load_dataset
from qffs_lava.ann.modelfile import read_model_file
from qffs_lava.ann.train import train
from qffs_lava.evaluate import evaluate, format_report, plot_report, write_json
from qffs_lava.ir.netfile import read_net

HERE = Path(__file__).resolve().parent


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--lava-samples", type=int, default=200)
    args = parser.parse_args()
    model_path, net_path = HERE / "mnist_lenet.pt", HERE / "mnist_lenet.h5"
    timings = {}

    if model_path.exists():
        print(f"reusing {model_path} (delete it to train again)")
        content = read_model_file(model_path)
    else:
        print(f"$ qffs-train --dataset mnist --arch lenet --out {model_path}")
        start = time.perf_counter()
        content = train("mnist", "lenet", out=model_path, data_dir=args.data_dir)
        timings["train_s"] = time.perf_counter() - start
    print(f"$ qffs-export {model_path} {net_path}")
    start = time.perf_counter()
    network = export(model_path, net_path, data_dir=args.data_dir)
    timings["export_s"] = time.perf_counter() - start
    network = read_net(net_path)

    x, y = load_dataset("mnist", "test", args.data_dir)
    print(f"$ qffs-run {net_path} --dataset mnist --steps {args.steps}")
    torch_report = evaluate(network, x, y, args.steps, "torch")
    print(format_report(torch_report))
    n = args.lava_samples
    print(f"$ qffs-run {net_path} --dataset mnist --samples {n} --steps {args.steps} --backend lava")
    lava_report = evaluate(network, x[:n], y[:n], args.steps, "lava")
    print(format_report(lava_report))
    torch_first = torch_report["predictions"][:n]
    lava_matches = sum(a == b for a, b in zip(lava_report["predictions"], torch_first))

    print("$ python bench/sim_speed.py (batch 256)")
    sim = sim_speed.measure(network, x[:256], args.steps)
    print(sim_speed.report(sim))
    print("$ python bench/lava_neuron_speed.py")
    neuron = lava_neuron_speed.measure()
    print(lava_neuron_speed.report(neuron))

    strip = ("output_counts", "predictions", "labels", "qann_predictions")
    results = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {platform.python_version()}",
        "model": {"float_accuracy": content["accuracy"]["float"], "qann_accuracy": content["accuracy"]["qann"],
                  "train_seconds": content["train"]["seconds"]},
        "export": {k: network.meta[k] for k in ("float_qann_accuracy", "int_qann_accuracy", "qann_agreement",
                                                "fidelity_samples")},
        "torch": {k: v for k, v in torch_report.items() if k not in strip},
        "lava": {**{k: v for k, v in lava_report.items() if k not in strip},
                 "predictions_equal_torch": lava_matches, "seconds_per_sample": lava_report["seconds"] / n,
                 "seconds_per_lava_step": lava_report["seconds"] / n / (args.steps + network.pipeline_depth)},
        "simulator_speed": sim,
        "lava_neuron_speed": neuron,
        "timings": timings,
    }
    write_json(HERE / "results.json", results)
    plot_report(HERE / "accuracy_vs_steps.png",
                {f"torch ({len(x)} samples)": torch_report, f"lava ({n} samples)": lava_report},
                title="MNIST LeNet (2-bit hidden, 3-bit output), QFFS SNN")
    print(f"Lava predictions equal torch's on {lava_matches}/{n}")
    print(f"wrote {HERE / 'results.json'} and {HERE / 'accuracy_vs_steps.png'}")


if __name__ == "__main__":
    main()
