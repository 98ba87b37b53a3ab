"""Quantized ANN (model file) -> integer QFFS network: the paper's Quant-ANN-to-SNN conversion, for graphs.

The export rule (docs/format.md): every `act` becomes a neuron layer whose current is a
sum of affine paths from earlier spiking outputs (an act, a maxpool, a flatten, or the
input), each

    path = [avgpool | global_avgpool] [flatten] (conv | linear) [batchnorm],  or the identity,

and paths meet only at `add`. A maxpool or flatten of a spiking output is a layer of its
own. Anything else is refused with an error naming the node.

Integers. One count of a source stands for `unit` in the ANN: the LSQ step s of an act
(and of a maxpool or flatten of it), 1 / (K inputScale) for the input (x_int for K
steps). For an act with step s and paths p (folded weights W_p, biases B_p),

    z = clip(floor((sum_p (W_p unit_p) . z_p + B + s/2) / s), 0, 2^b - 1),   B = sum_p B_p.

Scaling one output channel's numerator and denominator by a common lambda changes
nothing, so per channel we pick lambda = 2 mu to fill Loihi 2's 8-bit mixed-sign weight
range across all of the layer's synapses, and round:

    weight_p = 2 round(mu A_p),  A_p = W_p unit_p,  mu = min(127 / max_p max A_p, 128 / max_p max -A_p)
    threshold = round(lambda s),  bias per step = lambda B / K  (13-bit mantissa * 2^e)
    vInit = threshold // 2,  zMax = 2^b - 1,  biasSteps = K

An identity path is a diagonal synapse (a 1x1 conv with groups = C, or a diagonal
dense) of weight 2 round(mu unit). BatchNorm folds into the conv or linear before it,
the input normalization into every synapse from the input, and average pooling
(kernel == stride) into the synapse after it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from qffs_lava.ann.models import INPUT, Arch, check_arch, pair
from qffs_lava.errors import QffsError
from qffs_lava.ir.layers import (
    ConvSynapse,
    DenseSynapse,
    FlattenLayer,
    InputLayer,
    Layer,
    MaxPoolLayer,
    NeuronLayer,
    Neurons,
)
from qffs_lava.ir.loihi import representable_bias
from qffs_lava.ir.network import Network

SYNAPTIC_OPS = ("conv", "linear")
POOL_OPS = ("avgpool", "global_avgpool")


@dataclass(frozen=True)
class Path:
    """One affine path into an act: source -> [pool] [flatten] conv|linear [batchnorm]; the identity if no synapse.

    flat: the synapse is dense over the flattened (C, H, W) source (a flatten layer is made for it).
    """

    source: str
    pool: Optional[str] = None
    synapse: Optional[str] = None
    batchnorm: Optional[str] = None
    flat: bool = False


@dataclass(frozen=True)
class Planned:
    """One SNN layer in model terms: the node it comes from, the spiking outputs it reads, and either
    its paths (a neuron layer, whose integers need the weights) or the layer itself (input, maxpool, flatten)."""

    name: str
    sources: Tuple[str, ...] = ()
    paths: Tuple[Path, ...] = ()
    layer: Optional[Layer] = None


class _Planner:
    """Walks an architecture's nodes in order and maps them to SNN layers by the export rule."""

    def __init__(self, arch: Arch, input_scale: float):
        self.shapes = check_arch(arch)
        self.nodes = {node["name"]: node for node in arch["nodes"]}
        self.spiking = {INPUT}
        self.layers: List[Planned] = [Planned(INPUT, layer=InputLayer(tuple(arch["input_shape"]),
                                                                      float(input_scale)))]
        self.flattened: Dict[str, str] = {}  # spiking source -> the flatten layer that reads it
        for node in arch["nodes"]:
            name, op, inputs = node["name"], node["op"], node["inputs"]
            if op == "act":
                self._act(name, inputs[0])
            elif op == "maxpool":
                self._require_spiking(name, inputs[0], "QFFS max-pools spike counts: put the maxpool after an act")
                layer = MaxPoolLayer(pair(node["kernel_size"]), pair(node["stride"]), pair(node["padding"]))
                self._add(Planned(name, (inputs[0],), layer=layer))
            elif op == "flatten" and inputs[0] in self.spiking:
                self._add(Planned(name, (inputs[0],), layer=FlattenLayer()))
                self.flattened.setdefault(inputs[0], name)
            # every other node is part of a path, checked by the act that reads it

    def _add(self, layer: Planned) -> None:
        self.layers.append(layer)
        self.spiking.add(layer.name)

    def _describe(self, name: str) -> str:
        return "the input" if name == INPUT else f"{self.nodes[name]['op']} {name!r}"

    def _require_spiking(self, reader: str, name: str, advice: str) -> None:
        if name not in self.spiking:
            raise QffsError(f"{self._describe(reader)} reads {self._describe(name)}, which is not a spiking output "
                            f"(an act, a maxpool, a flatten or the input): {advice}")

    def _terms(self, name: str) -> List[str]:
        node = self.nodes.get(name)
        if node is not None and node["op"] == "add" and name not in self.spiking:
            return [term for source in node["inputs"] for term in self._terms(source)]
        return [name]

    def _path(self, act: str, name: str) -> Path:
        if name in self.spiking:
            return Path(name)
        rule = ("a path into an act is [avgpool | global_avgpool] [flatten] conv|linear [batchnorm] from an act, "
                "maxpool, flatten or the input, or the identity; paths meet only at add")
        node, batchnorm = self.nodes[name], None
        if node["op"] == "batchnorm":
            batchnorm, name = name, node["inputs"][0]
            node = self.nodes.get(name)
        if node is None or node["op"] not in SYNAPTIC_OPS:
            where = batchnorm or name
            raise QffsError(f"{self._describe(where)} (into act {act!r}) cannot be converted: {rule}")
        synapse, source = name, node["inputs"][0]
        pool = None
        if source not in self.spiking and self.nodes[source]["op"] == "flatten":
            source = self.nodes[source]["inputs"][0]
        if source not in self.spiking and self.nodes[source]["op"] in POOL_OPS:
            pool, source = source, self.nodes[source]["inputs"][0]
        if source not in self.spiking:
            raise QffsError(f"{self._describe(source)} (on the path of {synapse!r} into act {act!r}) cannot be "
                            f"converted: {rule}")
        flat = node["op"] == "linear" and len(self.shapes[source]) == 3
        return Path(source, pool, synapse, batchnorm, flat)

    def _act(self, name: str, source: str) -> None:
        paths = tuple(self._path(name, term) for term in self._terms(source))
        for path in paths:
            if path.flat and path.source not in self.flattened:
                flatten = f"{path.source}_flat"
                self._add(Planned(flatten, (path.source,), layer=FlattenLayer()))
                self.flattened[path.source] = flatten
        self._add(Planned(name, tuple(self.flattened[p.source] if p.flat else p.source for p in paths), paths))


