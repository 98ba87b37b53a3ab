"""Shared test fixtures (the datasets, small trained digits models), the test tiers and Hypothesis profiles.

Tiers: `slow` is marked by hand (end-to-end runs of minutes, `make test-slow`). `lava` is applied here to
every test that starts a Lava runtime, found by what its code uses (below); `make test-fast` runs what is
neither. A test that starts a Lava runtime without being marked fails, so the fast tier cannot grow one.

Random draws: a test that draws inputs, weights or moments at random takes the `seed` fixture, which prints its
seed (shown with a failure) and replays one given as QFFS_TEST_SEED.

Hypothesis: the `ci` profile (.ci/run sets HYPOTHESIS_PROFILE=ci) runs every property test's full example
count, the default `dev` profile a tenth of it (`profiles.examples`).
"""

import inspect
import os
import random
import types
from pathlib import Path, PurePath

import pytest
import torch
from hypothesis import settings

from qffs_lava.backends import BACKENDS
from qffs_lava.distributed import usable_cores
from qffs_lava.backends.lava.adapter import import_lava

# Lava sets multiprocessing's start method to 'fork' when first imported, which fails once anything (tqdm's
# lock, for one) has fixed it; import_lava resets it first. Importing Lava's core here also lets the guard
# below hold for every test.
import_lava()
from lava.magma.core.process.process import AbstractProcess  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
DATA_DIR = Path(os.environ.get("QFFS_DATA_DIR", REPO / "data"))


def _torch_threads() -> int:
    """PyTorch's threads for the test process and the commands it starts: QFFS_TEST_THREADS where set (0: PyTorch's
    default, one per core), else the cores no other job holds (by the load average, at least one). On 2 cores
    that other jobs share, training the suite's small models on 2 threads took 15 to 40 times as long as on one
    (threads spinning while they wait for a core; measured 2026-12-02); on idle cores the default was as fast."""
    if "QFFS_TEST_THREADS" in os.environ:
        return int(os.environ["QFFS_TEST_THREADS"])
    cores = usable_cores()
    free = max(1, min(cores, round(cores - os.getloadavg()[0])))
    return free if free < cores else 0


TEST_THREADS = _torch_threads()
if TEST_THREADS:  # test_api.py's trained-first test keeps PyTorch's default in the process it starts
    torch.set_num_threads(TEST_THREADS)
    os.environ["OMP_NUM_THREADS"] = str(TEST_THREADS)


def pytest_report_header(config):
    return f"PyTorch threads: {TEST_THREADS or 'its default'} (QFFS_TEST_THREADS; tests/conftest.py)"


