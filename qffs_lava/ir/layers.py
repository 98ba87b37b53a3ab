"""The layer types of a QFFS network, each owning its fields, its shape rule and its net.h5 keys.

One small frozen dataclass per type (docs/format.md):

    InputLayer    x_int = floor(x * inputScale + 1/2), graded, for the first K steps
    NeuronLayer   I(t) = sum_j W_j . s_inputs[j](t) + (b in the bias window); QFFS neurons (`Neurons`), or
                  for the output a read-out that integrates without firing (`Readout`)
    MaxPoolLayer  event max pooling (Algorithm 2) of one input
    FlattenLayer  (C, H, W) -> (C*H*W,) in torch's order, of one input

A NeuronLayer's synapses are DenseSynapse or ConvSynapse objects. Backends never switch
on these types: the executor (`Network.propagate`) calls `layer.visit(visitor, ...)`,
which calls the visitor's method named after the type (`input`, `neuron` or `readout` by
the layer's neuron type, `maxpool`, `flatten`; `dense` and `conv` for synapses). The readers
for net.h5's `type` strings are the registries at the end of this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Tuple, Union

import h5py
import numpy as np

from qffs_lava.dynamics import round_half_up, window_output_size
from qffs_lava.errors import QffsFormatError
from qffs_lava.ir.hdf5 import GroupReader, put_ints, put_string

Shape = Tuple[int, ...]
#: The largest count bound and input window: 2^8 - 1, for activations of at most 8 bits.
MAX_LEVEL = 2**8 - 1


@dataclass(frozen=True)
class Neurons:
    """QFFS neurons of one layer (Algorithm 1, `dynamics.neuron_step`).

    threshold:  th per output channel (a dense neuron, or a conv channel), int64 (channels,)
    v_init:     the pre-charge th // 2 per output channel
    z_max:      the count bound 2^b - 1
    bias_steps: K, the steps the per-step bias is applied
    """

    kind: ClassVar[str] = "QFFS"
    #: Whether the neurons send spikes (the layer's output is their net count z).
    fires: ClassVar[bool] = True
    #: What the network's output is where these neurons are its output layer (reports, --json).
    output: ClassVar[str] = "spiking"
    threshold: np.ndarray
    v_init: np.ndarray
    z_max: int
    bias_steps: int

    @property
    def largest_threshold(self) -> int:
        return int(self.threshold.max())

    @property
    def channel_count(self) -> int:
        """The channels its per-channel parameters are for."""
        return len(self.threshold)

    def potential_bounds(self, low: np.ndarray, high: np.ndarray) -> Tuple[int, int]:
        """Worst-case (lowest, highest) v over the channels, given per channel the lowest and highest sum of
        currents: the pre-charge added, and up to zMax spikes' thresholds taken away."""
        low, high = low + self.v_init, high + self.v_init
        return int((low - self.threshold * self.z_max).min()), int(high.max())

    def problems(self, where: str, limit: int) -> List[str]:
        """Its parameters outside Loihi 2's ranges (the threshold below `limit`)."""
        if self.threshold.max() >= limit:
            return [f"{where}: threshold {self.threshold.max()} is not below 2^{limit.bit_length() - 1}"]
        return []

    def visit(self, visitor, index: int, layer: "NeuronLayer", sources: List[Any]) -> Any:
        return visitor.neuron(index, layer, sources)

    def __post_init__(self):
        if self.threshold.ndim != 1 or self.v_init.shape != self.threshold.shape:
            raise QffsFormatError(f"threshold and vInit must be per-channel vectors of one length, got "
                                  f"{self.threshold.shape} and {self.v_init.shape}", key="vThMant")
        if self.threshold.min() < 1:
            raise QffsFormatError(f"thresholds must be >= 1, got {self.threshold.min()}", key="vThMant")
        if self.v_init.min() < 0 or np.any(self.v_init >= self.threshold):
            raise QffsFormatError("vInit must be in 0..threshold-1", key="vInit")
        for name, key in (("z_max", "zMax"), ("bias_steps", "biasSteps")):
            if not 1 <= getattr(self, name) <= MAX_LEVEL:
                raise QffsFormatError(f"{key} must be in 1..{MAX_LEVEL} (activations of at most 8 bits), got "
                                      f"{getattr(self, name)}", key=key)

    def write(self, group: h5py.Group) -> None:
        neuron = group.create_group("neuron")
        put_string(neuron, "type", self.kind)
        for key, value in (("vThMant", self.threshold), ("vInit", self.v_init), ("zMax", self.z_max),
                           ("biasSteps", self.bias_steps)):
            put_ints(neuron, key, value)

    @classmethod
    def read(cls, reader: GroupReader, channels: int) -> "Neurons":
        threshold = reader.per_channel("vThMant", channels, minimum=1)
        v_init = reader.per_channel("vInit", channels, minimum=0)
        if np.any(v_init >= threshold):
            raise reader.fail("vInit", "a pre-charge below the threshold")
        return cls(threshold, v_init, reader.int("zMax", minimum=1), reader.int("biasSteps", minimum=1))


