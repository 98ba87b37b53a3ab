"""net.h5: the integer QFFS network, in lava-dl netx's HDF5 layout plus QFFS fields.

The file has group `layer` with subgroups "0".."N-1" (each with a string `type`) and a
group `meta` (DESIGN.md section 4). In memory it is a `Network` of small dataclasses,
one per layer type, each checking its own fields. `read_net` is the single validator:
every backend and `qffs-inspect` read through it, and any defect raises
`QffsFormatError` naming the layer and the key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import h5py
import numpy as np

from qffs_lava.errors import QffsFormatError
from qffs_lava.fileio import atomic_output

NET_FORMAT = "qffs"
NET_VERSION = 1

#: What any backend accepts: integers within int32 (Lava's fixed-point Vars), at most
#: MAX_NEURONS per layer and MAX_ELEMENTS per stored array.
INT_LIMIT = 2**31
MAX_NEURONS = 2**24
MAX_ELEMENTS = 2**26

#: Loihi 2 ranges (DESIGN.md section 3).
WEIGHT_MIN, WEIGHT_MAX = -256, 254  # even integers: 8-bit mantissa in mixed-sign mode
STATE_LIMIT = 2**23  # 24-bit signed membrane; threshold and worst-case |v| below this
BIAS_MANTISSA_BITS, BIAS_MAX_EXP = 13, 7  # per-step bias = mantissa * 2^exp


@dataclass(frozen=True)
class Neurons:
    """QFFS neurons of one layer.

    threshold: th per output channel (a dense neuron, or a conv channel), int64 (channels,)
    v_init:    the pre-charge th // 2 per output channel
    z_max:     the count bound 2^b - 1
    bias_steps: K, the steps the per-step bias is applied
    """

    threshold: np.ndarray
    v_init: np.ndarray
    z_max: int
    bias_steps: int

    def __post_init__(self):
        if self.threshold.ndim != 1 or self.v_init.shape != self.threshold.shape:
            raise ValueError(f"threshold and vInit must be per-channel vectors of one length, got "
                             f"{self.threshold.shape} and {self.v_init.shape}")
        if self.threshold.min() < 1:
            raise ValueError(f"thresholds must be >= 1, got {self.threshold.min()}")
        if self.v_init.min() < 0 or np.any(self.v_init >= self.threshold):
            raise ValueError("vInit must be in 0..threshold-1")
        for name in ("z_max", "bias_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class InputLayer:
    """Input: x_int = floor(x * input_scale + 1/2), sent as graded values for K steps."""

    shape: Tuple[int, ...]
    input_scale: float

    def __post_init__(self):
        if not (math.isfinite(self.input_scale) and self.input_scale > 0):
            raise ValueError(f"inputScale must be a positive number, got {self.input_scale}")


@dataclass(frozen=True)
class DenseLayer:
    """I = W . s_prev + bias (for t in the bias window), then QFFS neurons. weight (N, M)."""

    shape: Tuple[int]
    weight: np.ndarray
    bias: np.ndarray
    neurons: Neurons


@dataclass(frozen=True)
class ConvLayer:
    """2-D convolution (torch's conv2d semantics, weight (Cout, Cin/groups, kH, kW)), then QFFS neurons."""

    shape: Tuple[int, int, int]
    weight: np.ndarray
    bias: np.ndarray
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    dilation: Tuple[int, int]
    groups: int
    neurons: Neurons

    @property
    def kernel_size(self) -> Tuple[int, int]:
        return tuple(self.weight.shape[2:])


@dataclass(frozen=True)
class MaxPoolLayer:
    """Event max pooling (Algorithm 2) over (kH, kW) windows."""

    kernel_size: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int]


@dataclass(frozen=True)
class FlattenLayer:
    """(C, H, W) -> (C*H*W,), in torch's C, H, W order."""


Layer = Union[InputLayer, DenseLayer, ConvLayer, MaxPoolLayer, FlattenLayer]
SYNAPTIC = (DenseLayer, ConvLayer)


@dataclass
class Network:
    """An integer QFFS network: an InputLayer, then synaptic, pool and flatten layers."""

    layers: List[Layer]
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def input(self) -> InputLayer:
        return self.layers[0]

    @property
    def synaptic_layers(self) -> List[Union[DenseLayer, ConvLayer]]:
        return [layer for layer in self.layers if isinstance(layer, SYNAPTIC)]

    @property
    def pipeline_depth(self) -> int:
        """D: one step of delay per synaptic hop in pipelined time (Lava, Loihi)."""
        return len(self.synaptic_layers)

    @property
    def bias_steps(self) -> int:
        """K: the input window (and every layer's bias window) in steps."""
        return self.synaptic_layers[0].neurons.bias_steps

    @property
    def num_classes(self) -> int:
        return int(np.prod(self.shapes()[-1]))

    def shapes(self) -> List[Tuple[int, ...]]:
        """The output shape of every layer (the input layer's is its own shape)."""
        return layer_shapes(self.layers)


