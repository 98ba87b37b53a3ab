"""Make an image folder in torchvision's ImageFolder layout out of generated PNGs, for tests and benchmarks.

    python bench/image_folder.py runs/folder --classes 4 --train 100 --val 25 --min-size 20 --max-size 48
    python bench/image_folder.py runs/shapes --kind shapes --classes 5 --train 500 --val 100 --min-size 32 \
        --max-size 32

Stripes (the default): class c's images are noise over a colour and a stripe direction of
its own, so a small network learns them in a few epochs. Shapes: class c is one of SHAPES
(circle, square, triangle, ring, cross, folder names the shapes'), of a random colour, size,
place and turn on a background of another random colour, with noise: only the outline tells
the classes apart, and flipping an image keeps its class. Each image is of a random size in
min-size..max-size. Seeded: the same arguments give the same files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = np.array([(200, 40, 40), (40, 170, 40), (40, 60, 210), (200, 180, 40), (160, 40, 180), (40, 170, 170)])


def image(rng: np.random.Generator, label: int, height: int, width: int) -> np.ndarray:
    """One uint8 (height, width, 3) image of class `label`: its colour, its stripes, noise."""
    colour = COLOURS[label % len(COLOURS)]
    rows, cols = np.mgrid[0:height, 0:width]
    period = 4 + 2 * (label // len(COLOURS))
    stripes = ((rows if label % 2 else cols) // (period // 2)) % 2
    pixels = colour[None, None, :] * (0.6 + 0.4 * stripes[..., None]) + rng.normal(0, 25, (height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


SHAPES = ("circle", "square", "triangle", "ring", "cross")


def shape_image(rng: np.random.Generator, label: int, height: int, width: int) -> np.ndarray:
    """One uint8 (height, width, 3) image of SHAPES[label]: a random colour, size, place and turn, on a background
    of another colour, with noise."""
    background = rng.integers(0, 256, 3)
    colour = rng.integers(0, 256, 3)
    while np.abs(colour - background).mean() < 60:
        colour = rng.integers(0, 256, 3)
    picture = Image.new("RGB", (width, height), tuple(int(c) for c in background))
    draw, fill = ImageDraw.Draw(picture), tuple(int(c) for c in colour)
    side = min(height, width)
    r = rng.uniform(0.2, 0.4) * side
    cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
    turn = rng.uniform(0, 2 * np.pi)

    def polygon(corners):
        angles = turn + 2 * np.pi * np.arange(corners) / corners
        return [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in angles]

    name = SHAPES[label]
    if name in ("circle", "ring"):
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill if name == "circle" else None,
                     outline=fill, width=max(2, round(r / 3)))
    elif name in ("square", "triangle"):
        draw.polygon(polygon(4 if name == "square" else 3), fill=fill)
    else:
        for bar in (0, np.pi / 2):  # two bars, r long each way and r/2 wide
            along, across = np.array([np.cos(turn + bar), np.sin(turn + bar)]), np.array(
                [-np.sin(turn + bar), np.cos(turn + bar)])
            centre = np.array([cx, cy])
            draw.polygon([tuple(centre + a * r * along + b * r / 4 * across) for a, b in
                          ((-1, -1), (1, -1), (1, 1), (-1, 1))], fill=fill)
    pixels = np.asarray(picture, dtype=np.float64) + rng.normal(0, 20, (height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


KINDS = {"stripes": image, "shapes": shape_image}


def make_image_folder(path: str | Path, classes: int = 3, train: int = 40, val: int = 10, min_size: int = 20,
                      max_size: int = 40, seed: int = 0, progress: bool = False, kind: str = "stripes") -> Path:
    """PATH/train/CLASS/*.png and PATH/val/CLASS/*.png: `train` and `val` images per class, the classes class_C
    (stripes) or the names of SHAPES."""
    if kind == "shapes" and classes > len(SHAPES):
        raise ValueError(f"shapes has {len(SHAPES)} classes, not {classes}")
    path, rng = Path(path), np.random.default_rng(seed)
    total = classes * (train + val)
    made = 0
    for split, count in (("train", train), ("val", val)):
        for label in range(classes):
            folder = path / split / (SHAPES[label] if kind == "shapes" else f"class_{label}")
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                height, width = rng.integers(min_size, max_size + 1, size=2)
                pixels = KINDS[kind](rng, label, int(height), int(width))
                Image.fromarray(pixels).save(folder / f"{index:06d}.png")
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
    parser.add_argument("--kind", choices=list(KINDS), default="stripes", help="what the images show (above)")
    args = parser.parse_args()
    make_image_folder(args.path, args.classes, args.train, args.val, args.min_size, args.max_size, args.seed,
                      progress=True, kind=args.kind)
    print(f"wrote {args.path}")


if __name__ == "__main__":
    main()