@dataclass(frozen=True)
class Readout:
    """The output read out from its potential (the paper's Figure 7, `dynamics.readout_step`): it integrates its
    current, never fires and never resets, so v(t) = sum of I up to t, and the prediction is argmax v. Only the
    output layer may be one; it has no threshold, pre-charge or count bound.

    bias_steps: K, the steps the per-step bias is applied, as for QFFS neurons.
    """

    kind: ClassVar[str] = "READOUT"
    fires: ClassVar[bool] = False
    output: ClassVar[str] = "read-out"
    #: A read-out sends no spikes: its count stays 0.
    z_max: ClassVar[int] = 0
    largest_threshold: ClassVar[int] = 0
    channel_count: ClassVar[Optional[int]] = None  # no per-channel parameters
    bias_steps: int

    def __post_init__(self):
        if not 1 <= self.bias_steps <= MAX_LEVEL:
            raise QffsFormatError(f"biasSteps must be in 1..{MAX_LEVEL}, got {self.bias_steps}", key="biasSteps")

    def potential_bounds(self, low: np.ndarray, high: np.ndarray) -> Tuple[int, int]:
        """Worst-case (lowest, highest) v: the sums of currents themselves (no pre-charge, no spikes)."""
        return int(low.min()), int(high.max())

    def problems(self, where: str, limit: int) -> List[str]:
        return []

    def visit(self, visitor, index: int, layer: "NeuronLayer", sources: List[Any]) -> Any:
        return visitor.readout(index, layer, sources)

    def write(self, group: h5py.Group) -> None:
        neuron = group.create_group("neuron")
        put_string(neuron, "type", self.kind)
        put_ints(neuron, "biasSteps", self.bias_steps)

    @classmethod
    def read(cls, reader: GroupReader, channels: int) -> "Readout":
        return cls(reader.int("biasSteps", minimum=1))


def read_neurons(layer: GroupReader, channels: int, version: int) -> Union[Neurons, Readout]:
    """A layer's `neuron` group, read by the class its `type` names (`NEURON_TYPES`); a type newer than the
    file's version is refused."""
    reader = layer.child("neuron", f"{layer.where} neuron")
    kind = reader.string("type")
    known = [name for name, since in NEURON_SINCE.items() if since <= version]
    if kind not in known:
        raise reader.fail("type", " or ".join(repr(k) for k in known) + f" (a version {version} file)", repr(kind))
    return NEURON_TYPES[kind].read(reader, channels)


# Synapses -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DenseSynapse:
    """I = W . s over a flat input: weight (N, M) maps M values to N neurons."""

    kind: ClassVar[str] = "dense"
    weight: np.ndarray

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    def rows(self) -> np.ndarray:
        """The weights per output channel, (channels, fan-in)."""
        return self.weight

    def output_shape(self, source: Shape) -> Shape:
        if len(source) != 1 or self.weight.shape[1] != source[0]:
            raise QffsFormatError(f"dense weight {self.weight.shape} does not map the input {source} (a dense "
                                  f"synapse reads a flat input of {self.weight.shape[1]} values)", key="weight")
        return (self.weight.shape[0],)

    def describe(self) -> str:
        return "dense"

    def write(self, group: h5py.Group) -> None:
        put_ints(group, "weight", self.weight)

    @classmethod
    def read(cls, reader: GroupReader) -> "DenseSynapse":
        return cls(reader.ints("weight", ndim=2))

    def visit(self, visitor, *args) -> Any:
        return visitor.dense(self, *args)


