"""Quantized ANN (model file) -> integer QFFS network (the paper's Quant-ANN-to-SNN conversion).

For synaptic layer l with folded float weights W, bias B, its activation's step s_l,
and the previous activation's step s_(l-1), the quantized ANN computes

    z_l = clip(floor((W s_(l-1) . z_(l-1) + B + s_l / 2) / s_l), 0, 2^b - 1)

and the first layer sees x = x_int / inputScale, presented for K steps, so its numerator
and denominator are multiplied by K. Multiplying one layer's numerator and denominator
by a common scale lambda changes nothing, so we pick lambda to fill Loihi 2's 8-bit
mixed-sign weight range and round:

    weight = 2 * round(mu * A),  A = W s_(l-1)  (first layer: W / inputScale),  lambda = 2 mu,
    mu = min(127 / max(A_row), 128 / max(-A_row))                      -> even, in [-256, 254]
    threshold = round(lambda * m * s_l),  m = K for the first layer, else 1
    bias per step = lambda * m * B / K    (13-bit mantissa * 2^e)
    vInit = threshold // 2,   zMax = 2^b - 1,   biasSteps = K

BatchNorm is folded into the preceding conv/linear first, the input normalization into
the first layer, and average pooling (kernel == stride) into the next synaptic layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from qffs_lava.errors import QffsError
from qffs_lava.models import output_shape, pair
from qffs_lava.netfile import (
    ConvLayer,
    DenseLayer,
    FlattenLayer,
    InputLayer,
    Layer,
    MaxPoolLayer,
    Network,
    Neurons,
    layer_shapes,
    pool_output_shape,
    representable_bias,
)


def fold_batchnorm(weight: np.ndarray, bias: np.ndarray, bn: nn.Module) -> Tuple[np.ndarray, np.ndarray]:
    """W' = W * g, B' = (B - mean) * g + beta with g = gamma / sqrt(var + eps), per output channel."""
    gain = (bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)).numpy()
    shift = bn.bias.detach().double().numpy() - bn.running_mean.double().numpy() * gain
    return weight * gain.reshape(-1, *([1] * (weight.ndim - 1))), bias * gain + shift


def fold_avgpool(weight: np.ndarray, kernel: int, flat_shape: Optional[Tuple[int, int, int]]) -> np.ndarray:
    """Weights of the next layer acting on the unpooled map: each tap spread over its k x k block / k^2.

    A conv weight (O, I, kh, kw) becomes (O, I, k kh, k kw) (stride and padding times k);
    a dense weight over a flattened pooled map (C, Hp, Wp) becomes one over (C, k Hp, k Wp).
    """
    if flat_shape is not None:
        weight = weight.reshape(weight.shape[0], *flat_shape)
    spread = np.repeat(np.repeat(weight, kernel, axis=-2), kernel, axis=-1) / kernel**2
    return spread.reshape(weight.shape[0], -1) if flat_shape is not None else spread


def fold_input_normalization(weight: np.ndarray, bias: np.ndarray, mean, std, padded: bool):
    """First layer on raw x instead of (x - mean) / std: W' = W / std, B' = B - W' . mean (per channel)."""
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    if np.any(mean != 0) and padded:
        raise QffsError("a non-zero input mean cannot be folded exactly into a zero-padded first conv")
    channels = len(std)
    if weight.ndim == 4:
        w = weight / std.reshape(1, -1, 1, 1)
        return w, bias - (w * mean.reshape(1, -1, 1, 1)).sum(axis=(1, 2, 3))
    w = weight.reshape(weight.shape[0], channels, -1) / std.reshape(1, -1, 1)
    return w.reshape(weight.shape), bias - (w * mean.reshape(1, -1, 1)).sum(axis=(1, 2))


@dataclass
class RealSynapse:
    """A conv or linear layer in float64 with batchnorm, average pooling folded in, and its activation."""

    spec: Dict[str, Any]
    weight: np.ndarray
    bias: np.ndarray
    step: float
    bits: int
    stride: Tuple[int, int]
    padding: Tuple[int, int]


