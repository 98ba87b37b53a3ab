"""Benchmark: the torch simulator's cost as a ratio to the integer QANN.

    ratio = time(simulate T steps) / (T * time(one integer-QANN forward pass))

on the same batch, both in the same exact dtype. Target: at most 2. Prints the figures;
run it as `python bench/sim_speed.py NET.h5 --dataset mnist`.
"""

import argparse
import statistics
import time

import torch

from qffs_lava.datasets import load_dataset
from qffs_lava.netfile import read_net
from qffs_lava.qann import exact_dtype, qann_forward
from qffs_lava.torch_sim import simulate


def best_of(repeats, fn):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


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
    x = x[:args.batch]
    torch.set_grad_enabled(False)
    qann_forward(network, x)  # warm-up
    qann_best, qann_median = best_of(args.repeats, lambda: qann_forward(network, x))
    for mode in ("sync", "pipelined"):
        sim_best, sim_median = best_of(args.repeats, lambda: simulate(network, x, args.steps, mode))
        print(f"{args.net}: batch {len(x)}, dtype {exact_dtype(network)}, {torch.get_num_threads()} threads, "
              f"mode {mode}")
        print(f"  one QANN forward: {qann_best * 1000:.1f} ms (median {qann_median * 1000:.1f} ms)")
        print(f"  simulate T = {args.steps}: {sim_best * 1000:.1f} ms (median {sim_median * 1000:.1f} ms), "
              f"{sim_best / args.steps * 1000:.1f} ms per step")
        print(f"  ratio time(T steps) / (T * QANN forward) = {sim_best / (args.steps * qann_best):.2f} (target <= 2)")


if __name__ == "__main__":
    main()