@dataclass(frozen=True)
class ConvSynapse:
    """I = conv2d(s, W) with torch's semantics: weight (Cout, Cin/groups, kH, kW), (H, W) pairs."""

    kind: ClassVar[str] = "conv"
    weight: np.ndarray
    stride: Tuple[int, int] = (1, 1)
    padding: Tuple[int, int] = (0, 0)
    dilation: Tuple[int, int] = (1, 1)
    groups: int = 1

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def kernel_size(self) -> Tuple[int, int]:
        return tuple(self.weight.shape[2:])

    def rows(self) -> np.ndarray:
        return self.weight.reshape(self.weight.shape[0], -1)

    def output_shape(self, source: Shape) -> Shape:
        if len(source) != 3:
            raise QffsFormatError(f"conv needs a (C, H, W) input, got {source}", key="weight")
        cout, cin_g = self.weight.shape[:2]
        if cin_g * self.groups != source[0] or cout % self.groups:
            raise QffsFormatError(f"conv weight {self.weight.shape} with groups {self.groups} does not fit "
                                  f"{source[0]} input channels", key="weight")
        out = (cout,) + tuple(window_output_size(n, k, s, p, d) for n, k, s, p, d in zip(
            source[1:], self.kernel_size, self.stride, self.padding, self.dilation))
        if min(out) < 1:
            raise QffsFormatError(f"conv kernel {self.kernel_size} does not fit the input {source}", key="weight")
        return out

    def describe(self) -> str:
        text = f"conv {self.kernel_size[0]}x{self.kernel_size[1]}"
        if self.stride != (1, 1):
            text += f"/{self.stride[0]}"
        return text + (f" g{self.groups}" if self.groups > 1 else "")

    def write(self, group: h5py.Group) -> None:
        put_ints(group, "weight", self.weight)
        for key in ("stride", "padding", "dilation"):
            put_ints(group, key, getattr(self, key))
        put_ints(group, "groups", self.groups)
        put_ints(group, "kernelSize", self.kernel_size)

    @classmethod
    def read(cls, reader: GroupReader) -> "ConvSynapse":
        synapse = cls(reader.ints("weight", ndim=4), reader.pair("stride", 1), reader.pair("padding", 0),
                      reader.pair("dilation", 1), reader.int("groups", minimum=1))
        if reader.has("kernelSize") and reader.pair("kernelSize", 1) != synapse.kernel_size:
            raise reader.fail("kernelSize", f"the weight's kernel {synapse.kernel_size}", reader.pair("kernelSize", 1))
        return synapse

    def visit(self, visitor, *args) -> Any:
        return visitor.conv(self, *args)


Synapse = Union[DenseSynapse, ConvSynapse]


