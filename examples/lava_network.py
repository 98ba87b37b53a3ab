"""A QFFS net.h5 inside your own Lava graph: source -> QffsNetwork -> sink, run with Loihi2SimCfg.

    python examples/lava_network.py digits.h5 --dataset digits --samples 10

QffsNetwork is one (hierarchical) Lava Process, built from net.h5 like lava-dl's
netx.hdf5.Network. Each sample gets `reset_interval` = T + D steps: its graded input
in the first K steps, then T + D - K silent steps while the spikes pass the D layers;
every neuron resets when the next sample starts. A sample's class is the output
neuron with the most net spikes.
"""

import argparse

from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.io.sink import RingBuffer as Sink
from lava.proc.io.source import RingBuffer as Source

from qffs_lava.ann.datasets import load_dataset
from qffs_lava.backends.lava.procs.network import QffsNetwork
from qffs_lava.ir.netfile import read_net


def run_network(net_path, images, steps):
    """Run images (N, *input shape; dataset values in [0, 1]) for T = steps each; (network Process, output spikes)."""
    network = read_net(net_path)  # net.h5 as read: its layers, depth D and input window K
    net = QffsNetwork(net_config=network, reset_interval=steps + network.pipeline_depth)
    source = Source(data=net.source_data(images))  # (W, H, C, N * interval) graded integers
    sink = Sink(shape=net.out.shape, buffer=source.data.shape[-1])
    source.s_out.connect(net.inp)
    net.out.connect(sink.a_in)
    try:
        sink.run(condition=RunSteps(num_steps=source.data.shape[-1]), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        return net, sink.data.get()  # (*out shape, N * interval): the output layer's signed spikes
    finally:
        sink.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("net", help="a net.h5 written by qffs-export")
    parser.add_argument("--dataset", default="digits", help="whose test split to classify (default digits)")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--steps", type=int, default=16, help="T, time steps per sample (default 16)")
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args(argv)

    images, labels = load_dataset(args.dataset, "test", args.data_dir)
    images, labels = images[:args.samples].numpy(), labels[:args.samples].numpy()
    net, spikes = run_network(args.net, images, args.steps)
    predictions = net.output_counts(spikes).reshape(len(images), -1).argmax(axis=1)
    print(net)
    print(f"predicted {predictions.tolist()}")
    print(f"labels    {labels.tolist()}")
    print(f"accuracy  {(predictions == labels).mean():.2%} on {len(labels)} {args.dataset} test images, "
          f"{args.steps} steps each")


if __name__ == "__main__":
    main()
