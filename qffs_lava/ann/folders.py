"""Your own images: a folder in torchvision's ImageFolder layout.

    PATH/train/CLASS/*.png|jpg|...     the training split (a share held out for validation)
    PATH/val/CLASS/*                   the evaluation split (what qffs-export and qffs-run call "test")

Classes are the sub-folder names, sorted; train and val must have the same ones. Images are
read with PIL as RGB, so a sample is float32 (3, S, S) in [0, 1] with S the input size,
multiples of 1/255 like the built-in 8-bit datasets:

- training: a random resized crop to S x S and a random horizontal flip (ImageNet's);
- evaluation: resized so the short side is S / 0.875, then the centre S x S crop.

An unreadable image stops the run with one line that names it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from torch.utils.data import Dataset

from qffs_lava.errors import QffsError

#: The splits' sub-folders, by the split names the tools use.
FOLDER_SPLITS = {"train": "train", "test": "val"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: The evaluation resize: the short side becomes input size / CENTRE_CROP before the centre crop.
CENTRE_CROP = 0.875
DEFAULT_INPUT_SIZE = 224


class FolderError(QffsError):
    """An image folder that cannot be used: the message names the path and says why."""

    def __init__(self, message: str, *parameters):
        # DataLoader re-raises a worker's error as type(err)("Caught ... Original Traceback ...: MESSAGE"): keep
        # the message, one line.
        if message.startswith("Caught FolderError"):
            message = message.rstrip().rsplit("FolderError: ", 1)[-1]
        super().__init__(message, *parameters)


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


class ImageFolderSplit(Dataset):
    """One split of an image folder: (image float32 (3, S, S) in [0, 1], class index), transformed for training
    (random resized crop, flip) or evaluation (resize, centre crop)."""

    def __init__(self, path: str | Path, split: str, classes: List[str], input_size: int, training: bool,
                 samples: Optional[List[Tuple[str, int]]] = None):
        self.root = Path(path) / FOLDER_SPLITS[split]
        self.classes, self.input_size, self.training = list(classes), input_size, training
        self.samples = samples if samples is not None else self._scan()
        self.transform = self._transform()

    def with_training(self, training: bool) -> "ImageFolderSplit":
        """The same files, transformed for training (True) or for evaluation."""
        return ImageFolderSplit(self.root.parent, "train" if self.root.name == "train" else "test", self.classes,
                                self.input_size, training, self.samples)

    def _scan(self) -> List[Tuple[str, int]]:
        found = classes_of(self.root)
        if found != self.classes:
            raise FolderError(f"{self.root}/ has the classes {', '.join(found[:5])}{' ...' if len(found) > 5 else ''}"
                              f", not the {len(self.classes)} the model was trained on "
                              f"({', '.join(self.classes[:5])}{' ...' if len(self.classes) > 5 else ''})")
        samples = []
        for index, name in enumerate(self.classes):
            for folder, _, files in sorted(os.walk(self.root / name, followlinks=True)):
                samples += [(os.path.join(folder, f), index) for f in sorted(files)
                            if f.lower().endswith(IMAGE_SUFFIXES)]
        if not samples:
            raise FolderError(f"{self.root}/ holds no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
        return samples

    def _transform(self):
        from torchvision import transforms

        if self.training:
            steps = [transforms.RandomResizedCrop(self.input_size), transforms.RandomHorizontalFlip()]
        else:
            steps = [transforms.Resize(round(self.input_size / CENTRE_CROP)), transforms.CenterCrop(self.input_size)]
        return transforms.Compose(steps + [transforms.ToTensor()])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise FolderError(f"cannot read image {path}: {err}; delete or replace it") from None
        return self.transform(image), label
