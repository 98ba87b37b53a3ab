"""Reading and writing HDF5 groups for net.h5: every defect becomes a QffsFormatError naming the place and key.

A `GroupReader` wraps one group (a layer, its `neuron` group, a `synapse/j` group) and
reads typed values from it; it refuses links to other files, groups where a dataset
belongs, unreadable data, oversized arrays and integers beyond 32 bits.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import h5py
import numpy as np

from qffs_lava.errors import QffsFormatError

#: What any backend accepts: integers within int32 (Lava's fixed-point Vars), at most
#: MAX_ELEMENTS per stored array.
INT_LIMIT = 2**31
MAX_ELEMENTS = 2**26


def put_string(group: h5py.Group, key: str, value: str) -> None:
    group.create_dataset(key, data=np.array([value.encode("ascii")]))


def put_ints(group: h5py.Group, key: str, value) -> None:
    group.create_dataset(key, data=np.asarray(value, dtype=np.int64))


def is_stored_group(parent: h5py.Group, key: str) -> bool:
    """Whether parent[key] is a group stored in this file (not a link elsewhere, not a dataset)."""
    return key in parent and isinstance(parent.get(key, getlink=True), h5py.HardLink) \
        and isinstance(parent[key], h5py.Group)


class GroupReader:
    """Typed reads from one group; `where` names it in errors ('layer 3 (conv)', 'layer 3 synapse 1')."""

    def __init__(self, group: h5py.Group, where: str):
        self.group, self.where = group, where

    def fail(self, key: str, expected: str, got: Any = None) -> QffsFormatError:
        got_text = "" if got is None else f", got {got}"
        return QffsFormatError.at(self.where, key, f"expected {expected}{got_text}")

    def has(self, key: str) -> bool:
        return key in self.group

    def child(self, key: str, where: str) -> "GroupReader":
        if not is_stored_group(self.group, key):
            raise self.fail(key, "a group stored in this file")
        return GroupReader(self.group[key], where)

    def raw(self, key: str) -> np.ndarray:
        if key not in self.group:
            raise self.fail(key, "it to be present (missing)")
        if not isinstance(self.group.get(key, getlink=True), h5py.HardLink):
            raise self.fail(key, "data stored in this file, not a link")
        item = self.group[key]
        if not isinstance(item, h5py.Dataset):
            raise self.fail(key, "a dataset, found a group")
        if item.size > MAX_ELEMENTS:
            raise self.fail(key, f"at most {MAX_ELEMENTS} values", item.size)
        try:
            return np.asarray(item[()])
        except Exception as err:  # unreadable data in a damaged file
            raise self.fail(key, "readable data", f"{type(err).__name__}: {err}") from None

    def string(self, key: str) -> str:
        value = self.raw(key)
        value = value.reshape(-1)[0] if value.size == 1 else value
        if isinstance(value, np.ndarray) or not isinstance(value, (bytes, np.bytes_, str)):
            raise self.fail(key, "a string", repr(value)[:80])
        return value.decode("ascii", "replace") if isinstance(value, (bytes, np.bytes_)) else str(value)

    def ints(self, key: str, ndim: Optional[int] = None, size: Optional[int] = None, minimum=None) -> np.ndarray:
        value = self.raw(key)
        if value.dtype.kind not in "iuf" or (value.dtype.kind == "f" and not (
                np.all(np.isfinite(value)) and np.all(value == np.round(value)))):
            raise self.fail(key, "integers", f"dtype {value.dtype}")
        if value.size and (value.max() >= INT_LIMIT or value.min() < -INT_LIMIT):
            raise self.fail(key, "values that fit 32-bit signed integers", f"range [{value.min()}, {value.max()}]")
        value = value.astype(np.int64)
        if ndim is not None and value.ndim != ndim:
            raise self.fail(key, f"{ndim} dimensions", f"shape {value.shape}")
        if size is not None and value.size != size:
            raise self.fail(key, f"{size} values", f"shape {value.shape}")
        if minimum is not None and value.size and value.min() < minimum:
            raise self.fail(key, f"values >= {minimum}", int(value.min()))
        return value

    def int(self, key: str, minimum=None) -> int:
        return int(self.ints(key, size=1, minimum=minimum).reshape(-1)[0])

    def pair(self, key: str, minimum: int) -> Tuple[int, int]:
        value = self.ints(key, minimum=minimum)
        if value.size == 1:
            return (int(value.reshape(-1)[0]),) * 2
        if value.size != 2:
            raise self.fail(key, "an (H, W) pair", f"shape {value.shape}")
        return tuple(int(v) for v in value.reshape(-1))

    def shape(self, key: str, sizes: Tuple[int, ...]) -> Tuple[int, ...]:
        value = self.ints(key, ndim=1, minimum=1)
        if value.size not in sizes:
            raise self.fail(key, " or ".join(f"{n} sizes" for n in sizes), tuple(value))
        return tuple(int(s) for s in value)

    def per_channel(self, key: str, channels: int, minimum: int) -> np.ndarray:
        value = self.ints(key, minimum=minimum)
        if value.ndim > 1 or value.size not in (1, channels):
            raise self.fail(key, f"one value or one per output channel ({channels})", f"shape {value.shape}")
        return np.broadcast_to(value.reshape(-1), (channels,)).copy()
