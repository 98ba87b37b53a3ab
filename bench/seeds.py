"""How much the QANN accuracy depends on the seed: train the MNIST LeNet (default schedule) per seed.

    python bench/seeds.py --seeds 0 1 2 [--device cuda] [--qat-epochs N] [--out seeds.json]

Prints float and QANN test accuracy and training time per seed (about 5 minutes per
seed on a 2-core CPU).
"""

import argparse
import json
import logging
import time

from qffs_lava.ann.train import train


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--float-epochs", type=int, default=None, help="default: qffs-train's for mnist")
    parser.add_argument("--qat-epochs", type=int, default=None, help="default: qffs-train's for mnist")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    logging.getLogger("qffs_lava").setLevel(logging.WARNING)  # a line per seed, not the epoch lines
    rows = []
    for seed in args.seeds:
        start = time.perf_counter()
        content = train("mnist", "lenet", progress=False, seed=seed, device=args.device, data_dir=args.data_dir,
                        float_epochs=args.float_epochs, qat_epochs=args.qat_epochs)
        rows.append({"seed": seed, "float": content["accuracy"]["float"], "qann": content["accuracy"]["qann"],
                     "seconds": time.perf_counter() - start})
        print(f"seed {seed}: float {100 * rows[-1]['float']:.2f}%, QANN {100 * rows[-1]['qann']:.2f}%, "
              f"{rows[-1]['seconds']:.0f} s on {args.device}", flush=True)
    qann = [r["qann"] for r in rows]
    print(f"QANN accuracy: min {100 * min(qann):.2f}%, max {100 * max(qann):.2f}% over {len(rows)} seeds")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
