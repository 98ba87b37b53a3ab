"""Small random integer QFFS networks for exactness tests (valid by construction): chains and graphs."""

import numpy as np

from qffs_lava.ir.layers import (
    ConvSynapse,
    DenseSynapse,
    FlattenLayer,
    InputLayer,
    MaxPoolLayer,
    NeuronLayer,
    Neurons,
)
from qffs_lava.ir.network import Network


def neurons(rng, channels, bits, bias_steps):
    threshold = rng.integers(20, 200, size=channels)
    return Neurons(threshold, threshold // 2, 2**bits - 1, bias_steps)


def weights(rng, shape):
    return 2 * rng.integers(-20, 21, size=shape)


def conv_layer(rng, shape, synapses, inputs, bits, K):
    return NeuronLayer(shape, tuple(synapses), rng.integers(-40, 41, shape[0]), neurons(rng, shape[0], bits, K),
                       tuple(inputs) if inputs is not None else None)


def random_network(rng, kind: str, bits: int = 2) -> Network:
    """A chain. kind: 'dense' (an MLP), 'conv' (conv -> maxpool -> conv (stride, groups) -> maxpool (padding) ->
    flatten -> dense), or 'conv-only' (ends in a 1x1-output conv)."""
    K = 2**bits - 1
    if kind == "dense":
        sizes = [int(rng.integers(3, 12)) for _ in range(4)]
        layers = [InputLayer((sizes[0],), 16.0)]
        for n_in, n_out in zip(sizes, sizes[1:]):
            layers.append(conv_layer(rng, (n_out,), [DenseSynapse(weights(rng, (n_out, n_in)))], None, bits, K))
        return Network(layers)
    c0, size = int(rng.integers(1, 3)), int(rng.integers(6, 10))
    layers = [InputLayer((c0, size, size), 16.0)]
    c1 = 4
    layers.append(conv_layer(rng, (c1, size, size), [ConvSynapse(weights(rng, (c1, c0, 3, 3)), (1, 1), (1, 1))],
                             None, bits, K))
    layers.append(MaxPoolLayer((2, 2), (2, 2), (0, 0)))
    h = size // 2
    if kind == "conv-only":
        layers.append(conv_layer(rng, (3, 1, 1), [ConvSynapse(weights(rng, (3, c1, h, h)))], None, bits + 1, K))
        return Network(layers)
    c2 = 4
    h2 = (h + 2 - 3) // 2 + 1
    layers.append(conv_layer(rng, (c2, h2, h2), [ConvSynapse(weights(rng, (c2, c1 // 2, 3, 3)), (2, 2), (1, 1),
                                                             (1, 1), 2)], None, bits, K))
    layers.append(MaxPoolLayer((2, 2), (1, 1), (1, 1)))
    h3 = (h2 + 2 - 2) // 1 + 1
    layers.append(FlattenLayer())
    n_out = 5
    layers.append(conv_layer(rng, (n_out,), [DenseSynapse(weights(rng, (n_out, c2 * h3 * h3)))], None, bits + 1, K))
    return Network(layers)


def _conv_into(rng, source_shape, out_shape, identity_ok):
    """A random conv synapse mapping source_shape to out_shape (same size or halved), or None if none fits."""
    cin, h, w = source_shape
    cout, ho, wo = out_shape
    if (h, w) == (ho, wo):
        if identity_ok and cin == cout and rng.random() < 0.4:  # an identity shortcut: a grouped 1x1 conv
            return ConvSynapse(2 * rng.integers(1, 40, size=(cout, 1, 1, 1)), groups=cout)
        kernel = int(rng.choice([1, 3]))
        return ConvSynapse(weights(rng, (cout, cin, kernel, kernel)), (1, 1), (kernel // 2,) * 2)
    if (h, w) == (2 * ho, 2 * wo):  # a strided projection
        kernel = int(rng.choice([1, 3]))
        return ConvSynapse(weights(rng, (cout, cin, kernel, kernel)), (2, 2), (kernel // 2,) * 2)
    return None


def random_graph(rng, bits: int = 2, layers_wanted: int = 7) -> Network:
    """A random residual graph: conv layers summing one to three synapses from earlier layers (identity and
    strided projection shortcuts, the input included), max pools inside branches, fan-out, flattens, and
    dense layers of several synapses ending in the output."""
    K = 2**bits - 1
    size = int(rng.choice([4, 6, 8]))
    layers = [InputLayer((int(rng.integers(1, 3)), size, size), 16.0)]
    shapes = [layers[0].shape]
    channels = int(rng.integers(2, 5))
    # a first conv layer so that every later layer has spiking sources
    layers.append(conv_layer(rng, (channels, size, size), [_conv_into(rng, shapes[0], (channels, size, size),
                                                                      False)], (0,), bits, K))
    shapes.append((channels, size, size))
    while len(layers) < layers_wanted:
        choice = rng.random()
        spatial = [i for i, s in enumerate(shapes) if len(s) == 3]
        if choice < 0.2:  # a max pool of a spiking map, same size or halved
            source = int(rng.choice([i for i in spatial if i > 0]))
            c, h, w = shapes[source]
            pool = MaxPoolLayer((2, 2), (2, 2), (0, 0), (source,)) if h % 2 == 0 and h >= 2 and rng.random() < 0.6 \
                else MaxPoolLayer((3, 3), (1, 1), (1, 1), (source,))
            layers.append(pool)
            shapes.append(pool.output_shape([shapes[source]]))
            continue
        target = shapes[int(rng.choice(spatial))]
        out = (int(rng.integers(2, 5)), target[1], target[2])
        candidates = [i for i in spatial if _conv_into(np.random.default_rng(0), shapes[i], out, False) is not None]
        chosen = list(rng.choice(candidates, size=min(len(candidates), int(rng.integers(1, 4))), replace=False))
        synapses = [_conv_into(rng, shapes[i], out, True) for i in chosen]
        layers.append(conv_layer(rng, out, synapses, chosen, bits, K))
        shapes.append(out)
    # flatten two maps, then a hidden dense layer and the output, each of several synapses
    maps = [i for i, s in enumerate(shapes) if len(s) == 3 and i > 0]
    flats = []
    for source in sorted(set(int(i) for i in rng.choice(maps, size=min(2, len(maps)), replace=False))):
        layers.append(FlattenLayer((source,)))
        flats.append(len(layers) - 1)
        shapes.append((int(np.prod(shapes[source])),))
    hidden = int(rng.integers(3, 8))
    layers.append(conv_layer(rng, (hidden,), [DenseSynapse(weights(rng, (hidden, shapes[i][0]))) for i in flats],
                             flats, bits, K))
    shapes.append((hidden,))
    sources = [len(layers) - 1] + flats[:1]
    n_out = 5
    layers.append(conv_layer(rng, (n_out,), [DenseSynapse(weights(rng, (n_out, shapes[i][0]))) for i in sources],
                             sources, bits + 1, K))
    return Network(layers)


def random_inputs(rng, network: Network, n: int):
    """Dataset-like values in [0, 1] on the 1/16 grid."""
    return rng.integers(0, 17, size=(n,) + tuple(network.input.shape)) / 16.0
