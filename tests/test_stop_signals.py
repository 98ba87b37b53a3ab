"""`qffs-run --backend lava` stopped at a random moment by the signals users send: Ctrl-C (SIGINT to its
process group, as a terminal sends it), SIGTERM (to it alone, as `kill` sends it) and SIGHUP (to its group,
as a closed terminal sends it). At the moment the command returns: exit code 128 + the signal, one line,
no process of its group alive, no new /dev/shm entry and no scratch folder left.
"""

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import pytest
from processes import group_alive, lava_scratch_folders, shared_memory_segments

QFFS_RUN = str(Path(sys.executable).parent / "qffs-run")
GROUP_SIGNALS = (signal.SIGINT, signal.SIGHUP)  # sent to the process group; SIGTERM to the command alone


def run_command(net) -> List[str]:
    """A 2-worker run of the batched Lava network over the 450 digits test images (a few seconds idle)."""
    return [QFFS_RUN, str(net), "--dataset", "digits", "--backend", "lava", "--steps", "16", "--workers", "2",
            "--quiet"]


@dataclass
class Stop:
    moment: float  # seconds after the start when the signal was sent
    exit_code: int
    seconds_to_exit: float
    stderr: str
    alive: List[str]  # the group's processes alive when the command returned
    new_shared_memory: set
    new_scratch: set

    def faults(self, signum: int) -> List[str]:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        checks = {"exit code": self.exit_code == 128 + signum, "one line": len(lines) == 1,
                  "exit within 10 s": self.seconds_to_exit < 10, "no process left": not self.alive,
                  "no shared memory left": not self.new_shared_memory, "no scratch folder left": not self.new_scratch}
        return [name for name, ok in checks.items() if not ok]


def stop_at(command: List[str], signum: int, moment: float):
    """Start the command in a new process group, send `signum` after `moment` seconds; None if it ended first
    (or was exiting, its report printed: no process can change its exit code then)."""
    shm, scratch = shared_memory_segments(), lava_scratch_folders()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    time.sleep(moment)
    if process.poll() is not None:
        process.communicate()
        return None
    (os.killpg if signum in GROUP_SIGNALS else os.kill)(process.pid, signum)
    sent = time.monotonic()
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        out, err = "", "still running 60 s after the signal"
    if process.returncode == 0 and "wall time" in out:
        return None  # it had printed its report and was exiting: the signal came after its end
    stop = Stop(moment, process.returncode, time.monotonic() - sent, err, group_alive(process.pid),
                shared_memory_segments() - shm, lava_scratch_folders() - scratch)
    for line in stop.alive:  # nothing may outlive a failed check either
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except OSError:
            pass
    return stop


def stop_at_random_moments(net, signum: int, tries: int, length: Optional[float] = None) -> List[Stop]:
    """`tries` stops at moments drawn over the first 90% of `length` seconds (None: an uninterrupted run's,
    timed first in the same conditions)."""
    command = run_command(net)
    if length is None:
        started = time.monotonic()
        assert subprocess.run(command, capture_output=True).returncode == 0
        length = time.monotonic() - started
    rng, stops = random.Random(), []
    for _ in range(3 * tries):  # a run that ended before its moment does not count
        stop = stop_at(command, signum, rng.uniform(0.2, 0.9 * length))
        stops += [stop] if stop is not None else []
        if len(stops) == tries:
            break
    assert len(stops) == tries, f"the runs ended before their moments: {len(stops)} of {tries} stops"
    name = signal.Signals(signum).name
    faulty = [(stop, stop.faults(signum)) for stop in stops if stop.faults(signum)]
    print(f"{name} at {tries} random moments of a {length:.1f} s run: {len(faulty)} faults; exits after "
          f"{min(s.seconds_to_exit for s in stops):.2f}-{max(s.seconds_to_exit for s in stops):.2f} s")
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


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])  # Ctrl-C: tests/test_hardening.py
def test_a_stop_signal_at_a_random_moment_ends_a_lava_run_cleanly(digits_lenet_net, signum):
    stop_at_random_moments(digits_lenet_net, signum, tries=1, length=4)  # within the run's first 4 s


@pytest.mark.slow
@pytest.mark.parametrize("signum, tries", [(signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGHUP, 10)])
def test_stop_signals_at_random_moments_with_both_cores_busy(digits_lenet_net, busy_cores, signum, tries):
    stop_at_random_moments(digits_lenet_net, signum, tries)