def plan_layers(arch: Arch, input_scale: float = 1.0) -> List[Planned]:
    """The SNN layers of an architecture in model terms; QffsError naming the node it cannot convert."""
    try:
        return _Planner(arch, input_scale).layers
    except ValueError as err:
        raise QffsError(str(err)) from None


# Folding -------------------------------------------------------------------------------------------


def fold_batchnorm(weight: np.ndarray, bias: np.ndarray, bn: nn.Module) -> Tuple[np.ndarray, np.ndarray]:
    """W' = W * g, B' = (B - mean) * g + beta with g = gamma / sqrt(var + eps), per output channel."""
    gain = (bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)).numpy()
    shift = bn.bias.detach().double().numpy() - bn.running_mean.double().numpy() * gain
    return weight * gain.reshape(-1, *([1] * (weight.ndim - 1))), bias * gain + shift


def fold_avgpool(weight: np.ndarray, kernel: Tuple[int, int], flat_shape: Optional[Tuple[int, int, int]]) -> np.ndarray:
    """Weights of the next layer acting on the unpooled map: each tap spread over its kH x kW block / (kH kW).

    A conv weight (O, I, kh, kw) becomes (O, I, kH kh, kW kw) (stride and padding times the kernel);
    a dense weight over a flattened pooled map (C, Hp, Wp) becomes one over (C, kH Hp, kW Wp).
    """
    if flat_shape is not None:
        weight = weight.reshape(weight.shape[0], *flat_shape)
    spread = np.repeat(np.repeat(weight, kernel[0], axis=-2), kernel[1], axis=-1) / (kernel[0] * kernel[1])
    return spread.reshape(weight.shape[0], -1) if flat_shape is not None else spread


