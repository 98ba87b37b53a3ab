"""Your own images: a folder in torchvision's ImageFolder layout.

    PATH/train/CLASS/*.png|jpg|...     the training split (a share held out for validation)
    PATH/val/CLASS/*                   the evaluation split (what qffs-export and qffs-run call "test")

Classes are the sub-folder names, sorted; train and val must have the same ones, and every
class needs images in both. Images are read with PIL as RGB, so a sample is float32 (3, S, S)
in [0, 1] with S the input size, multiples of 1/255 like the built-in 8-bit datasets (a run of
a network that takes one channel, trained on a grey dataset such as MNIST, reads them as grey:
(1, S, S)). S is, where not given, the images' own side where they share one, else their
median short side, at most 224 (`ImageSizes`). The training transform is one of `AUGMENTATIONS`, which also decides
the evaluation transform:

- none: each image resized so that its short side is S, then its centre S x S (nothing at all
  for S x S images); evaluation the same;
- crop-flip (CIFAR's; the default for S <= 64): that, then a random S x S crop of it
  zero-padded by S/8 pixels (4 at 32x32) and a random horizontal flip; evaluation as none;
- imagenet (ImageNet's; the default above): a random resized crop (scale 0.08-1, aspect
  3/4-4/3) to S x S and a random horizontal flip; evaluation: resized so that the short side
  is S / 0.875, then the centre S x S crop.

An unreadable image stops the run with one line that names it.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset

from qffs_lava.errors import QffsError

#: The splits' sub-folders, by the split names the tools use.
FOLDER_SPLITS = {"train": "train", "test": "val"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: ImageNet's evaluation resize: the short side becomes input size / CENTRE_CROP before the centre crop.
CENTRE_CROP = 0.875
DEFAULT_INPUT_SIZE = 224  # the most an input size chosen from the images is (ImageNet's)
SMALLEST_INPUT_SIZE = 8
#: The training augmentations, and what each does to the images at an input size S (evaluation included).
AUGMENTATIONS = {
    "none": "no augmentation: every image resized so that its short side is {S}, then its centre {S}x{S}",
    "crop-flip": "CIFAR's: every image resized so that its short side is {S}, then its centre {S}x{S}; in training "
                 "then a random {S}x{S} crop of it zero-padded by {pad} pixels and a random horizontal flip",
    "imagenet": "ImageNet's: in training a random resized crop (scale 0.08-1, aspect 3/4-4/3) to {S}x{S} and a "
                "random horizontal flip; in evaluation the image resized so that its short side is {crop}, then its "
                "centre {S}x{S}",
}
SMALL_IMAGES = 64  # the largest input size whose default augmentation is crop-flip; imagenet above
#: What models trained on image folders before the choice was recorded were trained with.
EARLIER_AUGMENTATION = "imagenet"
SIZE_SAMPLE = 1000  # training images whose size is read to describe a folder, spread evenly over the split


class FolderError(QffsError):
    """An image folder that cannot be used: the message names the path and says why."""

    def __init__(self, message: str, *parameters):
        # DataLoader re-raises a worker's error as type(err)("Caught ... Original Traceback ...: MESSAGE"): keep
        # the message, one line.
        if message.startswith("Caught FolderError"):
            message = message.rstrip().rsplit("FolderError: ", 1)[-1]
        super().__init__(message, *parameters)


def check_classes(info, classes: Optional[Sequence[str]], trained: str) -> None:
    """FolderError where a folder's classes (a DatasetInfo's) are not the ones `trained` ("the model") was trained
    on (None: not recorded, nothing to check)."""
    if classes and list(classes) != list(info.classes):
        raise FolderError(f"{info.path}/ has the classes {', '.join(info.classes[:5])}, {trained} was trained on "
                          f"{', '.join(classes[:5])}: give the folder it was trained on")


def classes_of(root: Path) -> List[str]:
    """The class names of one split folder: its sub-folders, sorted."""
    if not root.is_dir():
        raise FolderError(f"{root}/ is not there: an image folder holds train/CLASS/* and val/CLASS/*")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise FolderError(f"{root}/ has no class folders: put each class's images in {root}/CLASS/")
    return classes


def folder_classes(path: str | Path) -> List[str]:
    """The classes of an image folder, checked: train/ and val/ exist and have the same class folders."""
    path = Path(path)
    if not path.is_dir():
        raise FolderError(f"image folder {path}/ does not exist")
    found = {split: classes_of(path / folder) for split, folder in FOLDER_SPLITS.items()}
    if found["train"] != found["test"]:
        only_train = sorted(set(found["train"]) - set(found["test"]))
        only_val = sorted(set(found["test"]) - set(found["train"]))
        raise FolderError(f"{path}/: train/ and val/ must have the same class folders"
                          + (f"; only in train/: {', '.join(only_train[:5])}" if only_train else "")
                          + (f"; only in val/: {', '.join(only_val[:5])}" if only_val else ""))
    return found["train"]


def split_samples(root: Path, classes: List[str]) -> List[Tuple[str, int]]:
    """(image path, class index) of one split folder, in order; FolderError for a class folder without images (a
    class never trained on is never predicted; one never tested is not measured)."""
    samples = []
    for index, name in enumerate(classes):
        found = [os.path.join(folder, f) for folder, _, files in sorted(os.walk(root / name, followlinks=True))
                 for f in sorted(files) if f.lower().endswith(IMAGE_SUFFIXES)]
        if not found:
            loss = ("training images is never learnt, so never predicted" if root.name == FOLDER_SPLITS["train"]
                    else "evaluation images is never tested")
            raise FolderError(f"{root / name}/ holds no images ({', '.join(IMAGE_SUFFIXES)}): a class without "
                              f"{loss}; add images to it, or remove class {name} from train/ and val/")
        samples += [(path, index) for path in found]
    return samples


def read_image(path: str, read: Callable):
    """read(the PIL image at `path`), or a FolderError that names the file."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return read(image)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise FolderError(f"cannot read image {path}: {err}; delete or replace it") from None


