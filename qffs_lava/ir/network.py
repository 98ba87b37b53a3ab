"""A QFFS network as a graph: layers in topological order, each reading earlier layers (docs/format.md).

`Network` checks the graph and infers every layer's shape and pipeline depth when it is
built; `propagate` is the one executor every backend uses: it visits the layers in
order and hands each the values its inputs produced.

Timing: in synchronous time every layer sees its sources' spikes of the same step. In
pipelined time (Lava, Loihi) every synapse delays by one step, so a neuron layer's depth
is 1 + the largest depth of its sources (the input's is 0; a maxpool or flatten has its
source's), its bias window is steps depth+1 .. depth+K, and D = the output layer's depth.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Protocol, Tuple

import numpy as np

from qffs_lava.errors import QffsFormatError
from qffs_lava.ir.layers import FlattenLayer, InputLayer, Layer, MaxPoolLayer, NeuronLayer, Shape

#: The most values a layer may have per sample.
MAX_NEURONS = 2**24
MODES = ("sync", "pipelined")


class LayerVisitor(Protocol):
    """What a backend implements to be driven by `Network.propagate`: one method per layer type."""

    def input(self, index: int, layer: InputLayer) -> Any: ...

    def neuron(self, index: int, layer: NeuronLayer, sources: List[Any]) -> Any: ...

    def readout(self, index: int, layer: NeuronLayer, sources: List[Any]) -> Any: ...

    def maxpool(self, index: int, layer: MaxPoolLayer, source: Any) -> Any: ...

    def flatten(self, index: int, layer: FlattenLayer, source: Any) -> Any: ...


def _where(index: int, layer: Layer) -> str:
    return f"layer {index} ({layer.kind})"


@dataclass
class Network:
    """An integer QFFS network: layers[0] is the input, the last layer is the output neuron layer (QFFS neurons,
    whose counts are the output, or a read-out, whose potentials are).

    A layer's `inputs` name earlier layers (None: the layer before). Building a Network
    checks the graph (QffsFormatError naming the layer and key) and sets `shapes` and `depths`.
    """

    layers: List[Layer]
    meta: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if len(self.layers) < 2 or not isinstance(self.layers[0], InputLayer):
            first = _where(0, self.layers[0]) if self.layers else "layer 0"
            raise QffsFormatError.at(first, "type", "layer 0 must be the input layer, followed by at least one dense "
                                     "or conv layer")
        self.layers = [layer if i == 0 or layer.inputs is not None else dataclasses.replace(layer, inputs=(i - 1,))
                       for i, layer in enumerate(self.layers)]
        self.shapes: List[Shape] = []
        self.depths: List[int] = []
        for i, layer in enumerate(self.layers):
            self._check_inputs(i, layer)
            try:
                shape = layer.output_shape([self.shapes[j] for j in layer.inputs])
            except QffsFormatError as err:
                raise QffsFormatError.at(_where(i, layer), err.key, str(err)) from None
            if int(np.prod(shape)) > MAX_NEURONS:
                raise QffsFormatError.at(_where(i, layer), "shape", f"{int(np.prod(shape))} values per sample, more "
                                         f"than {MAX_NEURONS}")
            self.shapes.append(shape)
            sources = [self.depths[j] for j in layer.inputs]
            self.depths.append(0 if i == 0 else max(sources) + isinstance(layer, NeuronLayer))
        if not isinstance(self.layers[-1], NeuronLayer):
            last = len(self.layers) - 1
            raise QffsFormatError.at(_where(last, self.layers[last]), "type",
                                     "the network must end in a dense or conv layer (the output)")
        for i, layer in self.neuron_layers[:-1]:
            if not layer.neurons.fires:
                raise QffsFormatError.at(f"{_where(i, layer)} neuron", "type", f"a {layer.neurons.kind} layer "
                                         "never fires, so only the output layer may be one")
        windows = [(i, layer.neurons.bias_steps) for i, layer in self.neuron_layers]
        for i, window in windows:
            if window != windows[0][1]:
                raise QffsFormatError.at(f"{_where(i, self.layers[i])} neuron", "biasSteps", "all layers need the "
                                         f"same bias window, got {sorted({w for _, w in windows})}")

    def _check_inputs(self, i: int, layer: Layer) -> None:
        if i == 0:
            return
        if isinstance(layer, InputLayer):
            raise QffsFormatError.at(_where(i, layer), "type", "an input layer may only come first")
        where, inputs = _where(i, layer), list(layer.inputs)
        if not inputs or any(not isinstance(j, (int, np.integer)) or not 0 <= j < i for j in inputs):
            raise QffsFormatError.at(where, "inputs", f"expected earlier layers in 0..{i - 1} (the layers are in "
                                     "topological order, so a cycle or a forward reference cannot occur), got "
                                     f"{inputs}")
        if isinstance(layer, NeuronLayer) and len(inputs) != len(layer.synapses):
            raise QffsFormatError.at(where, "inputs", f"expected one per synapse ({len(layer.synapses)}), got {inputs}")
        if not isinstance(layer, NeuronLayer) and len(inputs) != 1:
            raise QffsFormatError.at(where, "inputs", f"expected exactly one (it reads one layer), got {inputs}")

    # Structure -----------------------------------------------------------------------------------

    @property
    def input(self) -> InputLayer:
        return self.layers[0]

    @property
    def output_index(self) -> int:
        return len(self.layers) - 1

    @property
    def output_fires(self) -> bool:
        """Whether the output layer spikes (its output is the net count z), or is a read-out (its potential v)."""
        return self.layers[-1].neurons.fires

    @property
    def output_kind(self) -> str:
        """"spiking" (the prediction is the argmax of the output counts) or "read-out" (of the potentials)."""
        return self.layers[-1].neurons.output

    @property
    def neuron_layers(self) -> List[Tuple[int, NeuronLayer]]:
        return [(i, layer) for i, layer in enumerate(self.layers) if isinstance(layer, NeuronLayer)]

    @property
    def bias_steps(self) -> int:
        """K: the input window (and every layer's bias window) in steps."""
        return self.neuron_layers[0][1].neurons.bias_steps

    @property
    def pipeline_depth(self) -> int:
        """D: the output layer's depth; pipelined step T + D equals synchronous step T."""
        return self.depths[-1]

    @property
    def settling_steps(self) -> int:
        """Synchronous steps after which no neuron spikes again: the input stops after step K, and a neuron
        whose current has stopped moves its count straight to where it settles, one spike a step, so it spikes
        last at most zMax steps after its sources' (or its bias window's) last step."""
        last: List[int] = []
        for i, layer in enumerate(self.layers):
            if i == 0:
                last.append(self.bias_steps)
            elif isinstance(layer, NeuronLayer):
                last.append(max([self.bias_steps] + [last[j] for j in layer.inputs]) + layer.neurons.z_max)
            else:
                last.append(last[layer.inputs[0]])
        return max(last)

    @property
    def num_classes(self) -> int:
        return int(np.prod(self.shapes[-1]))

    def bias_start(self, index: int, mode: str) -> int:
        """The first step of a neuron layer's bias window: 1 synchronously, depth + 1 pipelined."""
        return self.depths[index] + 1 if mode == "pipelined" else 1

    def consumers(self) -> List[List[int]]:
        """For each layer, the layers that read it (once per synapse)."""
        result: List[List[int]] = [[] for _ in self.layers]
        for i, layer in enumerate(self.layers):
            for j in layer.inputs:
                result[j].append(i)
        return result

    def is_chain(self) -> bool:
        """Whether every layer reads only the one before it (a version 1 network)."""
        return all(tuple(layer.inputs) == (i - 1,) for i, layer in enumerate(self.layers) if i) and \
            all(len(layer.synapses) == 1 for _, layer in self.neuron_layers)

    # The executor ----------------------------------------------------------------------------------

    def propagate(self, visitor: LayerVisitor) -> List[Any]:
        """Visit the layers in order; each gets the values of its inputs. Returns every layer's value."""
        values: List[Any] = []
        for i, layer in enumerate(self.layers):
            values.append(layer.visit(visitor, i, [values[j] for j in layer.inputs]))
        return values