# Layers ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputLayer:
    """Input: x_int = floor(x * input_scale + 1/2) for dataset values x in [0, 1], sent graded for K steps."""

    kind: ClassVar[str] = "input"
    shape: Shape
    input_scale: float
    inputs: Tuple[int, ...] = ()

    def __post_init__(self):
        if not (math.isfinite(self.input_scale) and 0 < self.input_scale <= 2**16):
            raise QffsFormatError(f"inputScale must be a number in (0, 65536], got {self.input_scale}",
                                  key="inputScale")

    def describe(self) -> str:
        return "input"

    def encode(self, x):
        """x_int = floor(x * inputScale + 1/2) for dataset values x (a float numpy array or torch tensor),
        as whole numbers of x's type."""
        return round_half_up(x * self.input_scale)

    def output_shape(self, sources: List[Shape]) -> Shape:
        return tuple(self.shape)

    def write(self, group: h5py.Group) -> None:
        put_string(group, "type", self.kind)
        put_ints(group, "shape", self.shape)
        group.create_dataset("inputScale", data=np.float64(self.input_scale))

    @classmethod
    def read(cls, reader: GroupReader, kind: str, inputs: Optional[Tuple[int, ...]], version: int) -> "InputLayer":
        if inputs:
            raise reader.fail("inputs", "none: the input layer reads no layer", list(inputs))
        scale = reader.raw("inputScale")
        if scale.size != 1 or scale.dtype.kind not in "iuf" or not np.isfinite(scale).all() \
                or not 0 < float(scale.reshape(-1)[0]) <= 2**16:
            raise reader.fail("inputScale", "one number in (0, 65536]", repr(scale)[:80])
        return cls(reader.shape("shape", (1, 3)), float(scale.reshape(-1)[0]))

    def visit(self, visitor, index: int, sources: List[Any]) -> Any:
        return visitor.input(index, self)


@dataclass(frozen=True)
class NeuronLayer:
    """QFFS neurons summing the currents of their synapses (docs/format.md, "Several synapses"):

        I(t) = sum_j W_j . s_{inputs[j]}(t) + (b if t is in the bias window)

    Synapse 0 is stored in the layer's own keys (netx's dense/conv layout), synapse j >= 1
    in `synapse/{j}`. Every synapse yields the layer's shape; `bias` (channels,) is per step.
    """

    shape: Shape
    synapses: Tuple[Synapse, ...]
    bias: np.ndarray
    neurons: Union[Neurons, Readout]
    inputs: Optional[Tuple[int, ...]] = None  # one source layer per synapse; None: the layer before

    @property
    def kind(self) -> str:
        """net.h5's type: synapse 0's ('dense' or 'conv')."""
        return self.synapses[0].kind

    @property
    def channels(self) -> int:
        return self.shape[0]

    def describe(self) -> str:
        return " + ".join(synapse.describe() for synapse in self.synapses) + ("" if self.neurons.fires else " read-out")

    def output_shape(self, sources: List[Shape]) -> Shape:
        for j, (synapse, source) in enumerate(zip(self.synapses, sources)):
            out = synapse.output_shape(source)
            if out != tuple(self.shape):
                raise QffsFormatError(f"synapse {j} ({synapse.kind}) maps its input {source} to {out}, "
                                      f"but the layer's shape is {tuple(self.shape)}", key="shape")
        if self.bias.shape != (self.channels,):
            raise QffsFormatError(f"bias shape {self.bias.shape}, expected ({self.channels},)", key="bias")
        if self.neurons.channel_count not in (None, self.channels):
            raise QffsFormatError(f"{self.neurons.channel_count} thresholds for {self.channels} channels",
                                  key="vThMant")
        return tuple(self.shape)

    def write(self, group: h5py.Group) -> None:
        put_string(group, "type", self.kind)
        put_ints(group, "shape", self.shape)
        self.synapses[0].write(group)
        put_ints(group, "bias", self.bias)
        self.neurons.write(group)
        if len(self.synapses) > 1:
            extra = group.create_group("synapse")
            for j, synapse in enumerate(self.synapses[1:], start=1):
                g = extra.create_group(str(j))
                put_string(g, "type", synapse.kind)
                synapse.write(g)

    @classmethod
    def read(cls, reader: GroupReader, kind: str, inputs: Optional[Tuple[int, ...]], version: int) -> "NeuronLayer":
        synapses = [SYNAPSE_TYPES[kind].read(reader)]
        if reader.has("synapse"):
            extra = reader.child("synapse", f"{reader.where} synapse")
            names = sorted(extra.group.keys(), key=lambda k: (len(k), k))
            if names != [str(j) for j in range(1, len(names) + 1)]:
                raise reader.fail("synapse", f"subgroups 1..{len(names)}", names[:20])
            for name in names:
                synapse = extra.child(name, f"{reader.where} synapse {name}")
                synapse_kind = synapse.string("type")
                if synapse_kind not in SYNAPSE_TYPES:
                    raise synapse.fail("type", f"one of {', '.join(SYNAPSE_TYPES)}", repr(synapse_kind))
                synapses.append(SYNAPSE_TYPES[synapse_kind].read(synapse))
        shape = reader.shape("shape", (1,) if kind == "dense" else (3,))
        return cls(shape, tuple(synapses), reader.ints("bias", ndim=1), read_neurons(reader, shape[0], version),
                   inputs)

    def visit(self, visitor, index: int, sources: List[Any]) -> Any:
        return self.neurons.visit(visitor, index, self, sources)


