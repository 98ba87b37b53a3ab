"""The export rule: which SNN layers a model's graph becomes (docs/format.md, "The export rule").

Every `act` becomes a neuron layer whose current is a sum of affine paths from earlier
spiking outputs (an act, a maxpool, a flatten, or the input), each

    path = [avgpool | global_avgpool] [flatten] (conv | linear) [batchnorm],  or the identity,
           and after a conv also [batchnorm] avgpool [batchnorm] (one batchnorm at most),

and paths meet only at `add`. A maxpool or flatten of a spiking output is a layer of its
own. Anything else is refused with an error naming the node. What integers each path
carries is `integer.py`'s business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from qffs_lava.ann.models import INPUT, Arch, check_arch, pair
from qffs_lava.errors import QffsError
from qffs_lava.ir.layers import FlattenLayer, InputLayer, Layer, MaxPoolLayer

SYNAPTIC_OPS = ("conv", "linear")
POOL_OPS = ("avgpool", "global_avgpool")


@dataclass(frozen=True)
class Path:
    """One affine path into an act: source -> [pool] [flatten] conv|linear [batchnorm] [out_pool] [batchnorm]; the
    identity if no synapse.

    pool: average pooling of the source, folded into the synapse after it; out_pool: average pooling of a conv's
    output, folded into the conv before it (batchnorm, per channel, commutes with it);
    flat: the synapse is dense over the flattened (C, H, W) source (a flatten layer is made for it).
    """

    source: str
    pool: Optional[str] = None
    synapse: Optional[str] = None
    batchnorm: Optional[str] = None
    flat: bool = False
    out_pool: Optional[str] = None


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
                "maxpool, flatten or the input (a conv may be followed by avgpool), or the identity; paths meet only "
                "at add")
        taken = {}  # what follows the synapse, by op, peeled from the act's side: [batchnorm] [avgpool] [batchnorm]
        for op in ("batchnorm", "avgpool", "batchnorm"):
            node = self.nodes.get(name)
            if name not in self.spiking and node["op"] == op and op not in taken:
                taken[op], name = name, node["inputs"][0]
        node = self.nodes.get(name)
        if name in self.spiking or node["op"] not in SYNAPTIC_OPS:
            where = next(iter(taken.values()), name)
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
        return Path(source, pool, synapse, taken.get("batchnorm"), flat, taken.get("avgpool"))

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
