"""qffs-lava: quantized ANNs (LSQ, 2-bit) converted to fast QFFS spiking networks for Lava and Loihi 2.

The verbs of the pipeline, at the top of the package:

    import qffs_lava as qffs

    qffs.train("digits", "mlp", out="digits.pt")          # float, LSQ and hardware-exact training
    qffs.export("digits.pt", "digits.h5")                 # the integer spiking network, net.h5
    result = qffs.run("digits.h5", images, labels, steps=8, backend="lava")
    result.accuracy_by_step, result.equal_from_step       # per step t, and when SNN == QANN
    result.settled_at, result.decided_at                  # per sample: last spike, final prediction
    qffs.run("digits.h5", images, labels, steps="auto")   # until every sample has settled

    images, labels = qffs.load_dataset("digits", "test")  # (N, C, H, W) in [0, 1], class indices
    qffs.from_torch(module, input_shape)                  # your own nn.Module as a QFFS graph
    qffs.read_net("digits.h5")                            # the network, validated
    qffs.TorchNetwork(network)                            # its QANN and SNN in PyTorch, CPU or GPU
    qffs.QffsNetwork(net_config="digits.h5")              # the network as one Lava Process

Each is imported on first use, so `import qffs_lava` loads neither PyTorch nor Lava. `export` is the
exporter's (export/, installed with the library), which adds it as the entry point `export` of the group
`qffs_lava.verbs` (pyproject.toml): the exporter is built on the library, and the library never imports it.

The library speaks through `logging` (messages.py): the logger "qffs_lava" (and the exporter's, named after its
package) at INFO, written on stderr where the program has set up no logging of its own. To silence or redirect:

    logging.getLogger("qffs_lava").setLevel(logging.WARNING)    # warnings only; the exporter's logger likewise
    logging.getLogger("qffs_lava").addHandler(logging.FileHandler("qffs.log"))

What to act on (fewer Lava workers than asked, a model near chance) is a `qffs.QffsWarning` (`warnings`).
"""

import importlib

from qffs_lava import messages as messages  # the library's logging, set up before any module logs

__version__ = "0.1.0"

#: Public name -> (module, attribute), imported on first use.
_API = {
    "train": ("qffs_lava.ann.train", "train"),
    "from_torch": ("qffs_lava.ann.torch_import", "from_torch"),
    "read_net": ("qffs_lava.ir.netfile", "read_net"),
    "load_dataset": ("qffs_lava.ann.datasets", "load_dataset"),
    "run": ("qffs_lava.evaluate", "run"),
    "TorchNetwork": ("qffs_lava.backends.pytorch", "TorchNetwork"),
    "QffsNetwork": ("qffs_lava.backends.lava.procs.network", "QffsNetwork"),
    "RunResult": ("qffs_lava.results", "RunResult"),
    "BACKENDS": ("qffs_lava.backends", "BACKENDS"),
    "QffsError": ("qffs_lava.errors", "QffsError"),
    "QffsWarning": ("qffs_lava.messages", "QffsWarning"),
}

#: The entry-point group through which a package installed with the library adds a verb (a name not in _API).
VERBS_GROUP = "qffs_lava.verbs"

#: The docstring's verbs that another package adds, and whose: what to say where that package is not installed.
_ADDED = {"export": "the exporter's"}


def _added_verbs() -> dict:
    """The verbs the installed packages add: name -> entry point (read when asked for, as reading them costs tens
    of milliseconds)."""
    from importlib.metadata import entry_points

    return {point.name: point for point in entry_points(group=VERBS_GROUP) if point.name not in _API}


def __getattr__(name: str):
    if name == "__all__":  # _API's names and the verbs installed packages add
        value = [*_API, *sorted(_added_verbs())]
    elif name in _API:
        module, attribute = _API[name]
        if name == "QffsNetwork":  # Lava must be imported its own way first (backends.lava.adapter.import_lava)
            from qffs_lava.backends.lava.adapter import import_lava

            import_lava()
        value = getattr(importlib.import_module(module), attribute)
    else:
        point = None if name.startswith("_") else _added_verbs().get(name)
        if point is None and name in _ADDED:
            raise AttributeError(f"qffs_lava.{name} is {_ADDED[name]} verb, which is not installed: no installed "
                                 f"package has the entry point {name!r} in the group {VERBS_GROUP!r}; install "
                                 "qffs-lava again (pip install -e . in its repository)")
        if point is None:
            raise AttributeError(f"module 'qffs_lava' has no attribute {name!r}")
        value = point.load()
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_API) | set(_added_verbs()))
