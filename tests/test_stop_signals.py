"""Stopping a Lava run, in every state of every process, and at moments no one chose.

Every state (in this process): a worker (or one of its Lava processes) sends this process a
stop signal at a chosen point of its life: Lava starting its processes, a neuron mid-run,
a result about to be handed over, Lava stopping a finished runtime. The run must raise the
signal's interrupt once every process and segment of it is gone.

Random moments (the command, as users meet it): `qffs-run --backend lava` is sent SIGTERM
alone (as `kill` and `timeout` send it) or SIGINT / SIGHUP to its group (a terminal's
Ctrl-C, a closed terminal) at moments drawn over the whole run, its first and last second
included, with and without --quiet, for a fast chain (the digits MLP at 64 steps: its
workers finish chunks early and wait to hand them over) and the batched LeNet, with both
cores busy. At return and one second later no process of its session may live, no shared
memory segment or scratch folder may be left, and the exit code must be 128 + the signal
(0 where the run had finished). The seed of the moments is printed; QFFS_STOP_SEED replays it.
"""

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import pytest
from processes import Snapshot, lava_scratch_folders, leaked_segments, session_alive, shared_memory_segments

import qffs_lava.backends.lava.runner as runner
from qffs_lava.backends import simulate
from qffs_lava.backends.lava.adapter import import_lava
from qffs_lava.backends.lava.procs import models
from qffs_lava.errors import QffsError
from qffs_lava.ir.netfile import read_net

QFFS_RUN = str(Path(sys.executable).parent / "qffs-run")
GROUP_SIGNALS = (signal.SIGINT, signal.SIGHUP)  # sent to the group; SIGTERM to the command alone


# Every state -----------------------------------------------------------------------------------

def _lava_runtime():
    import_lava()
    from lava.magma.runtime.runtime import Runtime

    return Runtime


def _on_step(step: int) -> Callable:
    """QffsNeuron's fixed_pt spiking phase, patched below: a neuron process busy at Lava step `step`."""
    return lambda model: model.time_step == step


#: Where the signal comes from: (what to patch, its attribute, when, which process) -> a function that runs the
#: original. "before" sends the signal before the original runs, "after" once it has returned.
STATES: Dict[str, tuple] = {
    "starting": (_lava_runtime, "_start_ports", "before"),       # Lava's processes forked, not yet running
    "busy": (lambda: models.PyQffsNeuronModelFixed, "run_spk", _on_step(5)),  # a neuron mid-run
    "handing over": (lambda: runner, "_run_chunk", "after"),      # a chunk's result about to be sent
    "tearing down": (_lava_runtime, "stop", "before"),           # Lava's own stop of a finished runtime
}


def signal_caller_at(monkeypatch, state: str, send: Callable[[int], None]) -> None:
    """Patch the point of `state` so that any process forked from this one calls send(this pid) there, once."""
    owner, name, when = STATES[state]
    owner = owner()
    original, caller, sent = getattr(owner, name), os.getpid(), []

    def patched(*args, **kwargs):
        fire = os.getpid() != caller and not sent and (when in ("before", "after") or when(*args))
        if fire and when != "after":
            sent.append(send(caller))
        result = original(*args, **kwargs)
        if fire and when == "after":
            sent.append(send(caller))
        return result

    monkeypatch.setattr(owner, name, patched)