def pool_output_shape(shape: Tuple[int, ...], kernel, stride, padding, dilation=(1, 1)) -> Tuple[int, int]:
    """(Ho, Wo) of a conv or pool over (C, H, W), torch's floor mode."""
    _, h, w = shape
    out_h = (h + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    out_w = (w + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    return out_h, out_w


def layer_shapes(layers: List[Layer]) -> List[Tuple[int, ...]]:
    """Propagate shapes and check that each layer fits the one before; ValueError('layer i: ...') if not."""
    shapes = [tuple(layers[0].shape)]
    for i, layer in enumerate(layers[1:], start=1):
        prev = shapes[-1]
        if isinstance(layer, DenseLayer):
            if len(prev) != 1 or layer.weight.shape != (layer.shape[0], prev[0]):
                raise ValueError(f"layer {i}: dense weight {layer.weight.shape} does not map {prev} to {layer.shape}")
            if layer.bias.shape != (layer.shape[0],):
                raise ValueError(f"layer {i}: bias shape {layer.bias.shape}, expected ({layer.shape[0]},)")
            shapes.append(tuple(layer.shape))
        elif isinstance(layer, ConvLayer):
            if len(prev) != 3:
                raise ValueError(f"layer {i}: conv needs a (C, H, W) input, got {prev}")
            cout, cin_g, kh, kw = layer.weight.shape
            if cin_g * layer.groups != prev[0] or cout % layer.groups:
                raise ValueError(f"layer {i}: conv weight {layer.weight.shape} with groups {layer.groups} "
                                 f"does not fit {prev[0]} input channels")
            expected = (cout,) + pool_output_shape(prev, (kh, kw), layer.stride, layer.padding, layer.dilation)
            if tuple(layer.shape) != expected or min(expected) < 1:
                raise ValueError(f"layer {i}: conv shape {tuple(layer.shape)}, but the input {prev} gives {expected}")
            if layer.bias.shape != (cout,):
                raise ValueError(f"layer {i}: bias shape {layer.bias.shape}, expected ({cout},)")
            shapes.append(expected)
        elif isinstance(layer, MaxPoolLayer):
            if len(prev) != 3:
                raise ValueError(f"layer {i}: maxpool needs a (C, H, W) input, got {prev}")
            if any(p > k // 2 for p, k in zip(layer.padding, layer.kernel_size)):
                raise ValueError(f"layer {i}: maxpool padding {layer.padding} exceeds half the kernel")
            out = pool_output_shape(prev, layer.kernel_size, layer.stride, layer.padding)
            if min(out) < 1:
                raise ValueError(f"layer {i}: maxpool kernel {layer.kernel_size} does not fit {prev}")
            shapes.append((prev[0],) + out)
        elif isinstance(layer, FlattenLayer):
            shapes.append((int(np.prod(prev)),))
        else:
            raise ValueError(f"layer {i}: an input layer may only come first")
    return shapes


# Writing ------------------------------------------------------------------------------


def _put_string(group: h5py.Group, key: str, value: str) -> None:
    group.create_dataset(key, data=np.array([value.encode("ascii")]))


def _put_ints(group: h5py.Group, key: str, value) -> None:
    group.create_dataset(key, data=np.asarray(value, dtype=np.int64))


def write_net(path: str | Path, network: Network) -> None:
    """Write net.h5 atomically (DESIGN.md section 4)."""
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        layers = f.create_group("layer")
        for i, layer in enumerate(network.layers):
            g = layers.create_group(str(i))
            if isinstance(layer, InputLayer):
                _put_string(g, "type", "input")
                _put_ints(g, "shape", layer.shape)
                g.create_dataset("inputScale", data=np.float64(layer.input_scale))
            elif isinstance(layer, SYNAPTIC):
                _put_string(g, "type", "dense" if isinstance(layer, DenseLayer) else "conv")
                _put_ints(g, "shape", layer.shape)
                _put_ints(g, "weight", layer.weight)
                _put_ints(g, "bias", layer.bias)
                if isinstance(layer, ConvLayer):
                    for key in ("stride", "padding", "dilation"):
                        _put_ints(g, key, getattr(layer, key))
                    _put_ints(g, "groups", layer.groups)
                    _put_ints(g, "kernelSize", layer.kernel_size)
                n = g.create_group("neuron")
                _put_string(n, "type", "QFFS")
                for key, value in (("vThMant", layer.neurons.threshold), ("vInit", layer.neurons.v_init),
                                   ("zMax", layer.neurons.z_max), ("biasSteps", layer.neurons.bias_steps)):
                    _put_ints(n, key, value)
            elif isinstance(layer, MaxPoolLayer):
                _put_string(g, "type", "maxpool")
                for key, value in (("kernelSize", layer.kernel_size), ("stride", layer.stride),
                                   ("padding", layer.padding)):
                    _put_ints(g, key, value)
            else:
                _put_string(g, "type", "flatten")
        meta = f.create_group("meta")
        for key, value in {"format": NET_FORMAT, "version": NET_VERSION, **network.meta}.items():
            meta.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value


# Reading (the single validator) ---------------------------------------------------------


class _Layer:
    """Reads one layer group, turning every defect into QffsFormatError naming layer and key."""

    def __init__(self, group: h5py.Group, where: str):
        self.group, self.where = group, where

    def fail(self, key: str, expected: str, got: Any = None) -> QffsFormatError:
        got_text = "" if got is None else f", got {got}"
        return QffsFormatError(f"{self.where} key '{key}': expected {expected}{got_text}")

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

    def per_channel(self, key: str, channels: int, minimum: int) -> np.ndarray:
        value = self.ints(key, minimum=minimum)
        if value.ndim > 1 or value.size not in (1, channels):
            raise self.fail(key, f"one value or one per output channel ({channels})", f"shape {value.shape}")
        return np.broadcast_to(value.reshape(-1), (channels,)).copy()

    def neurons(self, channels: int) -> Neurons:
        if "neuron" not in self.group or not isinstance(self.group.get("neuron", getlink=True), h5py.HardLink) \
                or not isinstance(self.group["neuron"], h5py.Group):
            raise self.fail("neuron", "a neuron group stored in this file")
        n = _Layer(self.group["neuron"], f"{self.where} neuron")
        kind = n.string("type")
        if kind != "QFFS":
            raise n.fail("type", "'QFFS'", repr(kind))
        threshold = n.per_channel("vThMant", channels, minimum=1)
        v_init = n.per_channel("vInit", channels, minimum=0)
        if np.any(v_init >= threshold):
            raise n.fail("vInit", "a pre-charge below the threshold")
        return Neurons(threshold, v_init, n.int("zMax", minimum=1), n.int("biasSteps", minimum=1))


def _read_layer(group: h5py.Group, index: int) -> Layer:
    reader = _Layer(group, f"layer {index}")
    kind = reader.string("type")
    reader.where = f"layer {index} ({kind})"
    if kind == "input":
        scale = reader.raw("inputScale")
        if scale.size != 1 or scale.dtype.kind not in "iuf" or not np.isfinite(scale).all() \
                or not 0 < float(scale.reshape(-1)[0]) <= 2**16:
            raise reader.fail("inputScale", "one number in (0, 65536]", repr(scale)[:80])
        shape = reader.ints("shape", ndim=1, minimum=1)
        if shape.size not in (1, 3):
            raise reader.fail("shape", "(C, H, W) or (N,)", tuple(shape))
        return InputLayer(tuple(int(s) for s in shape), float(scale.reshape(-1)[0]))
    if kind == "dense":
        weight = reader.ints("weight", ndim=2)
        return DenseLayer(tuple(int(s) for s in reader.ints("shape", size=1, minimum=1)), weight,
                          reader.ints("bias", ndim=1), reader.neurons(weight.shape[0]))
    if kind == "conv":
        weight = reader.ints("weight", ndim=4)
        conv = ConvLayer(tuple(int(s) for s in reader.ints("shape", size=3, minimum=1)), weight,
                         reader.ints("bias", ndim=1), reader.pair("stride", 1), reader.pair("padding", 0),
                         reader.pair("dilation", 1), reader.int("groups", minimum=1), reader.neurons(weight.shape[0]))
        if "kernelSize" in group and reader.pair("kernelSize", 1) != conv.kernel_size:
            raise reader.fail("kernelSize", f"the weight's kernel {conv.kernel_size}", reader.pair("kernelSize", 1))
        return conv
    if kind == "maxpool":
        return MaxPoolLayer(reader.pair("kernelSize", 1), reader.pair("stride", 1), reader.pair("padding", 0))
    if kind == "flatten":
        return FlattenLayer()
    raise reader.fail("type", "one of input, dense, conv, maxpool, flatten", repr(kind))


def _netx_neuron_types(f: h5py.File) -> List[str]:
    """The neuron types of a lava-dl netx file's layers (CUBA, ...), read without trusting the file."""
    found = set()
    layers = f.get("layer", getlink=True)
    if isinstance(layers, h5py.HardLink) and isinstance(f["layer"], h5py.Group):
        for group in f["layer"].values():
            try:
                found.add(_Layer(group["neuron"], "").string("type"))
            except (QffsFormatError, KeyError, TypeError, AttributeError):
                continue
    return sorted(found)


def _read_meta(f: h5py.File) -> Dict[str, Any]:
    if "meta" not in f:
        neuron_types = _netx_neuron_types(f)
        if neuron_types:
            raise QffsFormatError(f"this is a lava-dl netx network of {', '.join(neuron_types)} neurons, not a QFFS "
                                  "network: qffs-lava runs the net files qffs-export writes; run this one with "
                                  "lava.lib.dl.netx.hdf5.Network")
        raise QffsFormatError("group 'meta' missing: not a QFFS net file (make one with qffs-export)")
    meta = {}
    for key, value in f["meta"].attrs.items():
        if isinstance(value, (bytes, np.bytes_)):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str) and value[:1] in "[{":
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        meta[key] = value.item() if isinstance(value, np.generic) else value
    if meta.get("format") != NET_FORMAT:
        raise QffsFormatError(f"meta key 'format': expected '{NET_FORMAT}', got {meta.get('format')!r}: "
                              "not a QFFS net file (make one with qffs-export)")
    if meta.get("version") != NET_VERSION:
        raise QffsFormatError(f"meta key 'version': this qffs-lava reads version {NET_VERSION}, "
                              f"got {meta.get('version')!r}")
    return meta


def read_net(path: str | Path) -> Network:
    """Load and validate net.h5; any defect raises QffsFormatError naming the layer and key."""
    path = Path(path)
    if not path.is_file():
        raise QffsFormatError(f"net file {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except Exception as err:
        raise QffsFormatError(f"{path} is not a readable HDF5 file ({type(err).__name__})") from None
    with f:
        try:
            meta = _read_meta(f)
            layers = _read_layers(f)
        except QffsFormatError:
            raise
        except Exception as err:  # h5py's errors on a damaged file
            raise QffsFormatError(f"{path} is damaged: {type(err).__name__}: {str(err)[:200]}") from None
    return _checked(Network(layers, meta))


def _read_layers(f: h5py.File) -> List[Layer]:
    if "layer" not in f or not isinstance(f.get("layer", getlink=True), h5py.HardLink) \
            or not isinstance(f["layer"], h5py.Group):
        raise QffsFormatError("group 'layer' missing")
    count = len(f["layer"])
    names = [str(i) for i in range(count)]
    if sorted(f["layer"].keys(), key=lambda k: (len(k), k)) != names:
        raise QffsFormatError(f"group 'layer' must hold subgroups 0..{count - 1}, got {sorted(f['layer'].keys())[:20]}")
    layers = []
    for i in range(count):
        if not isinstance(f["layer"].get(str(i), getlink=True), h5py.HardLink) \
                or not isinstance(f["layer"][str(i)], h5py.Group):
            raise QffsFormatError(f"layer {i}: expected a group stored in this file")
        try:
            layers.append(_read_layer(f["layer"][str(i)], i))
        except QffsFormatError:
            raise
        except ValueError as err:
            raise QffsFormatError(f"layer {i}: {err}") from None
    return layers


def _checked(network: Network) -> Network:
    """Whole-network checks: input first, shapes fit layer to layer, one bias window, ends in neurons."""
    layers = network.layers
    if len(layers) < 2 or not isinstance(layers[0], InputLayer):
        raise QffsFormatError("layer 0 must be the input layer, followed by at least one dense or conv layer")
    if not isinstance(layers[-1], SYNAPTIC):
        raise QffsFormatError(f"layer {len(layers) - 1}: the network must end in a dense or conv layer (the output)")
    try:
        shapes = network.shapes()
    except ValueError as err:
        raise QffsFormatError(str(err)) from None
    for i, shape in enumerate(shapes):
        if int(np.prod(shape)) > MAX_NEURONS:
            raise QffsFormatError(f"layer {i}: {int(np.prod(shape))} values per sample, more than {MAX_NEURONS}")
    windows = {layer.neurons.bias_steps for layer in network.synaptic_layers}
    if len(windows) != 1:
        raise QffsFormatError(f"neuron key 'biasSteps': all layers need the same bias window, got {sorted(windows)}")
    return network


# Loihi 2 ranges -----------------------------------------------------------------------


def bias_mantissa_exponent(bias: int) -> Tuple[int, int]:
    """(mantissa, exponent) with bias == mantissa * 2^exponent, the smallest exponent that fits 13 bits.

    Raises ValueError when no exponent 0..7 represents `bias` exactly.
    """
    limit = 2 ** (BIAS_MANTISSA_BITS - 1)
    for exponent in range(BIAS_MAX_EXP + 1):
        mantissa, rest = divmod(int(bias), 2**exponent)
        if rest == 0 and -limit <= mantissa < limit:
            return mantissa, exponent
    raise ValueError(f"bias {bias} is not a {BIAS_MANTISSA_BITS}-bit mantissa times 2^0..2^{BIAS_MAX_EXP}")


def representable_bias(value: float) -> int:
    """The integer nearest `value` that Loihi 2 can hold as a per-step bias (coarser when large)."""
    limit = 2 ** (BIAS_MANTISSA_BITS - 1)
    for exponent in range(BIAS_MAX_EXP + 1):
        mantissa = math.floor(value / 2**exponent + 0.5)
        if -limit <= mantissa < limit:
            return mantissa * 2**exponent
    return math.floor(value + 0.5)  # out of range: the Loihi check reports it


def presynaptic_count_bounds(network: Network) -> List[int]:
    """For each synaptic layer, the largest spike count its inputs can reach (K * max x_int for the first)."""
    bound = network.bias_steps * math.floor(network.input.input_scale + 0.5)
    bounds = []
    for layer in network.layers[1:]:
        if isinstance(layer, SYNAPTIC):
            bounds.append(bound)
            bound = layer.neurons.z_max
    return bounds


def membrane_bounds(layer: Union[DenseLayer, ConvLayer], count_bound: int, bias_steps: int) -> Tuple[int, int]:
    """Worst-case (lowest, highest) membrane potential of a layer's neurons.

    v = vInit + W . z_prev(t) + t_b * b - th * z with 0 <= z_prev <= count_bound,
    0 <= t_b <= K and 0 <= z <= zMax, every input assumed present (conv borders too).
    """
    weight = layer.weight.reshape(layer.weight.shape[0], -1).astype(np.int64)
    bias = layer.bias.astype(np.int64)
    n = layer.neurons
    high = n.v_init + np.clip(weight, 0, None).sum(1) * count_bound + bias_steps * np.clip(bias, 0, None)
    low = n.v_init + np.clip(weight, None, 0).sum(1) * count_bound + bias_steps * np.clip(bias, None, 0)
    return int((low - n.threshold * n.z_max).min()), int(high.max())


def loihi_problems(network: Network) -> List[str]:
    """Every way the network leaves Loihi 2's ranges, one message each naming layer, quantity and limit."""
    problems = []
    bounds = presynaptic_count_bounds(network)
    synaptic = [(i, layer) for i, layer in enumerate(network.layers) if isinstance(layer, SYNAPTIC)]
    for (i, layer), count_bound in zip(synaptic, bounds):
        w = layer.weight
        if w.size and (w.min() < WEIGHT_MIN or w.max() > WEIGHT_MAX):
            problems.append(f"layer {i}: weights span [{w.min()}, {w.max()}], "
                            f"Loihi 2 holds [{WEIGHT_MIN}, {WEIGHT_MAX}]")
        if np.any(w % 2):
            odd = int(np.count_nonzero(w % 2))
            problems.append(f"layer {i}: {odd} odd weights; mixed-sign weights must be even")
        if layer.neurons.threshold.max() >= STATE_LIMIT:
            problems.append(f"layer {i}: threshold {layer.neurons.threshold.max()} is not below 2^23")
        for b in np.unique(layer.bias):
            try:
                bias_mantissa_exponent(int(b))
            except ValueError as err:
                problems.append(f"layer {i}: {err}")
                break
        low, high = membrane_bounds(layer, count_bound, network.bias_steps)
        if max(-low, high) >= STATE_LIMIT:
            problems.append(f"layer {i}: worst-case |v| {max(-low, high)} is not below 2^23 (24-bit membrane)")
    return problems
