"""qffs-lava: quantized ANNs (LSQ, 2-bit) converted to fast QFFS spiking networks for Lava and Loihi 2.

The verbs of the pipeline, at the top of the package:

    import qffs_lava as qffs

    qffs.train("digits", "mlp", out="digits.pt")          # float, LSQ and hardware-exact training
    qffs.export("digits.pt", "digits.h5")                 # the integer spiking network, net.h5
    result = qffs.run("digits.h5", images, labels, steps=8, backend="lava")
    result.accuracy_by_step, result.equal_from_step       # per step t, and when SNN == QANN

    images, labels = qffs.load_dataset("digits", "test")  # (N, C, H, W) in [0, 1], class indices
    qffs.from_torch(module, input_shape)                  # your own nn.Module as a QFFS graph
    qffs.read_net("digits.h5")                            # the network, validated
    qffs.TorchNetwork(network)                            # its QANN and SNN in PyTorch, CPU or GPU
    qffs.QffsNetwork(net_config="digits.h5")              # the network as one Lava Process

Each is imported on first use, so `import qffs_lava` loads neither PyTorch nor Lava.
"""

import importlib

__version__ = "0.1.0"

#: Public name -> (module, attribute), imported on first use.
_API = {
    "train": ("qffs_lava.ann.train", "train"),
    "from_torch": ("qffs_lava.ann.torch_import", "from_torch"),
    "export": ("qffs_export.exporter", "export"),
    "read_net": ("qffs_lava.ir.netfile", "read_net"),
    "load_dataset": ("qffs_lava.ann.datasets", "load_dataset"),
    "run": ("qffs_lava.evaluate", "run"),
    "TorchNetwork": ("qffs_lava.backends.pytorch", "TorchNetwork"),
    "QffsNetwork": ("qffs_lava.backends.lava.procs.network", "QffsNetwork"),
    "RunResult": ("qffs_lava.results", "RunResult"),
    "BACKENDS": ("qffs_lava.backends", "BACKENDS"),
    "QffsError": ("qffs_lava.errors", "QffsError"),
}

__all__ = list(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'qffs_lava' has no attribute {name!r}")
    module, attribute = _API[name]
    if name == "QffsNetwork":  # Lava must be imported its own way first (backends.lava.adapter.import_lava)
        from qffs_lava.backends.lava.adapter import import_lava

        import_lava()
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
