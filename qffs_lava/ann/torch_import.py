"""Bring your own PyTorch model: torch.fx traces an nn.Module into a plain-data architecture (models.py).

`from_torch(module, input_shape)` returns the architecture and a GraphModel that holds the
module's weights, in float mode, ready for LSQ fine-tuning, training and export like a
built-in one. Each traced operation becomes one node:

    Conv2d -> conv, Linear -> linear, BatchNorm1d/2d -> batchnorm (its running statistics and eps),
    ReLU (the module, F.relu, torch.relu, Tensor.relu) -> act: one per call, so a ReLU
    module called twice becomes two activations,
    MaxPool2d -> maxpool, AvgPool2d -> avgpool, AdaptiveAvgPool2d to 1x1 -> global_avgpool,
    flatten / view / reshape to (batch, features) -> flatten, + of two branches -> add,
    Dropout and Identity -> nothing (they are the identity at inference).

The output gets an `act` of `out_bits` (the network's last ReLU becomes it, or one is
appended after the logits). An average pool between a conv and its ReLU is imported as
written; the exporter folds it into the conv (convert/plan.py), and qffs-train says so.
Anything else is refused with one QffsError naming the node, the op, and what is
supported.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import operator
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from qffs_lava.ann.archs import set_layer_bits
from qffs_lava.ann.models import INPUT, RESERVED_NAMES, Arch, GraphModel, check_arch, check_node
from qffs_lava.errors import ParameterError, QffsError

log = logging.getLogger(__name__)

SUPPORTED = ("Conv2d, Linear, BatchNorm1d/2d (running statistics), ReLU (module, F.relu, torch.relu), "
             "MaxPool2d and F.max_pool2d, AvgPool2d and F.avg_pool2d, AdaptiveAvgPool2d to 1x1, "
             "flatten/view/reshape to 2-D, + of two branches, Dropout, Identity")
RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_)
ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
SHAPE_QUERIES = ("size", "dim")
FLATTEN_METHODS = ("view", "reshape", "flatten")  # each checked to give (batch, features)
#: The functional poolings and their parameters in order.
POOL_FUNCTIONS = {
    F.max_pool2d: ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    F.avg_pool2d: ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
}
#: What to use instead of an op QFFS does not convert, where something does the job.
EQUIVALENTS = {
    nn.ReLU6: "nn.ReLU (the quantizer clips at the top already)", F.relu6: "F.relu (the quantizer clips at the top)",
    nn.LeakyReLU: "nn.ReLU", F.leaky_relu: "F.relu", nn.Hardtanh: "nn.ReLU (the quantizer clips at the top)",
    nn.AdaptiveMaxPool2d: "nn.MaxPool2d with a fixed kernel", F.adaptive_max_pool2d: "nn.MaxPool2d",
    nn.MaxPool1d: "nn.MaxPool2d", nn.AvgPool1d: "nn.AvgPool2d", nn.SyncBatchNorm: "nn.BatchNorm2d",
    torch.max_pool2d: "nn.MaxPool2d or F.max_pool2d", F.lp_pool2d: "nn.MaxPool2d or nn.AvgPool2d",
}


class _Importer:
    """Walks a traced graph, node by node, into architecture nodes; `values` maps an fx node to the
    architecture node that holds its value."""

    def __init__(self, traced: fx.GraphModule, input_shape: Sequence[int], act_bits: int):
        self.traced, self.act_bits = traced, act_bits
        self.nodes: List[dict] = []
        self.shapes: Dict[str, Tuple[int, ...]] = {INPUT: tuple(input_shape)}
        self.values: Dict[fx.Node, str] = {}
        self.weights: Dict[str, nn.Module] = {}  # architecture node -> the module whose tensors it takes

    def refuse(self, node: fx.Node, why: str) -> QffsError:
        op = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
        if node.op == "call_module":
            op = f"{type(self.traced.get_submodule(node.target)).__name__} ({node.target})"
        return QffsError(f"cannot import node {node.name!r} ({node.op} {op}): {why}; supported: {SUPPORTED}")

    def name(self, wanted: str) -> str:
        name = wanted if wanted not in RESERVED_NAMES and wanted != INPUT else f"{wanted}_"
        while name in self.shapes:
            name += "_"
        return name

    def add(self, node: fx.Node, op: str, inputs: List[str], module: Optional[nn.Module] = None, **params) -> None:
        name = self.name(node.name)
        arch_node = {"name": name, "op": op, "inputs": inputs, **params}
        try:
            self.shapes[name] = check_node(len(self.nodes), arch_node, self.shapes)
        except ValueError as err:
            raise self.refuse(node, str(err)) from None
        self.nodes.append(arch_node)
        self.values[node] = name
        if module is not None:
            self.weights[name] = module

    def source(self, node: fx.Node, arg) -> str:
        if not isinstance(arg, fx.Node) or arg not in self.values:
            raise self.refuse(node, f"its input {arg!r} is not a traced tensor")
        return self.values[arg]

    def traced_shape(self, node: fx.Node) -> Tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise self.refuse(node, "it does not give one tensor")
        return tuple(meta.shape[1:])

    def alias(self, node: fx.Node, arg) -> None:
        self.values[node] = self.source(node, arg)

    def flatten(self, node: fx.Node, arg) -> None:
        """To (batch, features): a flatten node, or nothing where the value is already flat."""
        if len(self.traced_shape(node)) != 1:
            raise self.refuse(node, f"only a flatten to (batch, features) is supported, this gives "
                                    f"(batch, {', '.join(map(str, self.traced_shape(node)))})")
        source = self.source(node, arg)
        if len(self.shapes[source]) == 1:
            self.values[node] = source
        else:
            self.add(node, "flatten", [source])

    def act(self, node: fx.Node, arg) -> None:
        self.add(node, "act", [self.source(node, arg)], bits=self.act_bits)

    def call_module(self, node: fx.Node) -> None:
        module = self.traced.get_submodule(node.target)
        (arg,) = node.args[:1] or (None,)
        if isinstance(module, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)):
            return self.alias(node, arg)
        if isinstance(module, nn.ReLU):
            return self.act(node, arg)
        if isinstance(module, nn.Conv2d):
            if module.padding_mode != "zeros" or isinstance(module.padding, str) or module.dilation != (1, 1):
                raise self.refuse(node, "only zero padding given in pixels and dilation 1 are supported")
            return self.add(node, "conv", [self.source(node, arg)], module, in_channels=module.in_channels,
                            out_channels=module.out_channels, kernel_size=list(module.kernel_size),
                            stride=list(module.stride), padding=list(module.padding), groups=module.groups)
        if isinstance(module, nn.Linear):
            return self.add(node, "linear", [self.source(node, arg)], module, in_features=module.in_features,
                            out_features=module.out_features)
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if not module.track_running_stats:
                raise self.refuse(node, "batchnorm needs running statistics (track_running_stats=True)")
            return self.add(node, "batchnorm", [self.source(node, arg)], module, num_features=module.num_features,
                            eps=float(module.eps))
        if isinstance(module, nn.MaxPool2d):
            return self.max_pool(node, arg, module.kernel_size, module.stride, module.padding, module.dilation,
                                 module.ceil_mode, module.return_indices)
        if isinstance(module, nn.AvgPool2d):
            return self.avg_pool(node, arg, module.kernel_size, module.stride, module.padding, module.ceil_mode,
                                 module.divisor_override)
        if isinstance(module, nn.AdaptiveAvgPool2d):
            return self.global_pool(node, arg, module.output_size)
        if isinstance(module, nn.Flatten):
            if module.start_dim != 1 or module.end_dim != -1:
                raise self.refuse(node, "only Flatten(start_dim=1, end_dim=-1) is supported")
            return self.flatten(node, arg)
        raise self.refuse(node, "this module is not supported" + _equivalent(type(module)))

    def max_pool(self, node: fx.Node, arg, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                 return_indices=False) -> None:
        """nn.MaxPool2d or F.max_pool2d."""
        if dilation not in (1, (1, 1)) or ceil_mode or return_indices:
            raise self.refuse(node, "max pooling needs dilation 1, no ceil_mode and no indices")
        self.add(node, "maxpool", [self.source(node, arg)], kernel_size=kernel_size, stride=stride or kernel_size,
                 padding=padding)

    def avg_pool(self, node: fx.Node, arg, kernel_size, stride=None, padding=0, ceil_mode=False,
                 divisor_override=None) -> None:
        """nn.AvgPool2d or F.avg_pool2d (without padding, count_include_pad does not matter)."""
        if padding not in (0, (0, 0)) or ceil_mode or divisor_override:
            raise self.refuse(node, "average pooling needs no padding, no ceil_mode, no divisor_override")
        self.add(node, "avgpool", [self.source(node, arg)], kernel_size=kernel_size, stride=stride or kernel_size)

    def global_pool(self, node: fx.Node, arg, size) -> None:
        if size not in (1, (1, 1), [1, 1]):
            raise self.refuse(node, f"adaptive average pooling to {size} (only to 1x1 is supported)")
        if any(user.op == "output" for user in node.users) or not all(_flattens(user) for user in node.users):
            raise self.refuse(node, "adaptive average pooling to 1x1 must be followed by a flatten")
        self.add(node, "global_avgpool", [self.source(node, arg)])

    def call_function(self, node: fx.Node) -> None:
        target, args = node.target, node.args
        if target in RELU_FUNCTIONS:
            return self.act(node, args[0])
        if target in ADD_FUNCTIONS:
            if len(args) != 2 or not all(isinstance(a, fx.Node) for a in args) or node.kwargs.get("alpha", 1) != 1:
                raise self.refuse(node, "only the sum of two traced tensors is supported")
            return self.add(node, "add", [self.source(node, a) for a in args])
        if target is torch.flatten:
            start = args[1] if len(args) > 1 else node.kwargs.get("start_dim", 0)
            end = args[2] if len(args) > 2 else node.kwargs.get("end_dim", -1)
            if start != 1 or end != -1:
                raise self.refuse(node, "only torch.flatten(x, 1) is supported")
            return self.flatten(node, args[0])
        if target in POOL_FUNCTIONS:
            names = POOL_FUNCTIONS[target]
            bound = dict(zip(names, args), **node.kwargs)
            unknown = sorted(set(bound) - set(names))
            if unknown:
                raise self.refuse(node, f"unknown arguments {unknown}")
            pool = self.max_pool if target is F.max_pool2d else self.avg_pool
            return pool(node, bound.pop("input"), **{k: v for k, v in bound.items() if k != "count_include_pad"})
        if target is F.adaptive_avg_pool2d:
            return self.global_pool(node, args[0], args[1] if len(args) > 1 else node.kwargs.get("output_size"))
        if target in (getattr, operator.getitem) and _is_shape_query(node):
            return None
        raise self.refuse(node, "this function is not supported" + _equivalent(target))

    def call_method(self, node: fx.Node) -> None:
        target, args = node.target, node.args
        if target in ("relu", "relu_"):
            return self.act(node, args[0])
        if target in ("add", "add_", "__add__"):
            if len(args) != 2 or not isinstance(args[1], fx.Node) or node.kwargs.get("alpha", 1) != 1:
                raise self.refuse(node, "only the sum of two traced tensors is supported")
            return self.add(node, "add", [self.source(node, a) for a in args])
        if target in FLATTEN_METHODS:
            if target == "flatten" and (args[1:2] or (node.kwargs.get("start_dim", 0),))[0] != 1:
                raise self.refuse(node, "only x.flatten(1) is supported")
            return self.flatten(node, args[0])
        if target in SHAPE_QUERIES and _is_shape_query(node):
            return None
        raise self.refuse(node, "this method is not supported")

    def walk(self) -> str:
        """Import every node; the architecture node of the output."""
        output = None
        for node in self.traced.graph.nodes:
            if node.op == "placeholder":
                if INPUT in self.values.values():
                    raise self.refuse(node, "the model takes more than one input")
                self.values[node] = INPUT
            elif node.op == "get_attr":
                raise self.refuse(node, "a tensor attribute used directly in forward")
            elif node.op == "output":
                if not isinstance(node.args[0], fx.Node):
                    raise self.refuse(node, "the model must return one tensor")
                output = self.source(node, node.args[0])
            else:
                getattr(self, node.op)(node)
        return output


def _equivalent(op) -> str:
    """'; use ...' where EQUIVALENTS knows what to use instead of the op, else ''."""
    return f"; use {EQUIVALENTS[op]}" if op in EQUIVALENTS else ""


def _flattens(node: fx.Node) -> bool:
    """Whether a node flattens its input to (batch, features)."""
    meta = node.meta.get("tensor_meta")
    flat = meta is not None and hasattr(meta, "shape") and len(meta.shape) == 2
    return flat and (node.op == "call_method" and node.target in FLATTEN_METHODS
                     or node.op == "call_function" and node.target is torch.flatten
                     or node.op == "call_module" and isinstance(node.graph.owning_module.get_submodule(node.target),
                                                                nn.Flatten))


def _is_shape_query(node: fx.Node) -> bool:
    """x.size(...), x.shape[...], x.dim(): used only as the shape arguments of a view or reshape."""
    return all(user.op == "call_method" and user.target in ("view", "reshape") and user.args[0] is not node
               or _is_shape_query(user) for user in node.users) and bool(node.users)


def pool_after_act(nodes: List[dict]) -> List[dict]:
    """The nodes with every `synapse -> maxpool -> act` (the act the pool's only reader) made `synapse -> act ->
    maxpool`: the same function, since max pooling commutes with ReLU and with the LSQ quantizer (both monotone),
    and the form QFFS converts (it max-pools spike counts), each move logged. Nodes that read the act then read
    the pool."""
    nodes = [dict(node) for node in nodes]
    ops = {node["name"]: node["op"] for node in nodes}
    for pool in [node for node in nodes if node["op"] == "maxpool"]:
        source = pool["inputs"][0]
        readers = [node for node in nodes if pool["name"] in node["inputs"]]
        if ops.get(source, "input") in ("act", "maxpool", "flatten", "input") or len(readers) != 1 \
                or readers[0]["op"] != "act":
            continue
        act = readers[0]
        for node in nodes:
            if act["name"] in node["inputs"]:
                node["inputs"] = [pool["name"] if name == act["name"] else name for name in node["inputs"]]
        act["inputs"], pool["inputs"] = [source], [act["name"]]
        nodes.remove(act)
        nodes.insert(nodes.index(pool), act)
        log.info(f"note: max pool {pool['name']!r} reads {ops[source]} {source!r} and feeds ReLU {act['name']!r}: "
                 f"converted as {ops[source]} -> ReLU -> max pool, the same function (max pooling commutes with ReLU "
                 "and the quantizer), which QFFS converts")
    return nodes


def trace(module: nn.Module) -> fx.GraphModule:
    """torch.fx's symbolic trace, its failure (data-dependent control flow, ...) as a QffsError."""
    try:
        return fx.symbolic_trace(module)
    except Exception as err:  # fx raises TraceError, TypeError, NotImplementedError, ... from user code
        raise QffsError(f"cannot import {type(module).__name__}: torch.fx cannot trace it ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:300]}); models whose forward branches on tensor values are "
                        f"not supported; supported: {SUPPORTED}") from None


def from_torch(module: nn.Module, input_shape: Sequence[int], act_bits: int = 2, out_bits: Union[int, str] = 3,
               layer_bits: Optional[Sequence[int]] = None, weight_bits: Optional[int] = None,
               name: Optional[str] = None) -> Tuple[Arch, GraphModel]:
    """(architecture, GraphModel in float mode with the module's weights) for a module taking (N, *input_shape).

    Hidden activations get `act_bits`, the output (the module's output, over its
    num_classes values) `out_bits` ("float": a full-precision output, read out from its potential
    without firing; a ReLU that ends the module is then dropped, the logits read), or `layer_bits`
    per act in order; `weight_bits` adds
    LSQ weight quantizers. A max pool between a synapse and its ReLU is moved after the ReLU
    (`pool_after_act`, logged at INFO). Raises QffsError naming the first node it cannot import.

    Example:
        >>> arch, model = qffs.from_torch(torchvision.models.resnet18(num_classes=10), (3, 224, 224))
        >>> [node["op"] for node in arch["nodes"]][:4]      # ['conv', 'batchnorm', 'act', 'maxpool']
        >>> qffs.train("cifar10", my_module, out="mine.pt")  # train takes the module itself
    """
    traced = trace(module)
    was_training = module.training
    traced.eval()
    try:
        with torch.no_grad():
            traced(torch.zeros(2, *input_shape))  # first on its own: ShapeProp prints a traceback of any failure
            ShapeProp(traced).propagate(torch.zeros(2, *input_shape))
    except Exception as err:
        raise QffsError(f"cannot import {type(module).__name__}: it does not run on inputs of shape "
                        f"(N, {', '.join(map(str, input_shape))}): {' '.join(str(err).split())[:300]}") from None
    finally:
        module.train(was_training)
    importer = _Importer(traced, input_shape, act_bits)
    output = importer.walk()
    nodes = pool_after_act(importer.nodes)
    if output == INPUT:
        raise QffsError(f"cannot import {type(module).__name__}: it returns its input unchanged")
    if len(importer.shapes[output]) != 1:
        raise QffsError(f"cannot import {type(module).__name__}: it returns a tensor of shape "
                        f"(batch, {', '.join(map(str, importer.shapes[output]))}); a classifier returns (batch, "
                        "classes)")
    if nodes[-1]["name"] == output and nodes[-1]["op"] == "act":
        nodes[-1]["bits"] = out_bits
    else:
        nodes.append({"name": importer.name("out"), "op": "act", "inputs": [output], "bits": out_bits})
    arch = {"name": name or type(module).__name__, "input_shape": list(input_shape),
            "num_classes": importer.shapes[output][0], "nodes": nodes}
    try:
        arch = set_layer_bits(arch, layer_bits) if layer_bits else arch
        check_arch(arch)
    except ValueError as err:
        raise QffsError(f"cannot import {type(module).__name__}: {err}") from None
    model = GraphModel(arch, weight_bits)
    with torch.no_grad():
        for node_name, source in importer.weights.items():
            target = getattr(model, node_name)
            for key, value in target.state_dict().items():
                if key.startswith("weight_quantizer."):
                    continue
                theirs = getattr(source, key, None)
                if theirs is None:  # a conv or linear without bias, a batchnorm without affine parameters
                    theirs = torch.ones_like(value) if key == "weight" else torch.zeros_like(value)
                value.copy_(theirs)
    return arch, model.eval()


def _call_builder(builder, spec: str, **offered) -> nn.Module:
    """builder(**the offered keywords it accepts) (num_classes, in_channels), checked to give an nn.Module."""
    try:
        parameters = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        parameters = {}
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    kwargs = {k: v for k, v in offered.items() if takes_all or k in parameters}
    try:
        module = builder(**kwargs)
    except Exception as err:
        raise ParameterError(f"{{}} {spec}: calling it with {kwargs or 'no arguments'} failed: "
                             f"{type(err).__name__}: {str(err)[:300]}", "arch") from None
    if not isinstance(module, nn.Module):
        raise ParameterError(f"{{}} {spec}: it returned {type(module).__name__}, not a torch.nn.Module", "arch")
    return module


def _resolve(spec: str):
    """The callable that `module:function` or `path/to/file.py:function` names (the current folder importable)."""
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise ParameterError(f"{{}} {spec}: give a built-in name or MODULE:FUNCTION (e.g. mypackage.models:build, "
                             "models.py:build, torchvision:resnet18)", "arch")
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise ParameterError(f"{{}} {spec}: {where} does not exist", "arch")
            loader = importlib.util.spec_from_file_location(f"qffs_user_{path.stem}", path)
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())  # as `python -m` does, so the user's own modules import
            module = importlib.import_module(where)
    except QffsError:
        raise
    except Exception as err:
        raise ParameterError(f"{{}} {spec}: cannot import {where}: {type(err).__name__}: {str(err)[:300]}",
                             "arch") from None
    if not callable(getattr(module, attr, None)):
        raise ParameterError(f"{{}} {spec}: {where} has no function or class {attr!r}", "arch")
    return getattr(module, attr)


def build_module(spec: str, input_shape: Sequence[int], num_classes: int, small_input_stem: bool = False) -> nn.Module:
    """The user's nn.Module that `spec` names, built for a dataset.

    `torchvision:NAME` calls torchvision.models.NAME(num_classes=...); for a ResNet its stem
    takes the dataset's channels, and `small_input_stem` makes it a 3x3 stride-1 conv without
    the max pool (the usual stem for 32x32 images). Any other `MODULE:FUNCTION` (or
    `file.py:FUNCTION`) is called with `num_classes` and `in_channels` where it takes them.
    """
    if spec.startswith("torchvision:"):
        import torchvision

        name = spec.split(":", 1)[1]
        builder = getattr(torchvision.models, name, None)
        if name.startswith("_") or not callable(builder):
            raise ParameterError(f"{{}} {spec}: torchvision.models has no model {name!r}", "arch")
        module = _call_builder(builder, spec, num_classes=num_classes)
        if isinstance(module, torchvision.models.ResNet):
            old = module.conv1
            if small_input_stem:
                module.conv1 = nn.Conv2d(input_shape[0], old.out_channels, 3, 1, 1, bias=False)
                module.maxpool = nn.Identity()
            elif old.in_channels != input_shape[0]:
                module.conv1 = nn.Conv2d(input_shape[0], old.out_channels, old.kernel_size, old.stride, old.padding,
                                         bias=False)
            return module
    elif small_input_stem:
        raise ParameterError(f"{{}} is for torchvision's ResNets, not {spec}", "small_input_stem")
    else:
        module = _call_builder(_resolve(spec), spec, num_classes=num_classes, in_channels=input_shape[0])
    if small_input_stem:
        raise ParameterError(f"{{}} is for torchvision's ResNets, not {spec}", "small_input_stem")
    return module
