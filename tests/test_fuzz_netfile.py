"""Fuzzing net files: every mutation of a valid file either loads and runs, or fails with QffsFormatError.

Files: a dense chain, a conv chain (version 1) and a residual graph (version 2: `inputs`,
`synapse/j`). Mutations: truncation, dropped keys, wrong dtypes and shapes, NaN and
infinities, huge and negative values, unknown or swapped types, links to other files,
meta format and version. Each case is bounded in time.
"""

import shutil
import signal
from contextlib import contextmanager

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from profiles import examples
from random_nets import random_graph, random_inputs, random_network

import qffs_lava as qffs
from qffs_lava.errors import QffsFormatError
from qffs_lava.ir.netfile import read_net, write_net

CASE_SECONDS = 20


@contextmanager
def time_limit(seconds):
    def fail(signum, frame):
        raise TimeoutError(f"a case ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    files = {}
    for kind in ("dense", "conv", "graph"):
        rng = np.random.default_rng(5)
        network = random_graph(rng) if kind == "graph" else random_network(rng, kind)
        network.meta.update({"dataset": "digits", "K": network.bias_steps})
        files[kind] = folder / f"{kind}.h5"
        write_net(files[kind], network)
    return files


def dataset_paths(path):
    paths = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: paths.append(name) if isinstance(item, h5py.Dataset) else None)
    return sorted(paths)


def all_paths(path):
    paths = []
    with h5py.File(path, "r") as f:
        f.visit(paths.append)
    return sorted(paths)


REPLACEMENTS = st.sampled_from([
    np.float64(np.nan), np.array([np.inf, 1.0]), np.float64(-np.inf), np.int64(2**62), np.int64(-(2**40)),
    np.int64(0), np.int64(-1), np.int64(-7), np.array([], dtype=np.int64), np.zeros((2, 3, 4, 5, 6)),
    np.array([1.5, 2.25]), np.array(b"garbage"), np.array([True, False]), np.uint64(2**64 - 1),
    np.full((3,), 2**31, dtype=np.int64), np.array(["text".encode()] * 3), np.int64(10**6),
])

MUTATIONS = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 0.99)),
    st.tuples(st.just("drop"), st.integers(0, 10**6)),
    st.tuples(st.just("replace"), st.integers(0, 10**6), REPLACEMENTS),
    st.tuples(st.just("scale"), st.integers(0, 10**6), st.sampled_from([-1, 0, 3, 1000, 2**20])),
    st.tuples(st.just("type"), st.integers(0, 10**6), st.sampled_from(["pool", "DENSE", "", "residual", "dense",
                                                                       "conv", "maxpool", "flatten", "input"])),
    st.tuples(st.just("link"), st.integers(0, 10**6)),
    st.tuples(st.just("meta"), st.sampled_from(["format", "version"]), st.sampled_from(["qffs", 2, "netx", 1])),
)


def mutate(path, mutation):
    """Apply the mutation; the path inside the file it changed (None for a truncation)."""
    kind = mutation[0]
    if kind == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[:int(len(data) * mutation[1])])
        return None
    with h5py.File(path, "r+") as f:
        if kind == "meta":
            f["meta"].attrs[mutation[1]] = mutation[2]
            return "meta"
        if kind == "drop":
            paths = all_paths(path)
            target = paths[mutation[1] % len(paths)]
            del f[target]
            return target
        datasets = []
        f.visititems(lambda name, item: datasets.append(name) if isinstance(item, h5py.Dataset) else None)
        target = sorted(datasets)[mutation[1] % len(datasets)]
        if kind == "replace":
            del f[target]
            f[target] = mutation[2]
        elif kind == "scale":
            value = f[target][()]
            del f[target]
            f[target] = value * mutation[2] if np.asarray(value).dtype.kind in "iuf" else value
        elif kind == "type":
            types = sorted(name for name in datasets if name.endswith("type"))
            name = types[mutation[1] % len(types)]
            del f[name]
            f[name] = np.array([mutation[2].encode()])
            return name
        elif kind == "link":
            del f[target]
            f[target] = h5py.ExternalLink("/etc/hostname", "/anything")
        return target


def load_and_run(path, network_inputs):
    """What a user's command does with the file: validate, then run the torch backend and the QANN for T = K + 3
    steps (any T >= K is valid)."""
    network = read_net(path)
    x = random_inputs(np.random.default_rng(0), network, 3) if network_inputs is None else network_inputs
    report = qffs.run(network, x, None, network.bias_steps + 3, "torch", progress=False)
    assert len(report.output_counts) == 3


@settings(max_examples=examples(600), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["dense", "conv", "graph"]), mutation=MUTATIONS)
@pytest.mark.e2e
def test_mutated_net_files_load_and_run_or_raise_qffs_format_error(valid_files, tmp_path, kind, mutation):
    """Either the file still runs, or the validator refuses it with a QffsFormatError (nothing else, and not a
    later error from the run) naming the place and the key; only a truncated file may be refused as a whole."""
    path = tmp_path / f"mutated-{kind}.h5"
    shutil.copy(valid_files[kind], path)
    target = mutate(path, mutation)
    with time_limit(CASE_SECONDS):
        try:
            load_and_run(path, None)
        except QffsFormatError as err:
            assert type(err) is QffsFormatError, f"{mutation} raised {type(err).__name__}: {err}"
            if mutation[0] == "truncate" and err.key is None:
                assert err.where is None and str(path) in str(err)  # not readable as HDF5, or damaged
            else:
                assert err.where is not None and err.key is not None, f"{mutation}: {err} names no place and key"
                assert err.key in str(err) and (err.where == "file" or err.where in str(err)), f"{mutation}: {err}"
                if target is not None and target.startswith("layer/"):
                    assert err.where.startswith("layer") or err.where == "file", f"{mutation} on {target}: {err}"
        except Exception as err:  # anything else is a bug the fuzzer found
            raise AssertionError(f"{mutation} raised {type(err).__name__}: {err}") from err


def test_the_unmutated_files_run(valid_files):
    for path in valid_files.values():
        load_and_run(path, None)


def test_errors_name_the_layer_and_key(valid_files, tmp_path):
    path = tmp_path / "n.h5"
    shutil.copy(valid_files["dense"], path)
    with h5py.File(path, "r+") as f:
        del f["layer/2/neuron/vThMant"]
        f["layer/2/neuron/vThMant"] = np.array([0, 5, 5])
    with pytest.raises(QffsFormatError, match=r"layer 2 \(dense\) neuron key 'vThMant': expected values >= 1"):
        read_net(path)
    shutil.copy(valid_files["dense"], path)
    with h5py.File(path, "r+") as f:
        del f["layer/1/weight"]
        f["layer/1/weight"] = np.full((3, 3), np.nan)
    with pytest.raises(QffsFormatError, match=r"layer 1 \(dense\) key 'weight': expected integers"):
        read_net(path)
