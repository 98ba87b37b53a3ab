"""Augmentation of small images: the built-in LeNet on a generated folder of 32x32 shapes, trained with each
`--augment` for the same epochs.

    python bench/folder_augment.py [--train 500] [--val 100] [--augment crop-flip imagenet none] [--threads 1]

Makes runs/folder_augment/shapes (5 classes, `bench/image_folder.py --kind shapes`: circles, squares,
triangles, rings and crosses of random colours, sizes, places and turns, with noise; `--train` and
`--val` images per class, all 32x32), runs `qffs-train --dataset folder:... --arch lenet --augment A`
with qffs-train's default schedule for image folders (30 float, 10 LSQ and 2 hardware-exact epochs)
for each A, and reports each model file's test accuracies (val/), float and QANN (the exported
network's). Prints a table and writes bench/folder_augment.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "folder_augment"
BIN = Path(sys.executable).parent

sys.path.insert(0, str(ROOT / "bench"))
from image_folder import make_image_folder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=500, help="training images per class")
    parser.add_argument("--val", type=int, default=100, help="evaluation images per class")
    parser.add_argument("--augment", nargs="+", default=["crop-flip", "imagenet"],
                        choices=["none", "crop-flip", "imagenet"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "bench" / "folder_augment.json"))
    args = parser.parse_args()
    folder = RUNS / f"shapes_{args.train}_{args.val}"
    if not folder.is_dir():
        make_image_folder(folder, classes=5, train=args.train, val=args.val, min_size=32, max_size=32, kind="shapes")
    results = []
    for augment in args.augment:
        out = RUNS / f"lenet_{augment}.pt"
        for stale in RUNS.glob(f"lenet_{augment}.*"):
            stale.unlink()
        command = [str(BIN / "qffs-train"), "--dataset", f"folder:{folder}", "--arch", "lenet", "--augment", augment,
                   "--threads", str(args.threads), "--quiet", "--out", str(out)]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        content = torch.load(out, weights_only=True)
        shown = ["qffs-train", *command[1:]]
        results.append({"augment": augment, "command": " ".join(shown).replace(f"{ROOT}/", ""),
                        "float": content["accuracy"]["float"], "qann": content["accuracy"]["qann"],
                        "epochs": [content["train"][k] for k in ("float_epochs", "qat_epochs", "hardware_epochs")],
                        "seconds": round(time.perf_counter() - started)})
        print(f"{augment}: float {100 * results[-1]['float']:.2f}%, QANN {100 * results[-1]['qann']:.2f}% "
              f"({results[-1]['seconds']} s)", flush=True)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": platform.platform(), "torch": torch.__version__,
              "folder": {"classes": 5, "train_per_class": args.train, "val_per_class": args.val, "size": 32},
              "runs": results}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