#: PIL's mode for images read with 1 channel (grey) or 3 (RGB).
CHANNEL_MODES = {1: "L", 3: "RGB"}


def open_image(path: str, channels: int = 3):
    """The image at `path` (PIL) in CHANNEL_MODES[channels]."""
    return read_image(path, lambda image: image.convert(CHANNEL_MODES[channels]))


@dataclass(frozen=True)
class ImageSizes:
    """The sizes of a folder's training images: ((width, height), count) over `read` of its `total` images."""

    counts: Tuple[Tuple[Tuple[int, int], int], ...]
    read: int
    total: int

    @classmethod
    def of(cls, path: str | Path, classes: List[str]) -> "ImageSizes":
        """The sizes of up to SIZE_SAMPLE training images, spread evenly over the split (only their headers
        are read)."""
        samples = split_samples(Path(path) / FOLDER_SPLITS["train"], classes)
        picked = [samples[i * len(samples) // SIZE_SAMPLE] for i in range(SIZE_SAMPLE)] \
            if len(samples) > SIZE_SAMPLE else samples
        counts: Dict[Tuple[int, int], int] = {}
        for image_path, _ in picked:
            size = read_image(image_path, lambda image: image.size)
            counts[size] = counts.get(size, 0) + 1
        return cls(tuple(sorted(counts.items())), len(picked), len(samples))

    @property
    def shared(self) -> Optional[Tuple[int, int]]:
        """The (width, height) all the images read have, or None."""
        return self.counts[0][0] if len(self.counts) == 1 else None

    @property
    def median_short_side(self) -> int:
        return statistics.median_low(min(size) for size, count in self.counts for _ in range(count))

    def input_size(self) -> int:
        """The input size where none is given: the images' short side where they share a size, else the median
        short side, at most DEFAULT_INPUT_SIZE (and at least SMALLEST_INPUT_SIZE)."""
        side = min(self.shared) if self.shared else min(DEFAULT_INPUT_SIZE, self.median_short_side)
        return max(SMALLEST_INPUT_SIZE, side)

    def __str__(self) -> str:
        read = f"all {self.total} read" if self.read == self.total else f"{self.read} of {self.total} read"
        if self.shared:
            return f"{self.shared[0]}x{self.shared[1]} ({read})"
        by_area = sorted((w * h, (w, h)) for (w, h), _ in self.counts)
        (low_w, low_h), (high_w, high_h) = by_area[0][1], by_area[-1][1]
        return (f"of {len(self.counts)} sizes, {low_w}x{low_h} to {high_w}x{high_h} (median short side "
                f"{self.median_short_side}; {read})")


def trained_augmentation(content: dict) -> str:
    """The augmentation a model file trained on an image folder was trained with, which its evaluation follows."""
    return content["train"].get("augment") or EARLIER_AUGMENTATION


def default_augmentation(input_size: int) -> str:
    """crop-flip for small images (input size up to SMALL_IMAGES), else imagenet."""
    return "crop-flip" if input_size <= SMALL_IMAGES else "imagenet"


def crop_padding(input_size: int) -> int:
    """crop-flip's zero padding: S / 8 pixels (CIFAR's 4 at 32x32), at least 1."""
    return max(1, input_size // 8)


def describe_augmentation(augment: str, input_size: int) -> str:
    """What an augmentation does at an input size, in words."""
    return AUGMENTATIONS[augment].format(S=input_size, pad=crop_padding(input_size),
                                         crop=round(input_size / CENTRE_CROP))


def folder_transform(augment: str, input_size: int, training: bool):
    """The transform of a PIL image into a float tensor (3, S, S) for training or evaluation (module docstring)."""
    from torchvision import transforms

    size = input_size  # S
    if augment == "imagenet":
        steps = ([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()] if training else
                 [transforms.Resize(round(size / CENTRE_CROP)), transforms.CenterCrop(size)])
    else:
        steps = [transforms.Resize(size), transforms.CenterCrop(size)]
        if training and augment == "crop-flip":
            steps += [transforms.RandomCrop(size, padding=crop_padding(size)), transforms.RandomHorizontalFlip()]
    return transforms.Compose(steps + [transforms.ToTensor()])


def describe_folder(path: str, classes: List[str], sizes: ImageSizes, held_out: int, evaluation: int,
                    input_size: int, augment: str, size_source: Optional[str] = None,
                    augment_source: Optional[str] = None) -> str:
    """Two lines for the training log: what a folder's images are, and what the model sees of them; the sources
    say where the input size and the augmentation come from (None: chosen by default)."""
    shared, square = sizes.shared, (input_size, input_size)
    why = size_source or ("their size" if shared == square else "their short side" if shared
                          else f"their median short side, at most {DEFAULT_INPUT_SIZE}")
    default = f"the default for input sizes {'up to' if input_size <= SMALL_IMAGES else 'above'} {SMALL_IMAGES}"
    return (f"image folder {path}: {len(classes)} classes, {sizes.total} training images ({held_out} held out for "
            f"validation) and {evaluation} in val/; the training images are {sizes}: the model sees them "
            f"{'as they are' if shared == square else f'at {input_size}x{input_size}'} (input size {input_size}: "
            f"{why}; --input-size)\naugmentation {augment} ({augment_source or default}; --augment "
            f"{' | '.join(AUGMENTATIONS)}): {describe_augmentation(augment, input_size)}")


class ImageFolderSplit(Dataset):
    """One split of an image folder: (image float32 (channels, S, S) in [0, 1], class index; 3 channels: RGB, 1:
    grey), transformed for training or evaluation as `augment` (one of AUGMENTATIONS) says."""

    def __init__(self, path: str | Path, split: str, classes: List[str], input_size: int, training: bool,
                 augment: str, samples: Optional[List[Tuple[str, int]]] = None, channels: int = 3):
        self.root = Path(path) / FOLDER_SPLITS[split]
        self.classes, self.input_size, self.training, self.augment = list(classes), input_size, training, augment
        self.channels = channels
        self.samples = samples if samples is not None else self._scan()
        self.transform = folder_transform(augment, input_size, training)

    def with_training(self, training: bool) -> "ImageFolderSplit":
        """The same files, transformed for training (True) or for evaluation."""
        return ImageFolderSplit(self.root.parent, "train" if self.root.name == "train" else "test", self.classes,
                                self.input_size, training, self.augment, self.samples, self.channels)

    def _scan(self) -> List[Tuple[str, int]]:
        found = classes_of(self.root)
        if found != self.classes:
            raise FolderError(f"{self.root}/ has the classes {', '.join(found[:5])}{' ...' if len(found) > 5 else ''}"
                              f", not the {len(self.classes)} the model was trained on "
                              f"({', '.join(self.classes[:5])}{' ...' if len(self.classes) > 5 else ''})")
        return split_samples(self.root, self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(open_image(path, self.channels)), label
