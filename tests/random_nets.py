"""Small random integer QFFS networks for exactness tests (valid by construction)."""


from qffs_lava.netfile import ConvLayer, DenseLayer, FlattenLayer, InputLayer, MaxPoolLayer, Network, Neurons


def neurons(rng, channels, bits, bias_steps):
    threshold = rng.integers(20, 200, size=channels)
    return Neurons(threshold, threshold // 2, 2**bits - 1, bias_steps)


def weights(rng, shape):
    return 2 * rng.integers(-20, 21, size=shape)


def random_network(rng, kind: str, bits: int = 2) -> Network:
    """kind: 'dense' (an MLP), 'conv' (conv -> maxpool -> conv (stride, groups) -> maxpool (padding) ->
    flatten -> dense), or 'conv-only' (ends in a 1x1-output conv)."""
    K = 2**bits - 1
    if kind == "dense":
        sizes = [int(rng.integers(3, 12)) for _ in range(4)]
        layers = [InputLayer((sizes[0],), 16.0)]
        for n_in, n_out in zip(sizes, sizes[1:]):
            layers.append(DenseLayer((n_out,), weights(rng, (n_out, n_in)), rng.integers(-40, 41, n_out),
                                     neurons(rng, n_out, bits, K)))
        return Network(layers)
    c0, size = int(rng.integers(1, 3)), int(rng.integers(6, 10))
    layers = [InputLayer((c0, size, size), 16.0)]
    c1 = 4
    layers.append(ConvLayer((c1, size, size), weights(rng, (c1, c0, 3, 3)), rng.integers(-40, 41, c1), (1, 1),
                            (1, 1), (1, 1), 1, neurons(rng, c1, bits, K)))
    layers.append(MaxPoolLayer((2, 2), (2, 2), (0, 0)))
    h = size // 2
    if kind == "conv-only":
        layers.append(ConvLayer((3, 1, 1), weights(rng, (3, c1, h, h)), rng.integers(-40, 41, 3), (1, 1), (0, 0),
                                (1, 1), 1, neurons(rng, 3, bits + 1, K)))
        return Network(layers)
    c2 = 4
    h2 = (h + 2 - 3) // 2 + 1
    layers.append(ConvLayer((c2, h2, h2), weights(rng, (c2, c1 // 2, 3, 3)), rng.integers(-40, 41, c2), (2, 2),
                            (1, 1), (1, 1), 2, neurons(rng, c2, bits, K)))
    layers.append(MaxPoolLayer((2, 2), (1, 1), (1, 1)))
    h3 = (h2 + 2 - 2) // 1 + 1
    layers.append(FlattenLayer())
    n_out = 5
    layers.append(DenseLayer((n_out,), weights(rng, (n_out, c2 * h3 * h3)), rng.integers(-40, 41, n_out),
                             neurons(rng, n_out, bits + 1, K)))
    return Network(layers)


def random_inputs(rng, network: Network, n: int):
    """Dataset-like values in [0, 1] on the 1/16 grid."""
    return rng.integers(0, 17, size=(n,) + tuple(network.input.shape)) / 16.0