@pytest.fixture
def stop_signals_raise():
    """SIGINT raises KeyboardInterrupt here (pytest may have set it otherwise); SIGTERM and SIGHUP only ever arrive
    inside a run, which handles them."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("state, signum", [("starting", signal.SIGINT), ("busy", signal.SIGTERM),
                                           ("handing over", signal.SIGHUP), ("tearing down", signal.SIGINT)])
def test_a_stop_signal_in_every_state_of_a_worker_ends_the_whole_run(digits_lenet_net, monkeypatch, state, signum,
                                                                      stop_signals_raise, own_tmpdir):
    signal_caller_at(monkeypatch, state, lambda pid: os.kill(pid, signum))
    network, x = read_net(digits_lenet_net), np.random.default_rng(0).integers(0, 17, (12, 1, 8, 8)) / 16
    before = Snapshot()
    with pytest.raises(KeyboardInterrupt) as raised:
        simulate(network, x, 8, "lava", chunk=3, workers=2, lava_batch=3)  # 4 chunks, 2 at a time
    assert getattr(raised.value, "signum", signal.SIGINT) == signum
    assert not before.left()


@pytest.mark.parametrize("state", ["starting", "handing over"])
def test_a_worker_that_dies_fails_the_run_and_leaves_nothing(digits_net, monkeypatch, state, own_tmpdir):
    signal_caller_at(monkeypatch, state, lambda pid: os.kill(os.getpid(), signal.SIGKILL))
    network, x = read_net(digits_net), np.random.default_rng(1).integers(0, 17, (8, 1, 8, 8)) / 16
    before = Snapshot()
    with pytest.raises(QffsError, match=r"a Lava worker process ended \((killed by SIGKILL|its pipe closed)\)"):
        simulate(network, x, 8, "lava", chunk=4, workers=2)
    assert not before.left()


# Random moments --------------------------------------------------------------------------------

def run_command(net: Path, kind: str, quiet: bool) -> List[str]:
    """The chain: the digits MLP at 64 steps (about 8 s idle), whose workers finish chunks early; the LeNet: the
    batched conv net at 16 steps. Both over the 450 digits test images in 2 workers."""
    steps = {"chain": "64", "lenet": "16"}[kind]
    return [QFFS_RUN, str(net), "--dataset", "digits", "--backend", "lava", "--steps", steps, "--workers", "2"] + (
        ["--quiet"] if quiet else [])


@dataclass
class Stop:
    moment: float  # seconds after the start when the signal was sent
    exit_code: int
    seconds_to_exit: float
    stderr: str
    alive: List[str]  # the session's processes alive when the command returned
    alive_later: List[str]  # ... and one second later
    new_shared_memory: set
    new_scratch: set
    finished: bool = field(init=False)

    def __post_init__(self):
        self.finished = self.exit_code == 0

    def before_the_command(self, signum: int) -> bool:
        """Whether the signal came while CPython was still starting, before any of the command's code ran (the first
        tenth of a second or so): it kills the interpreter (which the shell reports as 128 + the signal), or a
        Ctrl-C stops CPython's own import of `site` ("Fatal Python error", exit 1). No process of the run exists
        yet, and no program can handle a signal there."""
        return self.exit_code == -signum or (self.exit_code == 1 and "Fatal Python error: init_import_site" in
                                             self.stderr)

    def faults(self, signum: int) -> List[str]:
        """What went wrong: a command the signal reached exits 128 + it and says so in one line, its last (before it,
        only what a run says anyway: what it will hold, the progress bar), with no error or traceback."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        early = self.before_the_command(signum)
        said = [line for line in lines if "interrupted" in line or any(word in line.lower() for word in (
            "error", "traceback", "exception", "warning"))]
        checks = {"exit code": self.finished or early or self.exit_code == 128 + signum,
                  "one line": self.finished or early or (said == lines[-1:] and said[0].startswith("interrupted")),
                  "exit within 10 s": self.seconds_to_exit < 10, "no process left": not self.alive,
                  "no process 1 s later": not self.alive_later, "no shared memory left": not self.new_shared_memory,
                  "no scratch folder left": not self.new_scratch}
        return [name for name, ok in checks.items() if not ok]


def stop_at(command: List[str], signum: int, moment: float) -> Stop:
    """Start the command in a new session, send `signum` after `moment` seconds (to it alone, or its group)."""
    shm, scratch = shared_memory_segments(), lava_scratch_folders()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    time.sleep(moment)
    sent = time.monotonic()
    if process.poll() is None:
        try:
            (os.killpg if signum in GROUP_SIGNALS else os.kill)(process.pid, signum)
        except ProcessLookupError:
            pass  # it ended meanwhile
    try:
        err = process.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        err = "still running 60 s after the signal"
    returned = time.monotonic()
    alive = session_alive(process.pid)
    time.sleep(1)
    stop = Stop(moment, process.returncode, returned - sent, err, alive, session_alive(process.pid),
                leaked_segments(shm), lava_scratch_folders() - scratch)
    for line in set(alive) | set(stop.alive_later):  # nothing may outlive a failed check either
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except OSError:
            pass
    return stop


