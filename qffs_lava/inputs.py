"""What a run reads, checked against its network: a dataset split by name, an image folder (folder:PATH), .npy
files, or arrays and Datasets as they are.

`load_inputs` is what `qffs.run` and `qffs-run` do with a source they are given; `check_inputs` and
`check_labels` what a run accepts as arrays. Errors name the parameter (`inputs`, `labels`, `dataset`), which
qffs-run shows as its flag.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple, Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from qffs_lava.ann.datasets import dataset_info, is_folder, load_dataset, open_split
from qffs_lava.ann.folders import CHANNEL_MODES, EARLIER_AUGMENTATION, check_classes
from qffs_lava.errors import ParameterError, QffsError
from qffs_lava.fileio import kind_of_file
from qffs_lava.ir.network import Network
from qffs_lava.messages import QffsNote

#: A source of inputs: a dataset name, "folder:PATH", a .npy file (a Path, or a str ending .npy), an array (N, ...)
#: of dataset values, or a Dataset of (image, class index).
Source = Union[str, Path, np.ndarray, torch.Tensor, Dataset]


class Inputs(NamedTuple):
    """What a run reads: x (an array, or a Dataset read a batch at a time), its labels (None: unlabelled, or
    carried by the Dataset) and what they are, for the report (None for arrays given as they are)."""

    x: Union[np.ndarray, torch.Tensor, Dataset]
    labels: Optional[Union[np.ndarray, torch.Tensor]]
    description: Optional[str]


def is_file_source(source) -> bool:
    """Whether a source names a .npy file rather than a dataset: a Path, or a str ending .npy or naming a file."""
    return isinstance(source, Path) or (isinstance(source, str) and not is_folder(source) and (
        source.endswith(".npy") or Path(source).is_file()))


def read_npy(path: Union[str, Path], parameter: str) -> np.ndarray:
    """A numeric array from a .npy file, or a QffsError naming the parameter that says what the file is instead."""
    kind = kind_of_file(path, ".npy file", parameter=parameter, give="give the .npy file of an array")
    if kind != "a NumPy .npy array":
        raise QffsError(f"{{}} {path} is not a .npy file: it is {kind}; save the array with numpy.save", parameter)
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err):
            raise QffsError(f"{{}} {path} holds Python objects, not numbers; save a numeric array",
                            parameter) from None
        raise QffsError(f"cannot read {{}} {path}: {err}", parameter) from None
    except OSError as err:
        raise QffsError(f"cannot read {{}} {path}: {err}", parameter) from None


def load_inputs(network: Network, source: Source, labels=None, split: str = "test", samples: Optional[int] = None,
                data_dir: Union[str, Path] = "data", download: bool = False) -> Inputs:
    """The first `samples` (None: all; more than there are: all, with a QffsNote) inputs of a source, for this
    network.

    source: a dataset name (its `split`, from `data_dir`, fetched where `download`), "folder:PATH" (the folder's
            split read a batch at a time at the network's input size and channels (grey or RGB),
            evaluation-transformed as the network was trained; its classes must be the network's), a .npy file, or
            an array or Dataset as it is
    labels: with a .npy file or an array: class indices, a .npy file of them, or None
    """
    named = isinstance(source, str) and not is_file_source(source)
    if labels is not None and (named or isinstance(source, Dataset)):
        raise ParameterError("{} go with inputs from a .npy file or an array; a dataset brings its own", "labels")
    if is_file_source(source):
        x, description = read_npy(source, "inputs"), str(source)
    elif named and is_folder(source):
        info = dataset_info(source, network.input.shape[-1], folder_augmentation(network))
        if network.input.shape[0] in CHANNEL_MODES:  # grey images for a grey network, RGB for an RGB one
            info = replace(info, input_shape=(network.input.shape[0], *info.input_shape[1:]))
        check_classes(info, network.meta.get("classes"), "the network")
        folder = "val" if split == "test" else "train"
        x, description = open_split(info, split), f"{info.path} {split} split ({folder}/)"
    elif named:
        x, labels = load_dataset(source, split, data_dir, download=download)
        description = f"{source} {split} split"
    else:
        x, description = source, None
    if isinstance(labels, (str, Path)):
        labels = read_npy(labels, "labels")
    if samples is not None:
        if samples < 1:
            raise ParameterError("{} must be at least 1", ("samples", samples))
        if samples > len(x):
            warnings.warn(f"{samples} samples asked for, but {description or 'the input'} has {len(x)}; running all "
                          f"{len(x)}", QffsNote)
        if isinstance(x, Dataset):
            x = Subset(x, range(min(samples, len(x))))
        else:
            x, labels = x[:samples], labels[:samples] if labels is not None else None
    return Inputs(x, labels, description)


def folder_augmentation(network: Network) -> str:
    """The augmentation whose evaluation transform an image folder gets for this network: the one it recorded;
    EARLIER_AUGMENTATION for one trained on a folder before that was recorded; else none (a network trained on a
    built-in dataset, or a user's own: the images at its side as they are, not zoomed in by a centre crop)."""
    if "augment" in network.meta:
        return network.meta["augment"]
    return EARLIER_AUGMENTATION if is_folder(str(network.meta.get("dataset", ""))) else "none"


def check_inputs(network: Network, x) -> torch.Tensor:
    """Dataset values shaped (N, *input shape) (or (N, prod(shape))) as a float64 tensor; ParameterError otherwise."""
    try:
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ParameterError(f"inputs are not a numeric array: {err}") from None
    shape = tuple(network.input.shape)
    if x.dtype.is_complex or not (x.dtype.is_floating_point or x.dtype in (torch.uint8, torch.int64, torch.int32)):
        raise ParameterError(f"inputs must be real numbers, got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ParameterError("no input samples")
    if tuple(x.shape[1:]) != shape and not (x.ndim == 2 and x.shape[1] == int(np.prod(shape))):
        resized = x.ndim == 4 and len(shape) == 3 and x.shape[1] == shape[0] and shape[1] == shape[2]
        trained = f", augment={network.meta['augment']!r}" if "augment" in network.meta else ""
        raise ParameterError(f"inputs have shape {tuple(x.shape)}; this network takes "
                             f"(N, {', '.join(map(str, shape))})"
                             + (f": images of another size; an image folder loads as the network was trained with "
                                f"qffs.load_dataset('folder:PATH', split, input_size={shape[1]}{trained})"
                                if resized else ""))
    x = x.to(torch.float64).reshape(-1, *shape)
    if not torch.isfinite(x).all():
        raise ParameterError("inputs contain NaN or infinite values")
    if x.min() < 0 or x.max() > 1:
        raise ParameterError(f"inputs must be dataset values in [0, 1], got [{float(x.min()):g}, "
                             f"{float(x.max()):g}]")
    return x


def check_labels(labels, samples: int, classes: int) -> torch.Tensor:
    """N class indices in 0..classes-1 as int64; ParameterError naming what is wrong otherwise."""
    values = np.asarray(labels)
    if values.ndim == 2 and values.shape == (samples, classes) and np.isin(values, (0, 1)).all() \
            and (values.sum(axis=1) == 1).all():
        raise ParameterError(f"labels are one-hot {values.shape}; give the {samples} class indices instead "
                             "(labels.argmax(axis=1))")
    if values.ndim != 1:
        raise ParameterError(f"labels must be one class index per sample, shape ({samples},); got shape "
                             f"{values.shape}")
    if len(values) != samples:
        raise ParameterError(f"{len(values)} labels for {samples} inputs")
    if values.dtype.kind not in "iuf" or (values.dtype.kind == "f" and not (
            np.isfinite(values).all() and (values == np.round(values)).all())):
        fraction = values[values != np.round(values)] if values.dtype.kind == "f" else []
        raise ParameterError(f"labels must be whole numbers (class indices), got dtype {values.dtype}"
                             + (f" with value {fraction[0]}" if len(fraction) else ""))
    outside = (values < 0) | (values >= classes)
    if outside.any():
        index = int(np.argmax(outside))
        raise ParameterError(f"labels must be class indices 0..{classes - 1} (the network has {classes} outputs); "
                             f"labels[{index}] is {values[index]:g}")
    return torch.as_tensor(values.astype(np.int64))
