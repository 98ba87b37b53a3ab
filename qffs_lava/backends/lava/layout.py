"""Lava's array layout: images are (W, H, C) where torch and net.h5 hold (C, H, W).

Conv weights (Cout, Cin, kH, kW) become `w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)` (Lava's
Conv convolves and takes (Cout, kW, kH, Cin)), (H, W) pairs are reversed, flatten is an
`OutPort.reshape` in W, H, C order, and the next dense layer's columns are permuted from
torch's C, H, W order to match.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from qffs_lava.dynamics import pool_windows
from qffs_lava.ir.layers import MaxPoolLayer


def whc_order(shape_chw: Tuple[int, ...]) -> np.ndarray:
    """For each flat position in Lava's (W, H, C) order, the flat position in torch's (C, H, W) order."""
    if len(shape_chw) == 1:
        return np.arange(shape_chw[0])
    return np.arange(int(np.prod(shape_chw))).reshape(shape_chw).transpose(2, 1, 0).reshape(-1)


def lava_shape(shape_chw: Tuple[int, ...]) -> Tuple[int, ...]:
    """(C, H, W) -> (W, H, C); flat shapes are unchanged."""
    return tuple(reversed(shape_chw)) if len(shape_chw) == 3 else tuple(shape_chw)


def to_lava_layout(values: np.ndarray, shape_chw: Tuple[int, ...]) -> np.ndarray:
    """(..., *shape_chw) arrays to (..., *lava_shape): the spatial axes reversed."""
    if len(shape_chw) != 3:
        return values
    n = values.ndim
    return values.transpose(*range(n - 3), n - 1, n - 2, n - 3)


def from_lava_layout(values: np.ndarray, shape_chw: Tuple[int, ...], flat_order: np.ndarray) -> np.ndarray:
    """(..., *lava_shape) arrays back to (..., *shape_chw); a flat port is permuted by its flat order."""
    if len(shape_chw) == 3:
        return to_lava_layout(values, shape_chw)  # reversing the spatial axes is its own inverse
    return values[..., np.argsort(flat_order)]


def lava_conv_weight(weight: np.ndarray) -> np.ndarray:
    """(Cout, Cin, kH, kW) cross-correlation weights as Lava's Conv takes them: (Cout, kW, kH, Cin), flipped."""
    return weight[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)


def lava_pool_windows(in_chw, layer: MaxPoolLayer) -> np.ndarray:
    """The pool's window index with inputs and outputs flattened in (W, H, C) order."""
    params, out_chw = pool_windows(in_chw, layer.kernel_size, layer.stride, layer.padding)
    in_whc = whc_order(tuple(in_chw))
    chw_to_whc = np.empty_like(in_whc)
    chw_to_whc[in_whc] = np.arange(in_whc.size)
    rows = params.window_index[whc_order(out_chw)]
    return chw_to_whc[rows].astype(np.int32)
