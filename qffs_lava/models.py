"""Exportable sequential models, described as plain data.

An architecture is a dict `{"name", "input_shape", "num_classes", "layers"}` whose
layers are dicts with a `type`:

    conv       {in_channels, out_channels, kernel_size, stride, padding, groups}   (bias always)
    linear     {in_features, out_features}                                         (bias always)
    batchnorm  {num_features}            folded into the preceding conv/linear at export
    act        {bits}                    LSQ-quantized ReLU: levels 0 .. 2^bits - 1
    maxpool    {kernel_size, stride, padding}
    avgpool    {kernel_size, stride}     folded into the following synaptic layer at export
    flatten    {}

Being plain data, the architecture is saved in the model file next to the state dict
and rebuilt with `build_model`, so loading never unpickles a class. Every synaptic
layer is followed (after an optional batchnorm) by an `act`; the last `act` is the
output layer, whose integer levels are the prediction (argmax, lowest index on ties).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from qffs_lava.lsq import LsqQuantizer
from qffs_lava.netfile import pool_output_shape

LayerSpec = Dict[str, object]
Arch = Dict[str, object]

LAYER_KEYS = {
    "conv": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "groups"),
    "linear": ("in_features", "out_features"),
    "batchnorm": ("num_features",),
    "act": ("bits",),
    "maxpool": ("kernel_size", "stride", "padding"),
    "avgpool": ("kernel_size", "stride"),
    "flatten": (),
}
ARCHS = ("mlp", "lenet", "vgg11", "vgg16")


class QuantAct(nn.Module):
    """Activation: ReLU while training the float model; y = s * clip(round(x/s), 0, 2^b - 1) once quantized.

    The output layer's float form is the identity (logits); quantized it is the same LSQ clip.
    """

    def __init__(self, bits: int, output: bool = False):
        super().__init__()
        self.quantizer = LsqQuantizer(bits)
        self.output = output
        self.quantized = False

    @property
    def bits(self) -> int:
        return self.quantizer.bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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


def pair(value) -> Tuple[int, int]:
    """An (H, W) pair from an int or a pair."""
    return (value, value) if isinstance(value, int) else tuple(value)


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_pair(name: str, value, minimum: int) -> None:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        for v in value:
            _check_int(name, v, minimum)
    else:
        _check_int(name, value, minimum)


def output_shape(spec: LayerSpec, shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """The shape (without batch) after one layer; raises ValueError where they do not fit."""
    kind = spec["type"]
    if kind in ("conv", "maxpool", "avgpool"):
        if len(shape) != 3:
            raise ValueError(f"{kind} needs a (C, H, W) input, got shape {shape}")
        c = shape[0]
        out_h, out_w = pool_output_shape(shape, pair(spec["kernel_size"]), pair(spec["stride"]),
                                         pair(spec.get("padding", 0)))
        if out_h < 1 or out_w < 1:
            raise ValueError(f"{kind} kernel {spec['kernel_size']} does not fit input {shape}")
        if kind != "conv":
            return (c, out_h, out_w)
        if spec["in_channels"] != c:
            raise ValueError(f"conv expects {spec['in_channels']} input channels, got shape {shape}")
        if c % spec["groups"] or spec["out_channels"] % spec["groups"]:
            raise ValueError(f"conv groups {spec['groups']} must divide the channel counts")
        return (spec["out_channels"], out_h, out_w)
    if kind == "linear":
        if shape != (spec["in_features"],):
            raise ValueError(f"linear expects ({spec['in_features']},) inputs, got shape {shape}; flatten first")
        return (spec["out_features"],)
    if kind == "batchnorm" and spec["num_features"] != shape[0]:
        raise ValueError(f"batchnorm over {spec['num_features']} features follows shape {shape}")
    if kind == "flatten":
        size = 1
        for n in shape:
            size *= n
        return (size,)
    return shape


def check_arch(arch: Arch) -> List[Tuple[int, ...]]:
    """Validate an architecture's structure; return the shape after each layer.

    Raises ValueError naming the layer. Checks types and keys, that shapes fit, and that
    each synaptic layer is followed by an act (batchnorm and avgpool may sit between).
    """
    if not isinstance(arch, dict) or not {"name", "input_shape", "num_classes", "layers"} <= set(arch):
        raise ValueError("architecture must be a dict with name, input_shape, num_classes, layers")
    shape = tuple(arch["input_shape"])
    for n in shape:
        _check_int("input_shape", n, 1)
    layers = arch["layers"]
    if not isinstance(layers, list) or not layers:
        raise ValueError("architecture has no layers")
    shapes = []
    pending_synapse = None
    for i, spec in enumerate(layers):
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind not in LAYER_KEYS:
            raise ValueError(f"layer {i}: unsupported layer type {kind!r} (supported: {', '.join(LAYER_KEYS)})")
        for key in LAYER_KEYS[kind]:
            if key not in spec:
                raise ValueError(f"layer {i} ({kind}): missing key {key!r}")
            minimum = 0 if key == "padding" else 1
            (_check_pair if key in ("kernel_size", "stride", "padding") else _check_int)(
                f"layer {i} ({kind}) {key}", spec[key], minimum
            )
        if kind == "act" and spec["bits"] > 8:
            raise ValueError(f"layer {i} (act): bits must be in 1..8, got {spec['bits']}")
        if kind in ("conv", "linear"):
            if pending_synapse is not None:
                raise ValueError(f"layer {pending_synapse}: a synaptic layer must be followed by an act")
            pending_synapse = i
        elif kind == "act":
            pending_synapse = None
        elif kind in ("maxpool", "flatten") and pending_synapse is not None:
            raise ValueError(f"layer {i} ({kind}): put it after the act of layer {pending_synapse}")
        try:
            shape = output_shape(spec, shape)
        except ValueError as err:
            raise ValueError(f"layer {i} ({kind}): {err}") from None
        shapes.append(shape)
    if layers[-1]["type"] != "act" or shape != (arch["num_classes"],):
        raise ValueError(f"the network must end in an act over {arch['num_classes']} classes, ends with shape {shape}")
    return shapes


def build_model(arch: Arch, weight_bits: Optional[int] = None) -> nn.Sequential:
    """The torch model for an architecture (validated first); modules are indexed like the layers."""
    shapes = check_arch(arch)
    layers = arch["layers"]
    last_act = max(i for i, spec in enumerate(layers) if spec["type"] == "act")
    modules: List[nn.Module] = []
    for i, spec in enumerate(layers):
        kind = spec["type"]
        if kind == "conv":
            modules.append(
                QuantConv2d(
                    spec["in_channels"], spec["out_channels"], pair(spec["kernel_size"]),
                    stride=pair(spec["stride"]), padding=pair(spec["padding"]), groups=spec["groups"],
                    weight_bits=weight_bits,
                )
            )
        elif kind == "linear":
            modules.append(QuantLinear(spec["in_features"], spec["out_features"], weight_bits=weight_bits))
        elif kind == "batchnorm":
            bn = nn.BatchNorm2d if len(shapes[i]) == 3 else nn.BatchNorm1d
            modules.append(bn(spec["num_features"]))
        elif kind == "act":
            modules.append(QuantAct(spec["bits"], output=i == last_act))
        elif kind == "maxpool":
            modules.append(nn.MaxPool2d(pair(spec["kernel_size"]), pair(spec["stride"]), pair(spec["padding"])))
        elif kind == "avgpool":
            modules.append(nn.AvgPool2d(pair(spec["kernel_size"]), pair(spec["stride"])))
        else:
            modules.append(nn.Flatten())
    return nn.Sequential(*modules)


def set_quantized(model: nn.Module, quantized: bool) -> None:
    """Switch every activation (and weight quantizer) between float and quantized mode."""
    for module in model.modules():
        if isinstance(module, (QuantAct, _WeightQuantMixin)):
            module.quantized = quantized


def output_quantizer(model: nn.Sequential) -> LsqQuantizer:
    return [m for m in model if isinstance(m, QuantAct)][-1].quantizer


def predict(outputs: torch.Tensor) -> torch.Tensor:
    """The class: argmax over the output levels, the lowest index on ties."""
    return outputs.argmax(dim=1)


# Named architectures ------------------------------------------------------------------


def _synapse_block(spec: LayerSpec, bits: int, batchnorm: bool, features: int) -> List[LayerSpec]:
    block = [spec]
    if batchnorm:
        block.append({"type": "batchnorm", "num_features": features})
    return block + [{"type": "act", "bits": bits}]


def _conv(cin: int, cout: int, kernel: int, padding: int) -> LayerSpec:
    return {"type": "conv", "in_channels": cin, "out_channels": cout, "kernel_size": kernel,
            "stride": 1, "padding": padding, "groups": 1}


def _maxpool() -> LayerSpec:
    return {"type": "maxpool", "kernel_size": 2, "stride": 2, "padding": 0}


def _linear(n_in: int, n_out: int) -> LayerSpec:
    return {"type": "linear", "in_features": n_in, "out_features": n_out}


def _finish(name: str, input_shape: Sequence[int], num_classes: int, layers: List[LayerSpec]) -> Arch:
    arch = {"name": name, "input_shape": list(input_shape), "num_classes": num_classes, "layers": layers}
    check_arch(arch)
    return arch


def mlp(input_shape: Sequence[int], num_classes: int, act_bits: int = 2, out_bits: int = 3,
        hidden: Sequence[int] = (256, 256)) -> Arch:
    """flatten -> [linear -> batchnorm -> act] per hidden layer -> linear -> act(out_bits)."""
    layers: List[LayerSpec] = [{"type": "flatten"}]
    width = 1
    for n in input_shape:
        width *= n
    for h in hidden:
        layers += _synapse_block(_linear(width, h), act_bits, True, h)
        width = h
    layers += _synapse_block(_linear(width, num_classes), out_bits, False, num_classes)
    return _finish("mlp", input_shape, num_classes, layers)


def lenet(input_shape: Sequence[int], num_classes: int, act_bits: int = 2, out_bits: int = 3) -> Arch:
    """LeNet-style: 2 x [conv 5x5 -> batchnorm -> act -> maxpool 2] -> linear 128 -> act -> linear -> act."""
    channels, height, width = input_shape
    layers: List[LayerSpec] = []
    for cout in (16, 32):
        layers += _synapse_block(_conv(channels, cout, 5, 2), act_bits, True, cout) + [_maxpool()]
        channels, height, width = cout, height // 2, width // 2
    layers.append({"type": "flatten"})
    layers += _synapse_block(_linear(channels * height * width, 128), act_bits, True, 128)
    layers += _synapse_block(_linear(128, num_classes), out_bits, False, num_classes)
    return _finish("lenet", input_shape, num_classes, layers)


VGG_CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def vgg(name: str, input_shape: Sequence[int], num_classes: int, act_bits: int = 2, out_bits: int = 3) -> Arch:
    """VGG for 32x32 inputs: [conv 3x3 -> batchnorm -> act] blocks with maxpools -> linear -> act."""
    channels, height, width = input_shape
    layers: List[LayerSpec] = []
    for item in VGG_CONFIGS[name]:
        if item == "M":
            layers.append(_maxpool())
            height, width = height // 2, width // 2
        else:
            layers += _synapse_block(_conv(channels, item, 3, 1), act_bits, True, item)
            channels = item
    layers.append({"type": "flatten"})
    layers += _synapse_block(_linear(channels * height * width, num_classes), out_bits, False, num_classes)
    return _finish(name, input_shape, num_classes, layers)


def make_arch(name: str, input_shape: Sequence[int], num_classes: int, act_bits: int = 2, out_bits: int = 3) -> Arch:
    """A named architecture for a dataset's input shape."""
    if name == "mlp":
        return mlp(input_shape, num_classes, act_bits, out_bits)
    if name == "lenet":
        if len(input_shape) != 3 or min(input_shape[1:]) < 4:
            raise ValueError(f"lenet needs image inputs of at least 4x4, got {tuple(input_shape)}")
        return lenet(input_shape, num_classes, act_bits, out_bits)
    if name in VGG_CONFIGS:
        if len(input_shape) != 3 or tuple(input_shape[1:]) != (32, 32):
            raise ValueError(f"{name} needs 32x32 image inputs (CIFAR-10), got {tuple(input_shape)}")
        return vgg(name, input_shape, num_classes, act_bits, out_bits)
    raise ValueError(f"unknown architecture {name!r} (choose from {', '.join(ARCHS)})")


def set_layer_bits(arch: Arch, bits: Sequence[int]) -> Arch:
    """A copy of `arch` with the act layers' bits set in order (the last is the output layer)."""
    acts = [spec for spec in arch["layers"] if spec["type"] == "act"]
    if len(bits) != len(acts):
        raise ValueError(f"{arch['name']} has {len(acts)} activation layers, got {len(bits)} bit widths")
    layers, it = [], iter(bits)
    for spec in arch["layers"]:
        layers.append({**spec, "bits": next(it)} if spec["type"] == "act" else dict(spec))
    result = {**arch, "layers": layers}
    check_arch(result)
    return result
