"""The Lava backends: a net.h5 built as real Lava Processes and run in one runtime for many samples.

Layout: Lava holds images as (W, H, C) arrays, so conv weights (Cout, Cin, kH, kW) become
`w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)` (Lava's Conv convolves and takes (Cout, kW,
kH, Cin)), (H, W) pairs are reversed, flatten is an `OutPort.reshape` in W, H, C order,
and the next dense layer's columns are permuted from torch's C, H, W order to match.

Time is pipelined (each Dense/Conv hop delays one step; DESIGN.md section 3): layer d's
bias window starts at local step d + 1, and a sample occupies `period = T + D` steps.
All samples run back to back in one runtime: the input ring buffer holds each sample's
K steps of graded input followed by silence, and every QffsNeuron and EventMaxPool
resets itself at the start of each period. The runtime is always stopped, also on
errors and Ctrl-C.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch

from qffs_lava.dynamics import pool_windows
from qffs_lava.errors import QffsError
from qffs_lava.netfile import SYNAPTIC, ConvLayer, DenseLayer, FlattenLayer, MaxPoolLayer, Network
from qffs_lava.qann import encode_inputs

TAGS = {"lava": "fixed_pt", "lava-float": "floating_pt", "loihi2": "fixed_pt"}
MESSAGE_BITS = 24  # graded messages carry signed spikes and the integer input


def import_lava():
    """Import Lava's runtime, which sets multiprocessing's start method to 'fork' on import.

    If something (tqdm's lock, for one) already fixed the start method, Lava's import
    fails; resetting it first lets Lava set 'fork' itself.
    """
    import multiprocessing

    if multiprocessing.get_start_method(allow_none=True) is not None:
        multiprocessing.set_start_method(None, force=True)
    import lava.magma.core.process.process  # noqa: F401


def whc_order(shape_chw: Tuple[int, ...]) -> np.ndarray:
    """For each flat position in Lava's (W, H, C) order, the flat position in torch's (C, H, W) order."""
    if len(shape_chw) == 1:
        return np.arange(shape_chw[0])
    return np.arange(int(np.prod(shape_chw))).reshape(shape_chw).transpose(2, 1, 0).reshape(-1)


def lava_shape(shape_chw: Tuple[int, ...]) -> Tuple[int, ...]:
    return tuple(reversed(shape_chw)) if len(shape_chw) == 3 else tuple(shape_chw)


def to_lava_layout(values: np.ndarray, shape_chw: Tuple[int, ...]) -> np.ndarray:
    """(..., *shape_chw) arrays to (..., *lava_shape): the spatial axes reversed."""
    if len(shape_chw) != 3:
        return values
    n = values.ndim
    return values.transpose(*range(n - 3), n - 1, n - 2, n - 3)


def lava_pool_windows(in_chw, layer: MaxPoolLayer) -> np.ndarray:
    """The pool's window index with inputs and outputs flattened in (W, H, C) order."""
    params, out_chw = pool_windows(in_chw, layer.kernel_size, layer.stride, layer.padding)
    in_whc = whc_order(tuple(in_chw))
    chw_to_whc = np.empty_like(in_whc)
    chw_to_whc[in_whc] = np.arange(in_whc.size)
    rows = params.window_index[whc_order(out_chw)]
    return chw_to_whc[rows].astype(np.int32)


@dataclass
class LavaResult:
    """Pipelined steps 1..T+D per sample. spikes: per layer after the input, (steps, N, *shape_chw) int8."""

    output_counts: torch.Tensor  # (T + D, N, classes)
    pipeline_depth: int
    spikes: Optional[List[torch.Tensor]] = None

    def synchronous_counts(self) -> torch.Tensor:
        return self.output_counts[self.pipeline_depth:]


class LavaNetwork:
    """The Lava Processes of a network, built once and run for any number of samples.

    Use as a context manager; `run(x)` runs chunks of `chunk` samples per runtime call.
    """

    def __init__(self, network: Network, steps: int, backend: str = "lava", chunk: int = 50,
                 record_spikes: bool = False):
        if backend not in TAGS:
            raise QffsError(f"unknown Lava backend {backend!r}")
        if backend == "loihi2":
            require_lava_loihi()
        import_lava()
        from lava.proc.conv.process import Conv
        from lava.proc.dense.process import Dense
        from lava.proc.io.sink import RingBuffer as Sink
        from lava.proc.io.source import RingBuffer as Source

        from qffs_lava.procs.process import EventMaxPool, QffsNeuron

        self.network, self.backend, self.steps, self.chunk = network, backend, steps, chunk
        self.depth = network.pipeline_depth
        self.period = steps + self.depth
        self.shapes = network.shapes()
        buffer = chunk * self.period
        self.source = Source(data=np.zeros(lava_shape(self.shapes[0]) + (buffer,), dtype=np.int32))
        port, self.sinks, self.procs = self.source.s_out, [], [self.source]
        depth = 0
        flat_order = whc_order(self.shapes[0])  # torch's flat index of each of `port`'s flat positions
        for i, layer in enumerate(network.layers[1:], start=1):
            in_chw, out_chw = self.shapes[i - 1], self.shapes[i]
            if isinstance(layer, SYNAPTIC):
                depth += 1
                if isinstance(layer, DenseLayer):
                    synapse = Dense(weights=layer.weight[:, flat_order], num_message_bits=MESSAGE_BITS,
                                    name=f"layer{i}-dense")
                else:
                    synapse = Conv(weight=layer.weight[:, :, ::-1, ::-1].transpose(0, 3, 2, 1),
                                   input_shape=lava_shape(in_chw), stride=layer.stride[::-1],
                                   padding=layer.padding[::-1], dilation=layer.dilation[::-1],
                                   groups=layer.groups, num_message_bits=MESSAGE_BITS, name=f"layer{i}-conv")
                shape = lava_shape(out_chw)
                per_channel = (slice(None),) if len(out_chw) == 1 else (None, None, slice(None))
                neurons = QffsNeuron(
                    shape=shape, threshold=layer.neurons.threshold[per_channel],
                    v_init=layer.neurons.v_init[per_channel], z_max=layer.neurons.z_max,
                    bias=layer.bias[per_channel], bias_start=depth + 1, bias_steps=network.bias_steps,
                    period=self.period, name=f"layer{i}-qffs")
                port.connect(synapse.s_in)
                synapse.a_out.connect(neurons.a_in)
                port, flat_order = neurons.s_out, whc_order(out_chw)
                self.procs += [synapse, neurons]
            elif isinstance(layer, MaxPoolLayer):
                pool = EventMaxPool(in_shape=lava_shape(in_chw), out_shape=lava_shape(out_chw),
                                    window_index=lava_pool_windows(in_chw, layer), period=self.period,
                                    name=f"layer{i}-maxpool")
                port.connect(pool.s_in)
                port, flat_order = pool.s_out, whc_order(out_chw)
                self.procs.append(pool)
            elif isinstance(layer, FlattenLayer):
                port = port.reshape(lava_shape(out_chw))  # flat_order keeps the order before flattening
            if record_spikes or i == len(network.layers) - 1:
                sink = Sink(shape=lava_shape(out_chw), buffer=buffer)
                port.connect(sink.a_in)
                self.sinks.append((i, sink, flat_order))
        self._started = False

    def __enter__(self) -> "LavaNetwork":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the runtime (its processes and shared memory); safe to call more than once."""
        if self._started:
            self._started = False
            self.source.stop()

    def _run_config(self):
        from lava.magma.core.run_configs import Loihi2SimCfg

        if self.backend == "loihi2":
            from lava.magma.core.run_configs import Loihi2HwCfg

            return Loihi2HwCfg(select_tag=TAGS[self.backend])
        return Loihi2SimCfg(select_tag=TAGS[self.backend])

    def _input_buffer(self, x_int: np.ndarray) -> np.ndarray:
        """(W, H, C, chunk * period) int32: each sample's x_int for K steps, then zeros."""
        data = np.zeros((self.chunk, self.period) + lava_shape(self.shapes[0]), dtype=np.int32)
        data[:len(x_int), :self.network.bias_steps] = to_lava_layout(x_int, self.shapes[0])[:, None]
        data = data.reshape((self.chunk * self.period,) + data.shape[2:])
        return np.moveaxis(data, 0, -1)

    def run(self, x, progress=None) -> LavaResult:
        """Run dataset values x (N, *input shape) through Lava, `chunk` samples per runtime call."""
        from lava.magma.core.run_conditions import RunSteps

        x_int = encode_inputs(x, self.network.input).reshape(-1, *self.shapes[0]).numpy()
        recorded = {i: [] for i, _, _ in self.sinks}
        for start in range(0, len(x_int), self.chunk):
            part = x_int[start:start + self.chunk]
            data = self._input_buffer(part)
            if self._started:
                self.source.data.set(data)
            else:
                self.source.data.init = data
            self.source.run(condition=RunSteps(num_steps=self.chunk * self.period), run_cfg=self._run_config())
            self._started = True
            for i, sink, flat_order in self.sinks:
                got = np.moveaxis(np.asarray(sink.data.get()), -1, 0)  # (chunk * period, *lava shape)
                got = got.reshape((self.chunk, self.period) + got.shape[1:])[:len(part)]
                if got.ndim == 5:  # (N, steps, W, H, C) -> (N, steps, C, H, W)
                    got = got.transpose(0, 1, 4, 3, 2)
                else:  # flat in Lava's order -> torch's
                    got = got[..., np.argsort(flat_order)]
                recorded[i].append(np.rint(got).astype(np.int8))
            if progress is not None:
                progress(len(part))
        layers = {i: torch.from_numpy(np.concatenate(parts)).transpose(0, 1) for i, parts in recorded.items()}
        last = len(self.network.layers) - 1
        counts = layers[last].reshape(self.period, len(x_int), -1).to(torch.int64).cumsum(dim=0)
        spikes = [layers[i] for i in range(1, last + 1)] if len(layers) == last else None
        return LavaResult(counts, self.depth, spikes)


def require_lava_loihi() -> None:
    try:
        from lava.utils.loihi import is_installed
    except ImportError:
        is_installed = None
    if is_installed is None or not is_installed():
        raise QffsError(
            "the loihi2 backend needs lava-loihi (Intel's Loihi 2 extension of Lava, available to INRC "
            "members) and access to a Loihi 2 system; it is not installed here. Run --backend lava for "
            "the bit-accurate CPU simulation of the same network.")


@contextlib.contextmanager
def lava_network(network: Network, steps: int, backend: str = "lava", chunk: int = 50,
                 record_spikes: bool = False) -> Iterator[LavaNetwork]:
    """A LavaNetwork that is stopped however the block ends (error, Ctrl-C, or normally)."""
    built = LavaNetwork(network, steps, backend, chunk, record_spikes)
    try:
        yield built
    finally:
        built.stop()