@dataclass(frozen=True)
class MaxPoolLayer:
    """Event max pooling (Algorithm 2) over (kH, kW) windows of one input, torch's floor mode."""

    kind: ClassVar[str] = "maxpool"
    kernel_size: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int] = (0, 0)
    inputs: Optional[Tuple[int, ...]] = None

    def describe(self) -> str:
        return f"maxpool {self.kernel_size[0]}x{self.kernel_size[1]}"

    def output_shape(self, sources: List[Shape]) -> Shape:
        (source,) = sources
        if len(source) != 3:
            raise QffsFormatError(f"maxpool needs a (C, H, W) input, got {source}", key="inputs")
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size)):
            raise QffsFormatError(f"maxpool padding {self.padding} exceeds half the kernel {self.kernel_size}",
                                  key="padding")
        out = tuple(window_output_size(n, k, s, p) for n, k, s, p in zip(
            source[1:], self.kernel_size, self.stride, self.padding))
        if min(out) < 1:
            raise QffsFormatError(f"maxpool kernel {self.kernel_size} does not fit the input {source}",
                                  key="kernelSize")
        return (source[0],) + out

    def write(self, group: h5py.Group) -> None:
        put_string(group, "type", self.kind)
        for key in ("kernelSize", "stride", "padding"):
            put_ints(group, key, getattr(self, {"kernelSize": "kernel_size"}.get(key, key)))

    @classmethod
    def read(cls, reader: GroupReader, kind: str, inputs: Optional[Tuple[int, ...]], version: int) -> "MaxPoolLayer":
        return cls(reader.pair("kernelSize", 1), reader.pair("stride", 1), reader.pair("padding", 0), inputs)

    def visit(self, visitor, index: int, sources: List[Any]) -> Any:
        return visitor.maxpool(index, self, sources[0])


@dataclass(frozen=True)
class FlattenLayer:
    """(C, H, W) -> (C*H*W,) in torch's C, H, W order, of one input."""

    kind: ClassVar[str] = "flatten"
    inputs: Optional[Tuple[int, ...]] = None

    def describe(self) -> str:
        return "flatten"

    def output_shape(self, sources: List[Shape]) -> Shape:
        (source,) = sources
        return (int(np.prod(source)),)

    def write(self, group: h5py.Group) -> None:
        put_string(group, "type", self.kind)

    @classmethod
    def read(cls, reader: GroupReader, kind: str, inputs: Optional[Tuple[int, ...]], version: int) -> "FlattenLayer":
        return cls(inputs)

    def visit(self, visitor, index: int, sources: List[Any]) -> Any:
        return visitor.flatten(index, self, sources[0])


Layer = Union[InputLayer, NeuronLayer, MaxPoolLayer, FlattenLayer]

#: net.h5's `type` strings and the classes that read them.
LAYER_TYPES: Dict[str, type] = {"input": InputLayer, "dense": NeuronLayer, "conv": NeuronLayer,
                                "maxpool": MaxPoolLayer, "flatten": FlattenLayer}
SYNAPSE_TYPES: Dict[str, type] = {"dense": DenseSynapse, "conv": ConvSynapse}
#: The `neuron` group's `type` strings, the classes that read them, and the format version each came in.
NEURON_TYPES: Dict[str, type] = {"QFFS": Neurons, "READOUT": Readout}
NEURON_SINCE: Dict[str, int] = {"QFFS": 1, "READOUT": 3}
