"""Benchmark: the cost of one Lava step of a batched network against the samples side by side in it.

    python bench/lava_batch.py mnist_lenet.h5 --dataset mnist [--batches 1,2,4,8,16,32,64]

For each B, the bit-accurate network (`fixed_pt`, one runtime in this process) runs G and 2G
groups of B test samples; the difference of the two wall times over the G * (T + D) extra
steps is the cost of one step, with compiling and starting the runtime cancelled out. A group
takes T + D steps, so samples per second = B / ((T + D) x cost per step). Every run's output
counts are checked against the torch backend's pipelined mode. Prints the table, writes
bench/lava_batch.json and bench/lava_batch.png.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from qffs_lava.ann.datasets import load_dataset
from qffs_lava.backends import BACKENDS, RunOptions
from qffs_lava.backends.lava.runner import run_lava
from qffs_lava.backends.pytorch import TorchNetwork
from qffs_lava.ir.netfile import read_net

OUT = Path(__file__).resolve().parent


def timed_run(network, x, steps: int, batch: int) -> float:
    """Wall seconds of one runtime over x, B at a time; its counts checked against the torch simulator."""
    started = time.perf_counter()
    result = run_lava(network, x, steps, BACKENDS["lava"], RunOptions(workers=1, chunk=len(x), lava_batch=batch))
    seconds = time.perf_counter() - started
    expected = TorchNetwork(network).simulate(torch.as_tensor(x), steps, "pipelined")
    assert torch.equal(result.output_counts, expected.output_counts), f"B = {batch}: counts differ from torch"
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("net", help="a net.h5")
    parser.add_argument("--dataset", default="mnist", help="its dataset (default mnist)")
    parser.add_argument("--batches", default="1,2,4,8,16,32,64", help="the values of B (default 1,2,4,8,16,32,64)")
    parser.add_argument("--groups", type=int, default=30, help="G, groups in the shorter run (default 30)")
    parser.add_argument("--steps", type=int, default=16, help="T (default 16)")
    args = parser.parse_args()
    network = read_net(args.net)
    images, _ = load_dataset(args.dataset, "test")
    period = args.steps + network.pipeline_depth
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        short, long = (images[:g * batch].numpy().astype(np.float64) for g in (args.groups, 2 * args.groups))
        seconds = [timed_run(network, x, args.steps, batch) for x in (short, long)]
        per_step = (seconds[1] - seconds[0]) / (args.groups * period)
        rows.append({"batch": batch, "step_ms": 1000 * per_step, "samples_per_s": batch / (period * per_step),
                     "seconds": seconds})
        print(f"B = {batch:3d}: one step {1000 * per_step:8.1f} ms, {rows[-1]['samples_per_s']:7.2f} samples/s "
              f"({seconds[0]:.1f} s for {len(short)} samples, {seconds[1]:.1f} s for {len(long)})", flush=True)
    base = rows[0]["samples_per_s"]
    for row in rows:
        row["speedup"] = row["samples_per_s"] / base
    best = max(rows, key=lambda row: row["samples_per_s"])
    print(f"fastest: B = {best['batch']}, {best['speedup']:.1f} times B = {rows[0]['batch']}'s samples per second")
    figures = {"net": args.net, "dataset": args.dataset, "steps": args.steps, "period": period, "rows": rows,
               "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, Python "
                          f"{platform.python_version()}"}
    (OUT / "lava_batch.json").write_text(json.dumps(figures, indent=2) + "\n")
    plot(rows, Path(args.net).stem)
    print("wrote bench/lava_batch.json and bench/lava_batch.png")


def plot(rows, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = [row["batch"] for row in rows]
    fig, (cost, rate) = plt.subplots(1, 2, figsize=(10, 4))
    cost.plot(batches, [row["step_ms"] for row in rows], "o-")
    cost.set(xscale="log", xlabel="B (samples side by side)", ylabel="ms per Lava step", title="cost of one step")
    rate.plot(batches, [row["samples_per_s"] for row in rows], "o-")
    rate.set(xscale="log", xlabel="B (samples side by side)", ylabel="samples per second", title="throughput")
    for axes in (cost, rate):
        axes.set_xticks(batches, [str(b) for b in batches])
        axes.grid(alpha=0.3)
    fig.suptitle(f"{name}: the batched Lava network, fixed_pt, one runtime")
    fig.tight_layout()
    fig.savefig(OUT / "lava_batch.png", dpi=120)


if __name__ == "__main__":
    main()
