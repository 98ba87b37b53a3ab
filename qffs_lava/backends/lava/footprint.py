"""What a Lava run holds, estimated from the network before anything starts: its processes and its memory.

Lava's CPU simulator runs every Process as an operating-system process. A runtime of a
QffsNetwork is one process per neuron layer, synapse and max pool, plus the input source,
the spike recorders, Lava's runtime service and its shared memory manager; each worker
process (workers.py) holds one runtime at a time. What a worker adds to the command's own
memory, as the processes' summed proportional set size (PSS: shared pages divided among
their sharers) counts it, is about

    processes x PROCESS_BYTES                              a forked Python process
  + sum over connections of values x v x CHANNEL_SLOTS     Lava's channels, in /dev/shm
  + values x v of the arrays: weights (a batched dense synapse holds B copies, sparse),
    neuron state and parameters, the source's input for the chunk, the recorders' buffers

with v the bytes of a value (4 for fixed_pt's int32, 8 for floating_pt). The model was fitted
with bench/lava_memory.py (lava-nc 0.10.0, Python 3.10) to a ResNet-20 at B = 32 over 500
images (54 processes a worker, several runtimes one after another in each): it errs high for
small networks (a digits MLP's 11 processes: 0.35 GB against 0.23 GB measured).
"""

from __future__ import annotations

from dataclasses import dataclass

from qffs_lava.ir.layers import MaxPoolLayer, NeuronLayer
from qffs_lava.ir.network import Network

#: Messages each Lava channel holds (lava-nc's default is 64). The runs are synchronous (LoihiProtocol: every
#: process ends a step before any starts the next), so a channel never holds more than one; each slot is a port's
#: whole message in shared memory, and 64 of them took 4.5 GB of /dev/shm for a ResNet-20 at B = 32.
CHANNEL_SLOTS = 2

#: A Lava process's own memory (PSS) beyond its arrays and channels: a forked Python process with numpy and Lava,
#: about 21 MB in a worker's first runtime, more in later ones (bench/lava_memory.py).
PROCESS_BYTES = 32 * 2**20

#: Processes of a runtime besides the network's: the source, Lava's runtime service and shared memory manager.
RUNTIME_PROCESSES = 3


@dataclass(frozen=True)
class Footprint:
    """A worker's processes (itself and its runtime's) and their memory in bytes, and the part of it in /dev/shm."""

    processes: int
    bytes: int
    shared_memory: int

    def describe(self) -> str:
        return f"{self.processes} processes, about {gib(self.bytes)}"


def gib(count: int) -> str:
    return f"{count / 2**30:.1f} GB"


def worker_footprint(network: Network, batch: int, chunk: int, steps: int, record_all: bool,
                     value_bytes: int = 4) -> Footprint:
    """A worker running the network with `batch` samples side by side, `chunk` samples a runtime, T = `steps`;
    `record_all`: every layer's spikes are recorded (spikes, costs or activity asked for), else only the output's;
    `value_bytes`: 4 for fixed_pt models, 8 for floating_pt."""
    shapes = network.shapes
    values = [batch * _size(shape) for shape in shapes]
    processes, channel_values, arrays = 1 + RUNTIME_PROCESSES, values[0], 0
    for i, layer in enumerate(network.layers):
        if isinstance(layer, NeuronLayer):
            processes += 1 + len(layer.synapses)
            for synapse, source in zip(layer.synapses, layer.inputs):
                channel_values += values[source] + values[i]
                arrays += batch * int(synapse.weight.size) * 2  # a sparse block-diagonal: values and indices
            arrays += 4 * values[i]  # v, z, thresholds, pre-charges, biases
        elif isinstance(layer, MaxPoolLayer):
            processes += 1
            channel_values += values[layer.inputs[0]]
            arrays += 2 * values[i]
    recorded = [i for i in range(1, len(shapes)) if record_all or i == network.output_index]
    processes += len(recorded)
    channel_values += sum(values[i] for i in recorded)
    groups = -(-chunk // batch)
    period = steps + network.pipeline_depth
    arrays += groups * period * (values[0] + sum(values[i] for i in recorded))
    shared = channel_values * value_bytes * CHANNEL_SLOTS
    return Footprint(processes, processes * PROCESS_BYTES + shared + arrays * value_bytes, shared)


def _size(shape) -> int:
    size = 1
    for n in shape:
        size *= n
    return size


def available_memory() -> tuple[int, int]:
    """(memory, /dev/shm space) free now, in bytes: /proc/meminfo's MemAvailable and the tmpfs's free space (Lava's
    channels live there; a tmpfs is half the memory unless set otherwise). Where unknown, a very large number."""
    import os

    memory = shm = 2**62
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    memory = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        stat = os.statvfs("/dev/shm")
        shm = stat.f_bavail * stat.f_frsize
    except OSError:
        pass
    return memory, shm
