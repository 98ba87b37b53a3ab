"""Shared test fixtures: where the datasets are, and a small trained digits model."""

import os
from pathlib import Path

# Lava calls multiprocessing.set_start_method('fork') when first imported, which fails once
# anything (tqdm's lock, for one) has fixed the start method; import it before the tests do.
import lava.lib.dl.netx  # noqa: E402,F401
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("QFFS_DATA_DIR", REPO / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def mnist_dir(data_dir) -> Path:
    if not (data_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file():
        pytest.skip(f"MNIST is not under {data_dir}: run `make data` (make test does)")
    return data_dir


@pytest.fixture(scope="session")
def digits_model_file(tmp_path_factory) -> Path:
    """A digits MLP trained briefly through the Python API (about 5 s)."""
    from qffs_lava.ann.train import train

    path = tmp_path_factory.mktemp("models") / "digits.pt"
    train("digits", "mlp", out=path, progress=False, log=lambda _: None, float_epochs=10, qat_epochs=10)
    return path


@pytest.fixture(scope="session")
def digits_net(tmp_path_factory, digits_model_file) -> Path:
    """The digits MLP exported to net.h5."""
    from qffs_lava.export.exporter import export

    path = tmp_path_factory.mktemp("nets") / "digits.h5"
    export(digits_model_file, path, log=lambda _: None)
    return path


@pytest.fixture(scope="session")
def digits_lenet_files(tmp_path_factory):
    """A LeNet (conv, max pool, conv, max pool, flatten, dense, dense) trained briefly on digits, and its net.h5."""
    from qffs_lava.export.exporter import export

    from qffs_lava.ann.train import train

    folder = tmp_path_factory.mktemp("lenet")
    train("digits", "lenet", out=folder / "lenet.pt", progress=False, log=lambda _: None,
          float_epochs=3, qat_epochs=2, hardware_epochs=2)
    export(folder / "lenet.pt", folder / "lenet.h5", log=lambda _: None)
    return folder / "lenet.pt", folder / "lenet.h5"


@pytest.fixture(scope="session")
def digits_lenet_net(digits_lenet_files) -> Path:
    return digits_lenet_files[1]
