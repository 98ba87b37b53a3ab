"""Benchmark: the torch simulator's cost as a ratio to the integer QANN.

    ratio = time(simulate T steps) / (T * time(one integer-QANN forward pass))

on the same batch, both in the same exact dtype. Target: at most 2. Prints the figures;
run it as `python bench/sim_speed.py NET.h5 --dataset mnist`.
"""

import argparse
import time

import torch

from qffs_lava.ann.datasets import load_dataset
from qffs_lava.backends.pytorch import TorchNetwork
from qffs_lava.ir.netfile import read_net


def best_of(repeats, fn):
    """(best, median) wall time of `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), sorted(times)[len(times) // 2]


def measure(network, x, steps: int = 16, repeats: int = 3) -> dict:
    """Best-of-`repeats` times of one QANN forward and of T simulated steps, per mode, and their ratios."""
    torch.set_grad_enabled(False)
    net = TorchNetwork(network)  # built once, as qffs-run does
    net.qann(x)  # warm-up
    qann_best, _ = best_of(repeats, lambda: net.qann(x))
    figures = {"batch": len(x), "steps": steps, "dtype": str(net.dtype),
               "threads": torch.get_num_threads(), "qann_forward_s": qann_best}
    for mode in ("sync", "pipelined"):
        sim_best, _ = best_of(repeats, lambda: net.simulate(x, steps, mode))
        figures[f"{mode}_s"] = sim_best
        figures[f"{mode}_ratio"] = sim_best / (steps * qann_best)
    return figures


def report(figures: dict) -> str:
    lines = [f"batch {figures['batch']}, {figures['dtype']}, {figures['threads']} threads: one QANN forward "
             f"{figures['qann_forward_s'] * 1000:.1f} ms"]
    for mode in ("sync", "pipelined"):
        lines.append(f"  {mode:9} T = {figures['steps']}: {figures[mode + '_s'] * 1000:.1f} ms, ratio "
                     f"time(T steps) / (T * QANN forward) = {figures[mode + '_ratio']:.2f} (target <= 2)")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("net")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    network = read_net(args.net)
    x, _ = load_dataset(args.dataset, "test", args.data_dir)
    print(f"{args.net}: " + report(measure(network, x[:args.batch], args.steps, args.repeats)))


if __name__ == "__main__":
    main()
