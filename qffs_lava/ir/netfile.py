"""net.h5: the integer QFFS network in lava-dl netx's HDF5 layout plus QFFS fields (docs/format.md).

Group `layer` holds subgroups "0".."N-1" in topological order, each with a string `type`
read by that type's class (`layers.LAYER_TYPES`); a layer's optional `inputs` lists the
earlier layers it reads (absent: the one before). Group `meta` records the format name,
the version (1 for a chain, 2 when a file uses `inputs` or `synapse/j`, 3 when its output
is a read-out) and what the exporter measured. `read_net` is the single validator: every backend and `qffs-inspect`
read through it, and any defect raises one QffsFormatError naming the layer and the key.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Dict, List

import h5py
import numpy as np

from qffs_lava.errors import QffsFormatError
from qffs_lava.fileio import kind_of_file, write_atomically
from qffs_lava.ir.hdf5 import GroupReader, is_stored_group, put_ints
from qffs_lava.ir.layers import LAYER_TYPES, Layer
from qffs_lava.ir.network import Network

NET_FORMAT = "qffs"
NET_VERSIONS = (1, 2, 3)


def net_version(network: Network) -> int:
    """The oldest version that holds the network, so older readers read what they can: 3 where the output is a
    read-out (`layers.Readout`), else 1 for a chain of single-synapse layers, else 2."""
    if not network.layers[-1].neurons.fires:
        return 3
    return 1 if network.is_chain() else 2


def write_net(path: str | Path, network: Network) -> None:
    """Write net.h5 atomically: made in memory, then written whole (fileio.write_atomically)."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        layers = f.create_group("layer")
        for i, layer in enumerate(network.layers):
            group = layers.create_group(str(i))
            layer.write(group)
            if i and tuple(layer.inputs) != (i - 1,):
                put_ints(group, "inputs", layer.inputs)
        meta = f.create_group("meta")
        for key, value in {**network.meta, "format": NET_FORMAT, "version": net_version(network)}.items():
            meta.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
    write_atomically(path, buffer.getvalue())


def read_net(path: str | Path) -> Network:
    """Load and validate net.h5; any defect raises QffsFormatError naming the layer and key.

    Example:
        >>> network = qffs.read_net("digits.h5")
        >>> network.shapes, network.pipeline_depth, network.bias_steps   # per layer; D; K
    """
    path = Path(path)
    kind = kind_of_file(path, "net file", QffsFormatError, give="give the net.h5 that qffs-export wrote")
    if kind in ("a zip archive", "a pickle"):
        raise QffsFormatError(f"{path} is {kind}, as a PyTorch model file is, not a net file: run "
                              f"`qffs-export {path} NET.h5` first and give NET.h5")
    try:
        f = h5py.File(path, "r")
    except Exception as err:
        raise QffsFormatError(f"{path} is not a readable HDF5 file ({type(err).__name__})") from None
    with f:
        try:
            meta = _read_meta(f)
            layers = _read_layers(f, meta["version"])
        except QffsFormatError:
            raise
        except Exception as err:  # h5py's errors on a damaged file
            raise QffsFormatError(f"{path} is damaged: {type(err).__name__}: {str(err)[:200]}") from None
    return Network(layers, meta)


def _read_layer(group: h5py.Group, index: int, version: int) -> Layer:
    reader = GroupReader(group, f"layer {index}")
    kind = reader.string("type")
    reader.where = f"layer {index} ({kind})"
    if kind not in LAYER_TYPES:
        raise reader.fail("type", f"one of {', '.join(LAYER_TYPES)}", repr(kind))
    inputs = None
    if reader.has("inputs"):
        if version < 2:
            raise reader.fail("inputs", "no 'inputs' in a version 1 file (it is a version 2 key)")
        inputs = tuple(int(j) for j in reader.ints("inputs", ndim=1))
    if reader.has("synapse") and version < 2:
        raise reader.fail("synapse", "no 'synapse' group in a version 1 file (it is a version 2 key)")
    try:
        return LAYER_TYPES[kind].read(reader, kind, inputs, version)
    except QffsFormatError as err:
        if err.where is not None:
            raise
        raise QffsFormatError.at(reader.where, err.key, str(err)) from None


def _read_layers(f: h5py.File, version: int) -> List[Layer]:
    if not is_stored_group(f, "layer"):
        raise QffsFormatError("group 'layer' missing", where="file", key="layer")
    count = len(f["layer"])
    names = [str(i) for i in range(count)]
    if sorted(f["layer"].keys(), key=lambda k: (len(k), k)) != names:
        raise QffsFormatError(f"group 'layer' must hold subgroups 0..{count - 1}, got {sorted(f['layer'].keys())[:20]}",
                              where="file", key="layer")
    layers = []
    for i in range(count):
        if not is_stored_group(f["layer"], str(i)):
            raise QffsFormatError.at("group 'layer'", str(i), "expected a group stored in this file")
        layers.append(_read_layer(f["layer"][str(i)], i, version))
    return layers


def _netx_neuron_types(f: h5py.File) -> List[str]:
    """The neuron types of a lava-dl netx file's layers (CUBA, ...), read without trusting the file."""
    found = set()
    if is_stored_group(f, "layer"):
        for group in f["layer"].values():
            try:
                found.add(GroupReader(group, "").child("neuron", "").string("type"))
            except (QffsFormatError, TypeError, AttributeError):
                continue
    return sorted(found)


def _read_meta(f: h5py.File) -> Dict[str, Any]:
    if "meta" not in f:
        neuron_types = _netx_neuron_types(f)
        if neuron_types and "QFFS" not in neuron_types:
            raise QffsFormatError(f"this is a lava-dl netx network of {', '.join(neuron_types)} neurons (no group "
                                  "'meta'), not a QFFS network: qffs-lava runs the net files qffs-export writes; run "
                                  "this one with lava.lib.dl.netx.hdf5.Network", where="file", key="meta")
        raise QffsFormatError("group 'meta' missing: not a QFFS net file (make one with qffs-export)", where="file",
                              key="meta")
    meta = {}
    for key, value in f["meta"].attrs.items():
        if isinstance(value, (bytes, np.bytes_)):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str) and value[:1] in "[{":
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        meta[key] = value.item() if isinstance(value, np.generic) else value
    if meta.get("format") != NET_FORMAT:
        raise QffsFormatError.at("meta", "format", f"expected '{NET_FORMAT}', got {meta.get('format')!r}: not a QFFS "
                                 "net file (make one with qffs-export)")
    if isinstance(meta.get("version"), bool) or meta.get("version") not in NET_VERSIONS:
        raise QffsFormatError.at("meta", "version", f"this qffs-lava reads versions "
                                 f"{', '.join(map(str, NET_VERSIONS))}, got {meta.get('version')!r}")
    return meta