def fold_input_normalization(weight: np.ndarray, bias: np.ndarray, mean, std, padded: bool):
    """A synapse on raw x instead of (x - mean) / std: W' = W / std, B' = B - W' . mean (per channel)."""
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    if np.any(mean != 0) and padded:
        raise QffsError("a non-zero input mean cannot be folded exactly into a zero-padded conv on the input")
    channels = len(std)
    if weight.ndim == 4:
        w = weight / std.reshape(1, -1, 1, 1)
        return w, bias - (w * mean.reshape(1, -1, 1, 1)).sum(axis=(1, 2, 3))
    w = weight.reshape(weight.shape[0], channels, -1) / std.reshape(1, -1, 1)
    return w.reshape(weight.shape), bias - (w * mean.reshape(1, -1, 1)).sum(axis=(1, 2))


@dataclass
class RealSynapse:
    """A path's synapse in float64, everything folded: weight (conv (O, I, kh, kw) or dense (O, M)) and bias."""

    weight: np.ndarray
    bias: np.ndarray
    stride: Tuple[int, int] = (1, 1)
    padding: Tuple[int, int] = (0, 0)
    groups: int = 1
    identity: bool = False


class _Converter:
    def __init__(self, content: Dict[str, Any], model: nn.Module):
        self.content, self.model = content, model
        self.arch = content["arch"]
        self.nodes = {node["name"]: node for node in self.arch["nodes"]}
        self.shapes = check_arch(self.arch)
        bits = content["bits"]["layers"]
        self.bias_steps = 2 ** max(bits[:-1], default=bits[-1]) - 1
        self.input_scale = float(content["input_levels"])
        self.origin: Dict[str, str] = {}  # spiking output -> the act (or input) whose counts it carries

    def unit(self, source: str) -> float:
        """What one count of a spiking output stands for in the ANN."""
        origin = self.origin[source]
        if origin == INPUT:
            return 1.0 / (self.bias_steps * self.input_scale)
        quantizer = getattr(self.model, origin).quantizer
        return float(quantizer.step.detach())

    def real(self, path: Path, out_shape: Tuple[int, ...]) -> RealSynapse:
        if path.synapse is None:
            channels = out_shape[0]
            weight = np.ones((channels, 1, 1, 1)) if len(out_shape) == 3 else np.eye(channels)
            return RealSynapse(weight, np.zeros(channels), groups=channels if len(out_shape) == 3 else 1,
                               identity=True)
        node, module = self.nodes[path.synapse], getattr(self.model, path.synapse)
        weight = module.effective_weight().detach().double().numpy()
        bias = module.bias.detach().double().numpy()
        stride, padding = pair(node.get("stride", 1)), pair(node.get("padding", 0))
        if path.pool is not None:
            weight, stride, padding = self._fold_pool(path, node, weight, stride, padding)
        if path.batchnorm is not None:
            weight, bias = fold_batchnorm(weight, bias, getattr(self.model, path.batchnorm))
        if self.origin[path.source] == INPUT:
            norm = self.content["input_norm"]
            weight, bias = fold_input_normalization(weight, bias, norm["mean"], norm["std"], any(padding))
        return RealSynapse(weight, bias, stride, padding, node.get("groups", 1))

    def _fold_pool(self, path: Path, node, weight, stride, padding):
        pool = self.nodes[path.pool]
        source_shape = self.shapes[path.source]
        if pool["op"] == "global_avgpool":
            kernel = tuple(source_shape[1:])
        else:
            kernel = pair(pool["kernel_size"])
            if kernel != pair(pool["stride"]):
                raise QffsError(f"avgpool {path.pool!r}: only average pooling with kernel == stride can be folded")
            if source_shape[1] % kernel[0] or source_shape[2] % kernel[1]:
                raise QffsError(f"avgpool {path.pool!r}: kernel {kernel} does not tile the "
                                f"{source_shape[1]}x{source_shape[2]} map")
        if node["op"] == "conv":
            return (fold_avgpool(weight, kernel, None), (stride[0] * kernel[0], stride[1] * kernel[1]),
                    (padding[0] * kernel[0], padding[1] * kernel[1]))
        pooled = (source_shape[0], source_shape[1] // kernel[0], source_shape[2] // kernel[1])
        return fold_avgpool(weight, kernel, pooled), stride, padding

    def neuron_layer(self, planned: Planned, inputs: Tuple[int, ...]) -> NeuronLayer:
        act = getattr(self.model, planned.name)
        quantizer = act.quantizer
        if not bool(quantizer.initialized):
            raise QffsError(f"act {planned.name!r} was never quantization-trained (run qffs-train)")
        shape = self.shapes[planned.name]
        reals = [self.real(path, shape) for path in planned.paths]
        scaled = [(r.weight * self.unit(p.source)).reshape(r.weight.shape[0], -1)
                  for r, p in zip(reals, planned.paths)]
        top = np.max([a.max(axis=1, initial=0.0) for a in scaled], axis=0)
        bottom = np.max([-a.min(axis=1, initial=0.0) for a in scaled], axis=0)
        with np.errstate(divide="ignore"):
            mu = np.minimum(np.where(top > 0, 127 / top, np.inf), np.where(bottom > 0, 128 / bottom, np.inf))
        mu = np.where(np.isfinite(mu), mu, 1.0)  # an all-zero channel: any scale
        lam = 2 * mu
        synapses = []
        for real, a in zip(reals, scaled):
            weight = 2 * np.clip(np.floor(mu[:, None] * a + 0.5), -128, 127).astype(np.int64)
            weight = weight.reshape(real.weight.shape)
            if real.weight.ndim == 4:
                synapses.append(ConvSynapse(weight, real.stride, real.padding, (1, 1), int(real.groups)))
            else:
                synapses.append(DenseSynapse(weight))
        step = float(quantizer.step.detach())
        threshold = np.maximum(1, np.floor(lam * step + 0.5)).astype(np.int64)
        bias = sum(r.bias for r in reals)
        bias_int = np.array([representable_bias(v) for v in lam * bias / self.bias_steps], dtype=np.int64)
        neurons = Neurons(threshold=threshold, v_init=threshold // 2, z_max=2**act.bits - 1,
                          bias_steps=self.bias_steps)
        return NeuronLayer(tuple(shape), tuple(synapses), bias_int, neurons, inputs)

    def convert(self) -> Network:
        plan = plan_layers(self.arch, self.input_scale)
        index: Dict[str, int] = {}
        layers: List[Layer] = []
        for planned in plan:
            inputs = tuple(index[s] for s in planned.sources)
            if planned.paths:
                self.origin[planned.name] = planned.name
                layers.append(self.neuron_layer(planned, inputs))
            else:
                self.origin[planned.name] = self.origin[planned.sources[0]] if planned.sources else INPUT
                layers.append(dataclasses.replace(planned.layer, inputs=inputs))
            index[planned.name] = len(layers) - 1
        bits = self.content["bits"]["layers"]
        return Network(layers, {
            "dataset": self.content["dataset"],
            "num_classes": int(self.arch["num_classes"]),
            "arch": self.arch["name"],
            "bits": list(bits),
            "K": self.bias_steps,
            "input_normalization": self.content["input_norm"],
            "layer_names": [planned.name for planned in plan],
        })


def convert(content: Dict[str, Any], model: nn.Module) -> Network:
    """The integer QFFS network of a quantized model (from modelfile.load_model_file)."""
    return _Converter(content, model).convert()
