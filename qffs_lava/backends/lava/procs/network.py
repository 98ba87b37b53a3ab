"""QffsNetwork: a whole net.h5 as one hierarchical Lava Process (docs/lava.md).

Lava users compose it like lava-dl's `netx.hdf5.Network`: connect a source to `inp`, a
sink to `out`, probes to any of `layers`, and run it with a Lava run configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.proc.conv.process import Conv
from lava.proc.dense.process import Dense
from lava.proc.sparse.process import Sparse
from scipy import sparse

from qffs_lava.backends.lava.layout import (
    from_lava_layout,
    lava_conv_weight,
    lava_pool_windows,
    lava_shape,
    to_lava_layout,
    whc_order,
)
from qffs_lava.backends.lava.procs.process import BatchConv, EventMaxPool, QffsNeuron, QffsReadout, check_reset
from qffs_lava.ir.network import Network

MESSAGE_BITS = 24  # graded messages carry signed spikes and the integer input


class QffsNetwork(AbstractProcess):
    """A QFFS network read from net.h5, as Lava Processes: Dense/Conv synapses, QffsNeuron, EventMaxPool, and
    QffsReadout where the output is a read-out (net.h5 version 3).

    Parameters (named as netx's where they mean the same):
        net_config:     the net.h5 file (or a `qffs_lava.ir.Network` already read)
        reset_interval: steps per sample; every neuron and pool resets where a sample
                        starts, at steps reset_offset + 1 + k * reset_interval. None: one
                        sample, no reset. A sample needs at least D + K steps (D the
                        output layer's depth, K the input window) and T + D for T steps
                        of the synchronous simulation.
        reset_offset:   the phase of the resets (the first sample starts after it)
        input_shape:    the input's (W, H, C) shape; None takes net.h5's, given it must match
        num_layers:     build net.h5 layers 0 .. num_layers - 1 only (the last a dense or conv
                        layer, which `out` then sends)
        batch:          B samples side by side in every Process (layout.py: sample-major on
                        the last axis; a conv becomes a grouped conv over the B copies, a
                        dense layer a block-diagonal `Sparse`), each sample's spikes exactly
                        the per-sample network's; 1 (the default) is the network that maps to
                        Loihi 2

    Ports:
        inp: graded integer input in Lava's (W, H, C) layout (W, H, B * C batched): each
             sample's x_int (the input layer's rounding of the data) in its first K steps,
             then zeros.
        out: the last layer's signed spikes in {-1, 0, +1} (graded messages), (W, H, C)
             or flat. Each Dense/Conv hop delays one step, so a layer at depth d starts
             at local step d + 1 and a sample's output counts are complete at T + D.
             With a read-out output, its potential after each step instead (24-bit graded).

    Attributes:
        layers:     the Processes of the net.h5 layers in order (QffsNeuron or
                    EventMaxPool; the input and flatten layers have none), as netx's list
        synapses:   per neuron layer, its Dense or Conv Processes
        layer_out:  per net.h5 layer, the port carrying its values in Lava's layout
                    (`inp` for the input, a reshaped port for a flatten)
        flat_order: per net.h5 layer, for each flat position in Lava's order the flat
                    position in net.h5's (C, H, W) order
        readout:    the output's QffsReadout where the output is a read-out (else None): its Var `v` is
                    the potential whose argmax is the prediction (`readout.v.get()`, or a Monitor)
        network:    the `Network` (net.h5 as read); str(process) is the Lava view

    Example (docs/lava.md, examples/lava_network.py):
        >>> net = qffs.QffsNetwork(net_config="digits.h5", reset_interval=8 + D)
        >>> source = RingBuffer(data=net.source_data(images))   # lava.proc.io.source
        >>> source.s_out.connect(net.inp); net.out.connect(sink.a_in)
        >>> sink.run(condition=RunSteps(num_steps=...), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        >>> net.output_counts(sink.data.get())                  # (N, classes)
    """

    def __init__(self, net_config, reset_interval: Optional[int] = None, reset_offset: int = 0,
                 input_shape: Optional[Tuple[int, ...]] = None, num_layers: Optional[int] = None,
                 batch: int = 1, name: Optional[str] = None) -> None:
        super().__init__(net_config=str(net_config) if not isinstance(net_config, Network) else "<Network>",
                         reset_interval=reset_interval, reset_offset=reset_offset, num_layers=num_layers,
                         batch=batch, name=name)  # first: Lava's __del__ expects what this sets, even after an error
        check_reset(reset_interval, reset_offset)
        if int(batch) != batch or batch < 1:
            raise ValueError(f"batch must be a whole number of samples >= 1, got {batch!r}")
        network = net_config if isinstance(net_config, Network) else _read(net_config)
        if num_layers is not None:
            if not 2 <= num_layers <= len(network.layers):
                raise ValueError(f"num_layers must be in 2..{len(network.layers)} (the input and at least one "
                                 f"layer), got {num_layers}")
            network = Network(network.layers[:num_layers], network.meta)  # must end in a neuron layer
        if reset_interval is not None and reset_interval < network.pipeline_depth + network.bias_steps:
            raise ValueError(f"reset_interval {reset_interval} is shorter than one sample: the deepest layer "
                             f"starts its {network.bias_steps}-step bias window at step "
                             f"{network.pipeline_depth + 1}, so give at least "
                             f"{network.pipeline_depth + network.bias_steps}")
        expected = lava_shape(network.shapes[0], batch)
        if input_shape is not None and tuple(input_shape) != expected:
            raise ValueError(f"input_shape {tuple(input_shape)} does not match the net.h5 input {expected} "
                             f"(Lava's (W, H, C) order{', B * C channels' if batch > 1 else ''})")
        self.network, self.batch = network, int(batch)
        self.reset_interval, self.reset_offset = reset_interval, reset_offset
        self.input_shape = expected
        self.inp = InPort(shape=expected)
        self.layers: List[AbstractProcess] = []
        self.synapses: List[List[AbstractProcess]] = []
        self.rows: List[Tuple[str, ...]] = []
        self.readout: Optional[QffsReadout] = None
        values = network.propagate(_Builder(self))
        self.layer_out = [port for port, _ in values]
        self.flat_order = [order for _, order in values]
        self.out = OutPort(shape=lava_shape(network.shapes[-1], self.batch))
        self.layer_out[-1].connect(self.out)

    @property
    def processes(self) -> List[AbstractProcess]:
        """Every Process inside: the layers and their synapses."""
        return self.layers + [synapse for synapses in self.synapses for synapse in synapses]

    def __len__(self) -> int:
        return len(self.layers)

    def source_data(self, x) -> np.ndarray:
        """What a source feeding `inp` sends for N samples of dataset values x (N, *net.h5 input shape):
        (*inp shape, G * reset_interval) int32 for G = ceil(N / batch) groups of B samples side by side
        (the last group filled up with blank samples), each sample's x_int = floor(x * inputScale + 1/2)
        in its group's first K steps, then zeros (the layout of lava-nc's io.source.RingBuffer data).
        Uses numpy only, so it is safe in a process forked from one that ran torch."""
        interval, network, batch = self._interval(), self.network, self.batch
        x_int = network.input.encode(np.asarray(x, dtype=np.float64)).astype(np.int64).reshape(-1, *network.shapes[0])
        groups = -(-len(x_int) // batch)
        x_int = np.concatenate([x_int, np.zeros((groups * batch - len(x_int),) + x_int.shape[1:], np.int64)])
        data = np.zeros((groups, interval) + self.input_shape, dtype=np.int32)
        data[:, :network.bias_steps] = to_lava_layout(x_int.reshape(groups, batch, *x_int.shape[1:]),
                                                      network.shapes[0])[:, None]
        return np.moveaxis(data.reshape((-1,) + self.input_shape), 0, -1)

    def output_counts(self, spikes, samples: Optional[int] = None) -> np.ndarray:
        """Each sample's net output spike count (N, *net.h5 output shape), from what `out` sent at every
        step, shaped (*out shape, G * reset_interval) (as lava-nc's io.sink.RingBuffer holds it); N is
        G * batch, or `samples` to leave out the blank samples that fill the last group. With a read-out
        output, each sample's potential at its last step (what `out` sent then) instead."""
        interval, shape = self._interval(), self.network.shapes[-1]
        spikes = np.moveaxis(np.asarray(spikes), -1, 0)
        if spikes.shape[1:] != self.out.shape or len(spikes) % interval:
            raise ValueError(f"expected spikes shaped (*{self.out.shape}, G * {interval}), got "
                             f"{np.moveaxis(spikes, 0, -1).shape}")
        per_sample = spikes.reshape((-1, interval) + self.out.shape)
        fires = self.network.layers[-1].neurons.fires
        counts = (per_sample.sum(axis=1) if fires else per_sample[:, -1]).astype(np.int64)
        return from_lava_layout(counts, shape, self.flat_order[-1]).reshape(-1, *shape)[:samples]

    def _interval(self) -> int:
        if self.reset_interval is None:
            raise ValueError("samples need a reset_interval: build QffsNetwork(..., reset_interval=T + D)")
        return self.reset_interval

    def __str__(self) -> str:
        """The Lava view: per net.h5 layer its Lava Processes, (W, H, C) shape and message bits."""
        header = ("layer", "net.h5", "Lava Processes", "shape (W, H, C)", "message bits")
        rows = [header] + self.rows
        widths = [max(len(row[k]) for row in rows) for k in range(len(header))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        reset = "none" if self.reset_interval is None else \
            f"every {self.reset_interval} steps from step {self.reset_offset + 1}"
        return "\n".join(lines + [f"per-sample reset: {reset}"])


def _read(path) -> Network:
    from qffs_lava.ir.netfile import read_net

    if not Path(path).is_file():
        raise FileNotFoundError(f"net_config {path}: no such file (give the net.h5 that qffs-export wrote)")
    return read_net(path)


class _Builder:
    """The executor's visitor that builds the Processes; a layer's value is (port, flat order).

    The flat order lists, for each flat position of the port in Lava's layout, the flat
    position in torch's (C, H, W) order (a dense synapse's columns are permuted by it).
    """

    def __init__(self, net: QffsNetwork):
        self.net, self.network, self.batch = net, net.network, net.batch

    def _shape(self, index: int) -> Tuple[int, ...]:
        """Layer `index`'s port shape: its net.h5 shape for `batch` samples in Lava's layout."""
        return lava_shape(self.network.shapes[index], self.batch)

    def _row(self, index, layer, processes: str, bits: str) -> None:
        shape = "x".join(str(n) for n in self._shape(index))
        self.net.rows.append((str(index), layer.kind, processes, shape, bits))

    def input(self, index, layer):
        self._row(index, layer, "inp (InPort)", f"{MESSAGE_BITS} (graded integer input)")
        return self.net.inp, whc_order(layer.shape, self.batch)

    def _synapses(self, index, layer, sources, target) -> str:
        """The layer's Dense/Conv Processes, each from its source's port into `target`'s a_in; their names."""
        synapses = []
        for j, (synapse, source, (port, flat_order)) in enumerate(zip(layer.synapses, layer.inputs, sources)):
            process = synapse.visit(self, flat_order, source, f"layer{index}-synapse{j}")
            port.connect(process.s_in)
            process.a_out.connect(target.a_in)  # Lava sums what every connected OutPort sends
            synapses.append(process)
        self.net.layers.append(target)
        self.net.synapses.append(synapses)
        return " + ".join(type(process).__name__ for process in synapses)

    def _per_channel(self, index, values) -> np.ndarray:
        """Per-channel values tiled over Lava's layout of B samples (channels last)."""
        channel = (slice(None),) if len(self.network.shapes[index]) == 1 else (None, None, slice(None))
        return np.tile(values[channel], self.batch)

    def neuron(self, index, layer, sources):
        n, net = layer.neurons, self.net
        neurons = QffsNeuron(
            shape=self._shape(index), threshold=self._per_channel(index, n.threshold),
            v_init=self._per_channel(index, n.v_init), z_max=n.z_max, bias=self._per_channel(index, layer.bias),
            bias_start=self.network.bias_start(index, "pipelined"), bias_steps=n.bias_steps,
            reset_interval=net.reset_interval, reset_offset=net.reset_offset, name=f"layer{index}-qffs")
        kinds = self._synapses(index, layer, sources, neurons)
        self._row(index, layer, f"{kinds} -> QffsNeuron", f"{MESSAGE_BITS} (signed spikes)")
        return neurons.s_out, whc_order(self.network.shapes[index], self.batch)

    def readout(self, index, layer, sources):
        net = self.net
        readout = QffsReadout(
            shape=self._shape(index), bias=self._per_channel(index, layer.bias),
            bias_start=self.network.bias_start(index, "pipelined"), bias_steps=layer.neurons.bias_steps,
            reset_interval=net.reset_interval, reset_offset=net.reset_offset, name=f"layer{index}-readout")
        kinds = self._synapses(index, layer, sources, readout)
        net.readout = readout
        self._row(index, layer, f"{kinds} -> QffsReadout", f"{MESSAGE_BITS} (its potential)")
        return readout.v_out, whc_order(self.network.shapes[index], self.batch)

    def dense(self, synapse, flat_order, source, name):
        """Dense, or for B samples the block-diagonal of B copies as a Sparse; columns in the source port's order."""
        if self.batch == 1:
            return Dense(weights=synapse.weight[:, flat_order], num_message_bits=MESSAGE_BITS, name=name)
        blocks = sparse.block_diag([sparse.csr_matrix(synapse.weight)] * self.batch, format="csc")
        return Sparse(weights=blocks[:, flat_order].tocsr(), num_message_bits=MESSAGE_BITS, name=name)

    def conv(self, synapse, flat_order, source, name):
        """lava-nc's Conv; for B samples a BatchConv."""
        if self.batch == 1:
            return Conv(weight=lava_conv_weight(synapse.weight), input_shape=self._shape(source),
                        stride=synapse.stride[::-1], padding=synapse.padding[::-1],
                        dilation=synapse.dilation[::-1], groups=synapse.groups, num_message_bits=MESSAGE_BITS,
                        name=name)
        out_shape = lava_shape(synapse.output_shape(self.network.shapes[source]), self.batch)
        return BatchConv(weight=synapse.weight, in_shape=self._shape(source), out_shape=out_shape,
                         batch=self.batch, stride=synapse.stride, padding=synapse.padding,
                         dilation=synapse.dilation, groups=synapse.groups, name=name)

    def maxpool(self, index, layer, source):
        port, _ = source
        pool = EventMaxPool(in_shape=self._shape(layer.inputs[0]), out_shape=self._shape(index),
                            window_index=lava_pool_windows(self.network.shapes[layer.inputs[0]], layer, self.batch),
                            reset_interval=self.net.reset_interval, reset_offset=self.net.reset_offset,
                            name=f"layer{index}-maxpool")
        port.connect(pool.s_in)
        self.net.layers.append(pool)
        self._row(index, layer, "EventMaxPool", f"{MESSAGE_BITS} (signed spikes)")
        return pool.s_out, whc_order(self.network.shapes[index], self.batch)

    def flatten(self, index, layer, source):
        port, flat_order = source  # the order before flattening is the order after it
        self._row(index, layer, "OutPort.reshape", "-")
        return port.reshape(self._shape(index)), flat_order