def seeded() -> random.Random:
    seed = int(os.environ.get("QFFS_STOP_SEED", random.randrange(10**6)))
    print(f"moments drawn with QFFS_STOP_SEED={seed}")
    return random.Random(seed)


def stop_at_random_moments(net: Path, kind: str, signum: int, tries: int, rng: random.Random,
                           length: Optional[float] = None) -> List[Stop]:
    """`tries` stops at moments drawn over the whole of a run of `length` seconds and half a second past it (None:
    an uninterrupted run's, timed first in the same conditions), alternately with and without --quiet."""
    if length is None:
        started = time.monotonic()
        assert subprocess.run(run_command(net, kind, True), capture_output=True).returncode == 0
        length = time.monotonic() - started
    stops = [stop_at(run_command(net, kind, quiet=i % 2 == 0), signum, rng.uniform(0, length + 0.5))
             for i in range(tries)]
    name = signal.Signals(signum).name
    faulty = [(stop, stop.faults(signum)) for stop in stops if stop.faults(signum)]
    stopped = [s for s in stops if not s.finished]
    print(f"{kind}, {name} at {tries} random moments of a {length:.1f} s run: {len(faulty)} faults, "
          f"{len(stops) - len(stopped)} finished first, {sum(s.before_the_command(signum) for s in stops)} while "
          "CPython started, before the command ran; exits after "
          f"{min((s.seconds_to_exit for s in stopped), default=0):.2f}-"
          f"{max((s.seconds_to_exit for s in stopped), default=0):.2f} s")
    assert not faulty, "\n".join(f"{name} at {stop.moment:.2f} s: {', '.join(faults)} failed ({stop})"
                                 for stop, faults in faulty)
    return stops


@pytest.fixture
def busy_cores():
    """Two busy loops holding both cores, as other users' jobs do."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    yield
    for loop in loops:
        loop.kill()
        loop.wait()


@pytest.mark.parametrize("kind, signum", [("chain", signal.SIGTERM),
                                          pytest.param("lenet", signal.SIGHUP, marks=pytest.mark.slow)])
def test_a_stop_signal_at_a_random_moment_ends_a_lava_run_cleanly(digits_net, digits_lenet_net, kind, signum,
                                                                  own_tmpdir):
    net = {"chain": digits_net, "lenet": digits_lenet_net}[kind]
    stop_at_random_moments(net, kind, signum, tries=1, rng=seeded(), length=6)


def test_timeout_never_needs_its_kill(digits_net):
    """`timeout -k 20 T qffs-run ...` sends SIGTERM at T (to the command and its group): the command ends within
    the 20 s, so timeout exits 124, never 137 (its SIGKILL)."""
    rng = seeded()
    for _ in range(2):
        moment = rng.uniform(0.5, 6)
        result = subprocess.run(["timeout", "-k", "20", f"{moment:.2f}"] + run_command(digits_net, "chain", True),
                                capture_output=True, text=True)
        assert result.returncode in (0, 124), f"timeout at {moment:.2f} s: exit {result.returncode}: {result.stderr}"


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("kind", ["chain", "lenet"])
def test_stop_signals_at_random_moments_with_both_cores_busy(digits_net, digits_lenet_net, busy_cores, kind,
                                                            own_tmpdir):
    """15 SIGTERMs to the command and 15 Ctrl-Cs to its group per network (30 of each over the two), and 5 SIGHUPs."""
    net, rng = {"chain": digits_net, "lenet": digits_lenet_net}[kind], seeded()
    for signum, tries in ((signal.SIGTERM, 15), (signal.SIGINT, 15), (signal.SIGHUP, 5)):
        stop_at_random_moments(net, kind, signum, tries, rng)