def real_layers(content: Dict[str, Any], model: nn.Sequential) -> Iterator[Union[RealSynapse, Dict[str, Any]]]:
    """Walk the architecture: a RealSynapse per synaptic layer, and the maxpool/flatten specs in between."""
    layers = content["arch"]["layers"]
    shape = tuple(content["arch"]["input_shape"])
    pool: Optional[int] = None  # kernel of an average pool waiting to be folded
    pooled_shape: Optional[Tuple[int, ...]] = None
    i = 0
    while i < len(layers):
        spec, kind = layers[i], layers[i]["type"]
        if kind in ("conv", "linear"):
            module = model[i]
            weight = module.effective_weight().detach().double().numpy()
            bias = module.bias.detach().double().numpy()
            stride, padding = pair(spec.get("stride", 1)), pair(spec.get("padding", 0))
            if pool is not None:
                if kind == "conv" and len(pooled_shape) != 3:
                    raise QffsError(f"layer {i}: a conv after average pooling and flatten is not supported")
                weight = fold_avgpool(weight, pool, pooled_shape if kind == "linear" else None)
                if kind == "conv":
                    stride, padding = (stride[0] * pool, stride[1] * pool), (padding[0] * pool, padding[1] * pool)
            j = i + 1
            if j < len(layers) and layers[j]["type"] == "batchnorm":
                weight, bias = fold_batchnorm(weight, bias, model[j])
                j += 1
            if j >= len(layers) or layers[j]["type"] != "act":
                raise QffsError(f"layer {i} ({kind}) is not followed by an activation")
            quantizer = model[j].quantizer
            if not bool(quantizer.initialized):
                raise QffsError(f"layer {j}: the activation was never quantization-trained (run qffs-train)")
            yield RealSynapse(spec, weight, bias, float(quantizer.step.detach()), quantizer.bits, stride, padding)
            for spec_between in layers[i:j + 1]:
                shape = output_shape(spec_between, shape)
            pool, i = None, j + 1
            continue
        if kind == "avgpool":
            k, s = pair(spec["kernel_size"]), pair(spec["stride"])
            if k != s or k[0] != k[1] or pool is not None:
                raise QffsError(f"layer {i}: only one square average pool with kernel == stride can be folded")
            if shape[1] % k[0] or shape[2] % k[0]:
                raise QffsError(f"layer {i}: average pooling {k} does not tile the {shape[1]}x{shape[2]} map")
            pool = k[0]
        elif kind == "maxpool" and pool is None:
            yield spec
        elif kind == "flatten":
            yield spec
        else:
            raise QffsError(f"layer {i} ({kind}) cannot be converted here (after average pooling, or not "
                            "after a conv/linear layer)")
        shape = output_shape(spec, shape)
        if kind == "avgpool":
            pooled_shape = shape
        i += 1


def integer_layer(weight: np.ndarray, bias: np.ndarray, step: float, prev_step: Optional[float],
                  input_scale: float, bias_steps: int, bits: int) -> Tuple[np.ndarray, np.ndarray, Neurons]:
    """One synaptic layer's integers (module docstring), scaled per output channel."""
    first = prev_step is None
    real = (weight / input_scale if first else weight * prev_step).reshape(weight.shape[0], -1)
    multiplier = bias_steps if first else 1
    top, bottom = real.max(axis=1, initial=0.0), -real.min(axis=1, initial=0.0)
    with np.errstate(divide="ignore"):
        mu = np.minimum(np.where(top > 0, 127 / top, np.inf), np.where(bottom > 0, 128 / bottom, np.inf))
    mu = np.where(np.isfinite(mu), mu, 1.0)  # an all-zero row: any scale
    lam = 2 * mu
    weight_int = 2 * np.clip(np.floor(mu[:, None] * real + 0.5), -128, 127).astype(np.int64)
    threshold = np.maximum(1, np.floor(lam * multiplier * step + 0.5)).astype(np.int64)
    bias_int = np.array([representable_bias(v) for v in lam * multiplier * bias / bias_steps], dtype=np.int64)
    neurons = Neurons(threshold=threshold, v_init=threshold // 2, z_max=2**bits - 1, bias_steps=bias_steps)
    return weight_int.reshape(weight.shape), bias_int, neurons


def convert(content: Dict[str, Any], model: nn.Sequential) -> Network:
    """The integer QFFS network of a quantized model (from modelfile.load_model_file)."""
    arch = content["arch"]
    bits = content["bits"]["layers"]
    bias_steps = 2 ** max(bits[:-1], default=bits[-1]) - 1
    input_scale = float(content["input_levels"])
    layers: List[Layer] = [InputLayer(tuple(arch["input_shape"]), input_scale)]
    prev_step: Optional[float] = None
    for item in real_layers(content, model):
        if isinstance(item, RealSynapse):
            weight, bias = item.weight, item.bias
            if prev_step is None:
                norm = content["input_norm"]
                weight, bias = fold_input_normalization(weight, bias, norm["mean"], norm["std"], any(item.padding))
            weight_int, bias_int, neurons = integer_layer(weight, bias, item.step, prev_step, input_scale,
                                                          bias_steps, item.bits)
            if weight.ndim == 4:
                in_shape = layer_shapes(layers)[-1]
                out = (weight.shape[0],) + pool_output_shape(in_shape, weight.shape[2:], item.stride, item.padding)
                layers.append(ConvLayer(out, weight_int, bias_int, item.stride, item.padding, (1, 1),
                                        int(item.spec["groups"]), neurons))
            else:
                layers.append(DenseLayer((weight.shape[0],), weight_int, bias_int, neurons))
            prev_step = item.step
        elif item["type"] == "maxpool":
            layers.append(MaxPoolLayer(pair(item["kernel_size"]), pair(item["stride"]), pair(item["padding"])))
        else:
            layers.append(FlattenLayer())
    return Network(layers, {
        "dataset": content["dataset"],
        "num_classes": int(arch["num_classes"]),
        "arch": arch["name"],
        "bits": list(bits),
        "K": bias_steps,
        "input_normalization": content["input_norm"],
    })
