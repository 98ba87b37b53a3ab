"""The integer QFFS network: its layer types, the graph and its executor, net.h5, and Loihi 2's ranges.

    layers.py   one dataclass per layer and synapse type: fields, shape rule, net.h5 keys
    network.py  Network: the graph, shape inference, pipeline depths, the executor
    netfile.py  read_net (the single validator) and write_net
    loihi.py    Loihi 2's ranges and the checks against them
    hdf5.py     typed, defensive reads of HDF5 groups
"""

from qffs_lava.ir.layers import (  # noqa: F401
    ConvSynapse,
    DenseSynapse,
    FlattenLayer,
    InputLayer,
    MaxPoolLayer,
    NeuronLayer,
    Neurons,
)
from qffs_lava.ir.netfile import read_net, write_net  # noqa: F401
from qffs_lava.ir.network import MODES, Network  # noqa: F401
