"""Quantized ANNs as graphs of plain-data nodes, and the torch modules that run them.

An architecture is a dict `{"name", "input_shape", "num_classes", "nodes"}`. Each node is
a dict with a `name` (a module name: letters, digits, '_'), an `op`, its `inputs` (names
of earlier nodes, or "input" for the network's input) and the op's parameters:

    conv            {in_channels, out_channels, kernel_size, stride, padding, groups}  (bias always)
    linear          {in_features, out_features}                                        (bias always)
    batchnorm       {num_features}, optional eps (default 1e-5)
    act             {bits}       LSQ-quantized ReLU: levels 0 .. 2^bits - 1 (one call site, one quantizer);
                                 the output act may have bits "float": full precision, no quantizer (logits)
    maxpool         {kernel_size, stride, padding}
    avgpool         {kernel_size, stride}
    global_avgpool  {}           mean over H and W: (C, H, W) -> (C,)
    flatten         {}
    add             {}           the sum of two or more inputs of one shape

The last node is the output `act`, whose integer levels are the prediction (argmax,
lowest index on ties); with bits "float" (`FLOAT`) its logits are, and it becomes a read-out
that integrates without firing. Being plain data, the architecture is saved in the model file
next to the state dict and rebuilt with `build_model`, so loading never unpickles a
class. A version 1 architecture (a `layers` list, each layer reading the one before)
is read as the chain of nodes named "0", "1", ... (`arch_from_v1`), whose modules have
the names nn.Sequential gave them, so its state dict loads unchanged.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from qffs_lava.ann.lsq import LsqQuantizer
from qffs_lava.dynamics import window_output_size

Node = Dict[str, object]
Arch = Dict[str, object]
Shape = Tuple[int, ...]
INPUT = "input"  # the name by which nodes read the network's input
#: The bits of a full-precision output act: no quantizer, the logits themselves (the paper's Figure 7).
FLOAT = "float"


class QuantAct(nn.Module):
    """Activation: ReLU while training the float model; y = s * clip(round(x/s), 0, 2^b - 1) once quantized.

    The output layer's float form is the identity (logits); quantized it is the same LSQ clip, unless its bits
    are FLOAT: then it has no quantizer and stays the identity.
    """

    def __init__(self, bits, output: bool = False):
        super().__init__()
        self.quantizer = None if bits == FLOAT else LsqQuantizer(bits)
        self.output = output
        self.quantized = False

    @property
    def bits(self):
        """The activation bits, or FLOAT for a full-precision output."""
        return FLOAT if self.quantizer is None else self.quantizer.bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantizer is None:
            return x
        if self.quantized:
            return self.quantizer(x)
        return x if self.output else F.relu(x)


class _WeightQuantMixin:
    """Optional LSQ weight quantization (signed, per tensor) for hardware-exact export."""

    weight_quantizer: Optional[LsqQuantizer]
    quantized: bool

    def _init_weight_quant(self, weight_bits: Optional[int]) -> None:
        self.weight_quantizer = LsqQuantizer(weight_bits, signed=True, per_sample=False) if weight_bits else None
        self.quantized = False

    def effective_weight(self) -> torch.Tensor:
        if self.quantized and self.weight_quantizer is not None:
            return self.weight_quantizer(self.weight)
        return self.weight


class QuantConv2d(_WeightQuantMixin, nn.Conv2d):
    def __init__(self, *args, weight_bits: Optional[int] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_weight_quant(weight_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


class QuantLinear(_WeightQuantMixin, nn.Linear):
    def __init__(self, *args, weight_bits: Optional[int] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_weight_quant(weight_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


class Add(nn.Module):
    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        total = inputs[0]
        for x in inputs[1:]:
            total = total + x
        return total


class GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def pair(value) -> Tuple[int, int]:
    """An (H, W) pair from an int or a pair."""
    return (value, value) if isinstance(value, int) else tuple(value)


# The ops: parameters, shape rule, module ---------------------------------------------------------


def _windows(node: Node, shape: Shape) -> Shape:
    if len(shape) != 3:
        raise ValueError(f"needs a (C, H, W) input, got shape {shape}")
    out = tuple(window_output_size(n, k, s, p) for n, k, s, p in zip(
        shape[1:], pair(node["kernel_size"]), pair(node["stride"]), pair(node.get("padding", 0))))
    if min(out) < 1:
        raise ValueError(f"kernel {node['kernel_size']} does not fit the input {shape}")
    return out


def _conv_shape(node: Node, shapes: List[Shape]) -> Shape:
    (shape,) = shapes
    out = _windows(node, shape)
    if node["in_channels"] != shape[0]:
        raise ValueError(f"expects {node['in_channels']} input channels, got shape {shape}")
    if shape[0] % node["groups"] or node["out_channels"] % node["groups"]:
        raise ValueError(f"groups {node['groups']} must divide the channel counts")
    return (node["out_channels"],) + out


def _linear_shape(node: Node, shapes: List[Shape]) -> Shape:
    (shape,) = shapes
    if shape != (node["in_features"],):
        raise ValueError(f"expects ({node['in_features']},) inputs, got shape {shape}; flatten first")
    return (node["out_features"],)


def _batchnorm_shape(node: Node, shapes: List[Shape]) -> Shape:
    (shape,) = shapes
    if node["num_features"] != shape[0]:
        raise ValueError(f"over {node['num_features']} features follows shape {shape}")
    return shape


def _pool_shape(node: Node, shapes: List[Shape]) -> Shape:
    (shape,) = shapes
    return (shape[0],) + _windows(node, shape)


def _global_pool_shape(node: Node, shapes: List[Shape]) -> Shape:
    (shape,) = shapes
    if len(shape) != 3:
        raise ValueError(f"needs a (C, H, W) input, got shape {shape}")
    return (shape[0],)


def _add_shape(node: Node, shapes: List[Shape]) -> Shape:
    if len(set(shapes)) != 1:
        raise ValueError(f"adds inputs of different shapes {shapes}")
    return shapes[0]


def _flatten_shape(node: Node, shapes: List[Shape]) -> Shape:
    size = 1
    for n in shapes[0]:
        size *= n
    return (size,)


@dataclass(frozen=True)
class Op:
    """One op: its parameter keys, how many inputs it takes (0: two or more), its shape rule and module."""

    keys: Tuple[str, ...]
    arity: int
    shape: Callable[[Node, List[Shape]], Shape]
    module: Callable[[Node, Shape, Optional[int]], nn.Module]


OPS: Dict[str, Op] = {
    "conv": Op(("in_channels", "out_channels", "kernel_size", "stride", "padding", "groups"), 1, _conv_shape,
               lambda n, shape, wb: QuantConv2d(n["in_channels"], n["out_channels"], pair(n["kernel_size"]),
                                                stride=pair(n["stride"]), padding=pair(n["padding"]),
                                                groups=n["groups"], weight_bits=wb)),
    "linear": Op(("in_features", "out_features"), 1, _linear_shape,
                 lambda n, shape, wb: QuantLinear(n["in_features"], n["out_features"], weight_bits=wb)),
    "batchnorm": Op(("num_features",), 1, _batchnorm_shape,
                    lambda n, shape, wb: (nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d)(
                        n["num_features"], eps=n.get("eps", BATCHNORM_EPS))),
    "act": Op(("bits",), 1, lambda n, shapes: shapes[0], lambda n, shape, wb: QuantAct(n["bits"])),
    "maxpool": Op(("kernel_size", "stride", "padding"), 1, _pool_shape,
                  lambda n, shape, wb: nn.MaxPool2d(pair(n["kernel_size"]), pair(n["stride"]), pair(n["padding"]))),
    "avgpool": Op(("kernel_size", "stride"), 1, _pool_shape,
                  lambda n, shape, wb: nn.AvgPool2d(pair(n["kernel_size"]), pair(n["stride"]))),
    "global_avgpool": Op((), 1, _global_pool_shape, lambda n, shape, wb: GlobalAvgPool()),
    "flatten": Op((), 1, _flatten_shape, lambda n, shape, wb: nn.Flatten()),
    "add": Op((), 0, _add_shape, lambda n, shape, wb: Add()),
}
PAIR_KEYS = ("kernel_size", "stride", "padding")
BATCHNORM_EPS = 1e-5  # torch's default, for batchnorm nodes without an eps
RESERVED_NAMES = frozenset(dir(nn.Module())) | {"nodes", "output_act", "input_shape", "input_norm",
                                                "set_input_norm"}  # attributes of a GraphModel
NAME_PATTERN = re.compile(r"[A-Za-z0-9_]+")


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_param(where: str, key: str, value) -> None:
    minimum = 0 if key == "padding" else 1
    if key == "bits" and value == FLOAT:
        return
    if key in PAIR_KEYS and isinstance(value, (list, tuple)) and len(value) == 2:
        for v in value:
            _check_int(f"{where} {key}", v, minimum)
    else:
        _check_int(f"{where} {key}", value, minimum)
    if key == "bits" and value > 8:
        raise ValueError(f"{where}: bits must be in 1..8, got {value}")


def arch_from_v1(arch: Arch) -> Arch:
    """A version 1 architecture (a `layers` chain with `type`s) as nodes "0", "1", ... reading the one before."""
    layers = arch.get("layers")
    if not isinstance(layers, list):
        raise ValueError("architecture has neither nodes nor layers")
    nodes = []
    for i, spec in enumerate(layers):
        if not isinstance(spec, dict) or "type" not in spec:
            raise ValueError(f"layer {i}: expected a dict with a 'type'")
        params = {k: v for k, v in spec.items() if k != "type"}
        nodes.append({"name": str(i), "op": spec["type"], "inputs": [str(i - 1) if i else INPUT], **params})
    return {k: v for k, v in arch.items() if k != "layers"} | {"nodes": nodes}


def check_arch(arch: Arch) -> Dict[str, Shape]:
    """Validate an architecture; return the shape (without batch) of every node and of "input".

    Raises ValueError naming the node (see check_node), and for a network that does not end in
    an act over num_classes.
    """
    if not isinstance(arch, dict) or not {"name", "input_shape", "num_classes", "nodes"} <= set(arch):
        raise ValueError("architecture must be a dict with name, input_shape, num_classes, nodes")
    shape = tuple(arch["input_shape"])
    for n in shape:
        _check_int("input_shape", n, 1)
    nodes = arch["nodes"]
    if not isinstance(nodes, list) or not nodes:
        raise ValueError("architecture has no nodes")
    shapes: Dict[str, Shape] = {INPUT: shape}
    for i, node in enumerate(nodes):
        shapes[node["name"]] = check_node(i, node, shapes)
    last = nodes[-1]
    if last["op"] != "act" or shapes[last["name"]] != (arch["num_classes"],):
        raise ValueError(f"the network must end in an act over {arch['num_classes']} classes, ends with "
                         f"{last['op']} of shape {shapes[last['name']]}")
    floats = [node["name"] for node in nodes[:-1] if node["op"] == "act" and node["bits"] == FLOAT]
    if floats:
        raise ValueError(f"node {floats[0]!r} (act): bits {FLOAT!r} is for the output act only (a full-precision "
                         "output that never fires); hidden acts spike and need 1..8 bits")
    return shapes


def check_node(i: int, node: Any, shapes: Dict[str, Shape]) -> Shape:
    """The shape of node number i, whose inputs are among `shapes` (the earlier nodes' and "input").

    Raises ValueError naming the node: unknown ops, missing or bad parameters, names that are not
    module names or repeat, inputs that are not earlier nodes, shapes that do not fit.
    """
    if not isinstance(node, dict):
        raise ValueError(f"node {i}: expected a dict")
    name, op = node.get("name"), node.get("op")
    where = f"node {name!r}" if isinstance(name, str) else f"node {i}"
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name == INPUT:
        raise ValueError(f"{where}: a name of letters, digits and '_' (not 'input') is needed")
    if name in RESERVED_NAMES:
        raise ValueError(f"{where}: the name is taken by torch.nn.Module; choose another")
    if name in shapes:
        raise ValueError(f"{where}: the name is used twice")
    if op not in OPS:
        raise ValueError(f"{where}: unsupported op {op!r} (supported: {', '.join(OPS)})")
    where = f"node {name!r} ({op})"
    for key in OPS[op].keys:
        if key not in node:
            raise ValueError(f"{where}: missing key {key!r}")
        _check_param(where, key, node[key])
    eps = node.get("eps", BATCHNORM_EPS)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise ValueError(f"{where}: eps must be a number in (0, 1), got {eps!r}")
    inputs = node.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(n, str) for n in inputs):
        raise ValueError(f"{where}: 'inputs' must be a list of node names")
    unknown = [n for n in inputs if n not in shapes]
    if unknown:
        raise ValueError(f"{where}: inputs {unknown} are not earlier nodes (or 'input')")
    arity = OPS[op].arity
    if (arity and len(inputs) != arity) or (not arity and len(inputs) < 2):
        raise ValueError(f"{where}: takes {arity or 'two or more'} input(s), got {len(inputs)}")
    try:
        return OPS[op].shape(node, [shapes[n] for n in inputs])
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


class GraphModel(nn.Module):
    """The torch model of an architecture: one module per node, registered under the node's name.

    With an input normalization (`set_input_norm`), forward first computes (x - mean) / std per channel, as
    the model was trained; the exporter folds it into the synapses that read the input instead.
    """

    def __init__(self, arch: Arch, weight_bits: Optional[int] = None):
        super().__init__()
        shapes = check_arch(arch)
        self.nodes = [(node["name"], list(node["inputs"])) for node in arch["nodes"]]
        self.input_shape = tuple(arch["input_shape"])
        for node in arch["nodes"]:
            self.add_module(node["name"], OPS[node["op"]].module(node, shapes[node["name"]], weight_bits))
        self.output_act.output = True
        self.input_norm: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    def set_input_norm(self, norm: Dict[str, List[float]]) -> None:
        """Normalize inputs by norm = {"mean": [...], "std": [...]} (one per channel; all 0 and 1: not at all)."""
        if any(norm["mean"]) or any(s != 1 for s in norm["std"]):
            channel = (1, -1) + (1,) * (len(self.input_shape) - 1)
            self.input_norm = tuple(torch.tensor(norm[k], dtype=torch.float32).reshape(channel)
                                    for k in ("mean", "std"))
        else:
            self.input_norm = None

    @property
    def output_act(self) -> QuantAct:
        return getattr(self, self.nodes[-1][0])

    def forward(self, x: torch.Tensor, preactivations: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
        """The output; given a dict, also fills it with each act's input in units of its step, plus 1/2
        (the value whose floor, clipped, is its level)."""
        if self.input_norm is not None:
            mean, std = (t.to(x.device) for t in self.input_norm)
            x = (x - mean) / std
        values = {INPUT: x}
        for name, inputs in self.nodes:
            module, args = getattr(self, name), [values[n] for n in inputs]
            if preactivations is not None and isinstance(module, QuantAct) and module.quantizer is not None:
                preactivations[name] = args[0] / module.quantizer.step + 0.5
            values[name] = module(*args)
        return values[self.nodes[-1][0]]


def input_normalization(values, channels: int) -> Dict[str, List[float]]:
    """{"mean": [...], "std": [...]}, one per channel, from such a dict or from a flat list: (MEAN, STD) for every
    channel or MEAN_1..MEAN_C, STD_1..STD_C. ValueError naming what is wrong."""
    if isinstance(values, dict):
        values = list(values.get("mean", [])) + list(values.get("std", []))
    values = list(values) if isinstance(values, (list, tuple)) else []
    if len(values) == 2:
        values = [values[0]] * channels + [values[1]] * channels
    if len(values) != 2 * channels or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              and math.isfinite(v) for v in values):
        raise ValueError(f"an input normalization is MEAN,STD or {channels} means then {channels} standard "
                         f"deviations, numbers, for {channels} channel(s); got {values!r:.80}")
    if min(values[channels:]) <= 0:
        raise ValueError(f"an input normalization's standard deviations must be positive, got {values[channels:]}")
    return {"mean": [float(v) for v in values[:channels]], "std": [float(v) for v in values[channels:]]}


def build_model(arch: Arch, weight_bits: Optional[int] = None) -> GraphModel:
    """The torch model for an architecture (validated first)."""
    return GraphModel(arch, weight_bits)


def set_quantized(model: nn.Module, quantized: bool) -> None:
    """Switch every activation (and weight quantizer) between float and quantized mode."""
    for module in model.modules():
        if isinstance(module, (QuantAct, _WeightQuantMixin)):
            module.quantized = quantized


def predict(outputs: torch.Tensor) -> torch.Tensor:
    """The class: argmax over the output levels, the lowest index on ties."""
    return outputs.argmax(dim=1)
