"""Lava's array layout: images are (W, H, C) where torch and net.h5 hold (C, H, W).

Conv weights (Cout, Cin, kH, kW) become `w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)` (Lava's
Conv convolves and takes (Cout, kW, kH, Cin)), (H, W) pairs are reversed, flatten is an
`OutPort.reshape` in W, H, C order, and the next dense layer's columns are permuted from
torch's C, H, W order to match.

A batched network holds B samples side by side, sample-major on the last axis: an image
layer is (W, H, B * C), channel b * C + c holding sample b's channel c, and a flat layer
(B * N,), position b * N + n holding sample b's n.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from qffs_lava.dynamics import pool_windows
from qffs_lava.ir.layers import MaxPoolLayer


def whc_order(shape_chw: Tuple[int, ...], batch: int = 1) -> np.ndarray:
    """For each flat position of `batch` samples in Lava's layout, the flat position in their (batch, C, H, W)
    order (torch's)."""
    positions = np.arange(batch * int(np.prod(shape_chw))).reshape(batch, *shape_chw)
    if len(shape_chw) == 3:
        positions = positions.transpose(3, 2, 0, 1)  # (W, H, batch, C)
    return positions.reshape(-1)


def lava_shape(shape_chw: Tuple[int, ...], batch: int = 1) -> Tuple[int, ...]:
    """(C, H, W) -> (W, H, batch * C); flat (N,) -> (batch * N,)."""
    if len(shape_chw) == 3:
        return (shape_chw[2], shape_chw[1], batch * shape_chw[0])
    return (batch * shape_chw[0],)


def to_lava_layout(values: np.ndarray, shape_chw: Tuple[int, ...]) -> np.ndarray:
    """(..., batch, *shape_chw) arrays to (..., *lava_shape(shape_chw, batch))."""
    lead, batch = values.shape[:-len(shape_chw) - 1], values.shape[-len(shape_chw) - 1]
    flat = values.reshape(*lead, -1)[..., whc_order(shape_chw, batch)]
    return flat.reshape(*lead, *lava_shape(shape_chw, batch))


def from_lava_layout(values: np.ndarray, shape_chw: Tuple[int, ...], flat_order: np.ndarray) -> np.ndarray:
    """(..., *Lava shape) arrays of a port whose flat order is `flat_order` (whc_order's, or a flatten's) back to
    (..., batch, *shape_chw)."""
    lead = values.shape[:-len(shape_chw)]
    flat = values.reshape(*lead, len(flat_order))[..., np.argsort(flat_order)]
    return flat.reshape(*lead, -1, *shape_chw)


def lava_conv_weight(weight: np.ndarray) -> np.ndarray:
    """(Cout, Cin, kH, kW) cross-correlation weights as Lava's Conv takes them: (Cout, kW, kH, Cin), flipped."""
    return weight[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)


def lava_pool_windows(in_chw, layer: MaxPoolLayer, batch: int = 1) -> np.ndarray:
    """The pool's window index over `batch` samples, inputs and outputs flattened in Lava's order (a pool is per
    channel, so B samples side by side pool as B * C channels)."""
    in_chw = (batch * in_chw[0], *in_chw[1:])
    params, out_chw = pool_windows(in_chw, layer.kernel_size, layer.stride, layer.padding)
    in_whc = whc_order(tuple(in_chw))
    chw_to_whc = np.empty_like(in_whc)
    chw_to_whc[in_whc] = np.arange(in_whc.size)
    rows = params.window_index[whc_order(out_chw)]
    return chw_to_whc[rows].astype(np.int32)
