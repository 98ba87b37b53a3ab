"""Make an image folder in torchvision's ImageFolder layout out of generated PNGs, for tests and benchmarks.

    python bench/image_folder.py runs/folder --classes 4 --train 100 --val 25 --min-size 20 --max-size 48

Class c's images are noise over a colour and a stripe direction of its own, each image of a
random size, so a small network learns them in a few epochs. Seeded: the same arguments
give the same files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = np.array([(200, 40, 40), (40, 170, 40), (40, 60, 210), (200, 180, 40), (160, 40, 180), (40, 170, 170)])


def image(rng: np.random.Generator, label: int, height: int, width: int) -> np.ndarray:
    """One uint8 (height, width, 3) image of class `label`: its colour, its stripes, noise."""
    colour = COLOURS[label % len(COLOURS)]
    rows, cols = np.mgrid[0:height, 0:width]
    period = 4 + 2 * (label // len(COLOURS))
    stripes = ((rows if label % 2 else cols) // (period // 2)) % 2
    pixels = colour[None, None, :] * (0.6 + 0.4 * stripes[..., None]) + rng.normal(0, 25, (height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def make_image_folder(path: str | Path, classes: int = 3, train: int = 40, val: int = 10, min_size: int = 20,
                      max_size: int = 40, seed: int = 0, progress: bool = False) -> Path:
    """PATH/train/class_C/*.png and PATH/val/class_C/*.png: `train` and `val` images per class."""
    path, rng = Path(path), np.random.default_rng(seed)
    total = classes * (train + val)
    made = 0
    for split, count in (("train", train), ("val", val)):
        for label in range(classes):
            folder = path / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                height, width = rng.integers(min_size, max_size + 1, size=2)
                Image.fromarray(image(rng, label, int(height), int(width))).save(folder / f"{index:06d}.png")
                made += 1
                if progress and made % 5000 == 0:
                    print(f"{made}/{total} images", flush=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="the folder to make (PATH/train, PATH/val)")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--train", type=int, default=40, help="training images per class")
    parser.add_argument("--val", type=int, default=10, help="evaluation images per class")
    parser.add_argument("--min-size", type=int, default=20, help="smallest side in pixels")
    parser.add_argument("--max-size", type=int, default=40, help="largest side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    make_image_folder(args.path, args.classes, args.train, args.val, args.min_size, args.max_size, args.seed,
                      progress=True)
    print(f"wrote {args.path}")


if __name__ == "__main__":
    main()
