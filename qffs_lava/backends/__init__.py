"""The backends that run a net.h5, in one registry (docs/backends.md).

    qann        the integer QANN in closed form (pytorch.py)
    torch       the SNN simulated in PyTorch, batched, CPU or GPU (pytorch.py)
    lava        Lava's CPU simulator, bit-accurate fixed_pt models (lava/)
    lava-float  Lava's CPU simulator, floating_pt models (lava/)
    loihi2      a Loihi 2 system through lava-loihi (lava/)

Each is a `Backend` (base.py) that states what it needs and runs a network for T steps,
returning a `results.Simulation`. Adding one is one class and one entry in BACKENDS.
"""

from typing import Dict, List, Optional

from qffs_lava.backends.base import Backend, RunOptions
from qffs_lava.backends.lava import LavaBackend, LavaFloatBackend, Loihi2Backend
from qffs_lava.backends.pytorch import QannBackend, TorchBackend
from qffs_lava.errors import ParameterError

BACKENDS: Dict[str, Backend] = {backend.name: backend for backend in (
    QannBackend(), TorchBackend(), LavaBackend(), LavaFloatBackend(), Loihi2Backend())}

__all__ = ["BACKENDS", "Backend", "RunOptions", "get_backend", "names_with", "simulate"]


def get_backend(name: str) -> Backend:
    """The backend of that name; ParameterError listing the choices otherwise."""
    try:
        return BACKENDS[name]
    except (KeyError, TypeError):
        raise ParameterError(f"{{}}: unknown backend {name!r} (choose from {', '.join(BACKENDS)})",
                             "backend") from None


def names_with(capability: str) -> List[str]:
    """The names of the backends that have a capability (a Backend attribute, e.g. "costs")."""
    return [name for name, backend in BACKENDS.items() if getattr(backend, capability)]


def simulate(network, x, steps: int, backend: str = "torch", mode: Optional[str] = None, **options):
    """A backend's raw `results.Simulation` of dataset values x (N, *input shape) for `steps` synchronous steps,
    with `RunOptions(**options)` (e.g. record_spikes=True): every step's output counts, and spikes and costs
    where asked, in `mode` (None: the backend's own; the Lava backends run pipelined only). An option the backend
    does not honour, or a network outside Loihi 2's ranges on a backend that computes in them, is refused
    (`Backend.check`).

    Example:
        >>> sim = simulate(network, images, 8, "lava", record_spikes=True)
        >>> sim.spikes[0].shape                   # (T + D, N, *shape of layer 1)
    """
    runner, run_options = get_backend(backend), RunOptions(**options)
    runner.check(run_options, network, steps)
    run_options = runner.plan(network, run_options, len(x), steps)
    return runner.simulate(network, x, steps, runner.mode_for(mode), run_options)