settings.register_profile("ci", deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

#: What a test's code (or a helper or fixture it uses) names when it starts a Lava runtime: the Lava
#: backends, the runner, the Lava Process, the example that runs one, Lava's run configurations.
LAVA_NAMES = {"LavaRun", "run_lava", "QffsNetwork", "import_lava", "Loihi2SimCfg", "Loihi2HwCfg", "lava_view"}
LAVA_STRINGS = {name for name, backend in BACKENDS.items() if backend.lava_tag} | {
    "--lava", "fixed_pt", "floating_pt", "examples/lava_network.py", "lava_network.py"}


def _code_objects(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _uses_lava(function, seen: set) -> bool:
    """Whether a function (or a test-suite function it names, transitively) names a Lava entry point."""
    function = inspect.unwrap(function)
    code = getattr(function, "__code__", None)
    if code is None or code in seen:
        return False
    seen.add(code)
    namespace = getattr(function, "__globals__", {})
    for part in _code_objects(code):
        if LAVA_NAMES & set(part.co_names) or LAVA_STRINGS & {c for c in part.co_consts if isinstance(c, str)}:
            return True
        for name in part.co_names:
            helper = namespace.get(name)
            if isinstance(helper, (str, PurePath)) and (str(helper) in LAVA_STRINGS or
                                                        PurePath(helper).name in LAVA_STRINGS):
                return True  # a constant such as the path of examples/lava_network.py
            source = getattr(inspect.unwrap(helper), "__code__", None) if callable(helper) else None
            if source is not None and Path(source.co_filename).resolve().parent == TESTS \
                    and _uses_lava(helper, seen):
                return True
    return False


def pytest_collection_modifyitems(config, items):
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        fixtures = [definition.func for name, definitions in item._fixtureinfo.name2fixturedefs.items()
                    for definition in definitions if name != "lava_runtimes_only_where_marked"]
        seen: set = set()
        if any(isinstance(v, str) and v in LAVA_STRINGS for v in params.values()) \
                or any(_uses_lava(f, seen) for f in [item.function] + fixtures):
            item.add_marker(pytest.mark.lava)


@pytest.fixture(autouse=True)
def lava_runtimes_only_where_marked(request, monkeypatch):
    """A test not marked `lava` (by hand or by the detection above) may not start a Lava runtime."""
    if request.node.get_closest_marker("lava") is None:
        def refuse(*args, **kwargs):
            raise AssertionError(f"{request.node.nodeid} starts a Lava runtime but is not marked lava: name a Lava "
                                 "entry point in tests/conftest.py's LAVA_NAMES, or mark it pytest.mark.lava")

        monkeypatch.setattr(AbstractProcess, "create_runtime", refuse)
        monkeypatch.setattr(AbstractProcess, "run", refuse)


@pytest.fixture
def seed(request) -> int:
    """The seed of what a test draws at random (inputs, weights, moments): QFFS_TEST_SEED where set, to replay a
    failure, else drawn anew. It is printed, which pytest shows with a failed test's report, and kept in the test's
    user_properties (pytest --junitxml writes them)."""
    seed = int(os.environ.get("QFFS_TEST_SEED", random.randrange(10**6)))
    print(f"{request.node.nodeid}: drawn with QFFS_TEST_SEED={seed}")
    request.node.user_properties.append(("QFFS_TEST_SEED", seed))
    return seed


@pytest.fixture
def own_tmpdir(tmp_path, monkeypatch) -> Path:
    """A temporary directory of the test's own, for this process (tempfile) and the commands it starts (TMPDIR), so
    that what it finds there is its own."""
    import tempfile

    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


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
    train("digits", "mlp", out=path, progress=False, float_epochs=10, qat_epochs=10, hardware_epochs=1)
    return path


@pytest.fixture(scope="session")
def digits_net(tmp_path_factory, digits_model_file) -> Path:
    """The digits MLP exported to net.h5."""
    from qffs_export.exporter import export

    path = tmp_path_factory.mktemp("nets") / "digits.h5"
    export(digits_model_file, path)
    return path


@pytest.fixture(scope="session")
def digits_lenet_files(tmp_path_factory):
    """A LeNet (conv, max pool, conv, max pool, flatten, dense, dense) trained briefly on digits, and its net.h5."""
    from qffs_export.exporter import export

    from qffs_lava.ann.train import train

    folder = tmp_path_factory.mktemp("lenet")
    train("digits", "lenet", out=folder / "lenet.pt", progress=False,
          float_epochs=3, qat_epochs=2, hardware_epochs=2)
    export(folder / "lenet.pt", folder / "lenet.h5")
    return folder / "lenet.pt", folder / "lenet.h5"


@pytest.fixture(scope="session")
def digits_lenet_float_net(tmp_path_factory) -> Path:
    """The digits LeNet trained with a full-precision output (--out-bits float) and exported: a read-out output,
    net.h5 version 3."""
    from qffs_export.exporter import export

    from qffs_lava.ann.train import train

    folder = tmp_path_factory.mktemp("lenet_float")
    train("digits", "lenet", out=folder / "lenet.pt", progress=False, out_bits="float",
          float_epochs=3, qat_epochs=2, hardware_epochs=2)
    export(folder / "lenet.pt", folder / "lenet.h5")
    return folder / "lenet.h5"


@pytest.fixture(scope="session")
def digits_lenet_net(digits_lenet_files) -> Path:
    return digits_lenet_files[1]


@pytest.fixture(scope="session")
def digits_resnet_net(tmp_path_factory) -> Path:
    """A ResNet-8 (identity and projection shortcuts: a graph, net.h5 version 2) trained briefly on digits, exported."""
    from qffs_export.exporter import export

    from qffs_lava.ann.train import train

    folder = tmp_path_factory.mktemp("resnet")
    train("digits", "resnet8", out=folder / "r.pt", progress=False, float_epochs=1, qat_epochs=1, hardware_epochs=1)
    export(folder / "r.pt", folder / "r.h5")
    return folder / "r.h5"
