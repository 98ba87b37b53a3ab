"""Benchmark: the Lava backend's speed, with 1 and N workers, and against a stock Lava network of the same layers.

    python bench/lava_speed.py mnist_lenet.h5 --dataset mnist --samples 200

1. `qffs-run --backend lava` on the first N test samples with --workers 1 and with
   --workers W (default: the cores here): samples per second and the speed-up (target:
   2 workers at least 1.6 times as fast as 1 on a 2-core machine); the results must be
   identical.
2. The cost of one Lava step of the QffsNetwork against a stock Lava network with the
   same layers built from lava-nc's Processes: the same Dense and Conv synapses into LIF
   neurons (fixed_pt), each max pool replaced by a 2x2 stride-2 depthwise Conv, since
   lava-nc has no pool. Both get the same graded input from a RingBuffer and run the
   same steps (`lava_neuron_speed.time_steps`); the best of a few repeats is reported per
   step (target: QffsNetwork at most 1.2 times the stock network).
"""

import argparse
import time

import numpy as np
import torch
from lava_neuron_speed import time_steps

from qffs_lava.backends import simulate
from qffs_lava.backends.lava.adapter import import_lava
from qffs_lava.distributed import usable_cores
from qffs_lava.ir.layers import DenseSynapse
from qffs_lava.ir.netfile import read_net


def workers_figures(network, x, steps: int, workers: int) -> dict:
    """Wall time of the lava backend with 1 worker and with `workers` on the same samples; identical results
    asserted."""
    figures = {"samples": len(x), "steps": steps, "workers": workers}
    results = {}
    for n in (1, workers):
        start = time.perf_counter()
        results[n] = simulate(network, x, steps, "lava", workers=n)
        seconds = time.perf_counter() - start
        figures[f"workers_{n}_s"] = seconds
        figures[f"workers_{n}_samples_per_s"] = len(x) / seconds
    figures["identical"] = bool(torch.equal(results[1].output_counts, results[workers].output_counts))
    assert figures["identical"], "the results differ between 1 worker and several"
    figures["speedup"] = figures["workers_1_s"] / figures[f"workers_{workers}_s"]
    return figures


def stock_network(network, source_port):
    """lava-nc Dense/Conv into LIF per neuron layer (a read-out's LIF never fires), a 2x2 stride-2 depthwise Conv
    per max pool."""
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense
    from lava.proc.lif.process import LIF

    from qffs_lava.backends.lava.layout import lava_conv_weight, lava_shape, whc_order
    from qffs_lava.backends.lava.procs.network import MESSAGE_BITS

    class Stock:
        def input(self, index, layer):
            return source_port, whc_order(layer.shape)

        def neuron(self, index, layer, sources, vth=None):
            shape = network.shapes[index]
            channel = (slice(None),) if len(shape) == 1 else (None, None, slice(None))
            vth = int(layer.neurons.threshold.max()) if vth is None else vth
            lif = LIF(shape=lava_shape(shape), du=4095, dv=0, vth=vth,
                      bias_mant=np.broadcast_to(layer.bias[channel], lava_shape(shape)).copy(), bias_exp=0)
            for synapse, source, (port, flat_order) in zip(layer.synapses, layer.inputs, sources):
                if isinstance(synapse, DenseSynapse):
                    process = Dense(weights=synapse.weight[:, flat_order], num_message_bits=MESSAGE_BITS)
                else:
                    process = Conv(weight=lava_conv_weight(synapse.weight),
                                   input_shape=lava_shape(network.shapes[source]), stride=synapse.stride[::-1],
                                   padding=synapse.padding[::-1], dilation=synapse.dilation[::-1],
                                   groups=synapse.groups, num_message_bits=MESSAGE_BITS)
                port.connect(process.s_in)
                process.a_out.connect(lif.a_in)
            return lif.s_out, whc_order(shape)

        def readout(self, index, layer, sources):
            """A read-out output: a LIF whose threshold (the largest fixed_pt LIF takes) it does not reach."""
            return self.neuron(index, layer, sources, vth=2**17 - 1)

        def maxpool(self, index, layer, source):
            port, _ = source
            in_shape = network.shapes[layer.inputs[0]]
            channels = in_shape[0]
            pool = Conv(weight=np.ones((channels, 2, 2, 1), dtype=np.int32), input_shape=lava_shape(in_shape),
                        stride=(2, 2), groups=channels, num_message_bits=MESSAGE_BITS)
            port.connect(pool.s_in)
            return pool.a_out, whc_order(network.shapes[index])

        def flatten(self, index, layer, source):
            port, flat_order = source
            return port.reshape(lava_shape(network.shapes[index])), flat_order

    return network.propagate(Stock())[-1][0]


def step_cost_figures(network, x, steps: int = 200, repeats: int = 3) -> dict:
    """Per-step time of the QffsNetwork and of the stock network on the same input, and their ratio."""
    import_lava()
    from qffs_lava.backends.lava.procs.network import QffsNetwork

    period = 16 + network.pipeline_depth
    probe = QffsNetwork(network, reset_interval=period)
    data = probe.source_data(x[:max(1, steps // period + 1)])

    def qffs(port):
        port.connect(QffsNetwork(network, reset_interval=period).inp)

    qffs_s = time_steps(qffs, data, steps, repeats)
    stock_s = time_steps(lambda port: stock_network(network, port), data, steps, repeats)
    return {"steps": steps, "qffs_step_s": qffs_s, "stock_step_s": stock_s, "ratio": qffs_s / stock_s}


def measure(network, x, steps: int = 16, workers: int = 2, repeats: int = 3) -> dict:
    """Both parts: {"workers": workers_figures, "step_cost": step_cost_figures}."""
    return {"workers": workers_figures(network, x, steps, workers),
            "step_cost": step_cost_figures(network, x, repeats=repeats)}


def report(figures: dict) -> str:
    workers, cost = figures["workers"], figures["step_cost"]
    w = workers["workers"]
    return "\n".join([
        f"qffs-run --backend lava, {workers['samples']} samples, T = {workers['steps']}: "
        f"--workers 1 {workers['workers_1_samples_per_s']:.2f} samples/s ({workers['workers_1_s']:.1f} s), "
        f"--workers {w} {workers[f'workers_{w}_samples_per_s']:.2f} samples/s ({workers[f'workers_{w}_s']:.1f} s): "
        f"{workers['speedup']:.2f} times as fast (target >= 1.6 with 2), results identical: {workers['identical']}",
        f"one Lava step ({cost['steps']} steps, fixed_pt): QffsNetwork {cost['qffs_step_s'] * 1e3:.2f} ms, stock "
        f"lava-nc network of the same layers {cost['stock_step_s'] * 1e3:.2f} ms, ratio {cost['ratio']:.2f} "
        f"(target <= 1.2)",
    ])


def main():
    from qffs_lava.ann.datasets import load_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("net", help="a net.h5 (the MNIST LeNet for the README's figures)")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--steps", type=int, default=16, help="T for the qffs-run part")
    parser.add_argument("--workers", type=int, default=usable_cores())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    network = read_net(args.net)
    x, _ = load_dataset(args.dataset, "test", args.data_dir)
    x = x[:args.samples].numpy()
    print(report(measure(network, x, args.steps, args.workers, args.repeats)))


if __name__ == "__main__":
    main()
