"""Worker processes for Lava runtimes, and a stop that ends all of them whatever state they are in.

Every Lava runtime of a run lives in a worker process forked from the calling process, and
a run ends (complete, failed or stopped) the same way, by construction rather than by timing:

1. Stop signals never raise inside the run: `signals.stops_deferred` records the first and
   wakes the loop, which stops handing out work and tears down; the signal is raised once
   everything below is done (exit 128 + the signal).
2. Each worker leads a process group of its own, which holds it and every Lava process it
   forks (its actors, the shared memory manager). Teardown sends SIGKILL to each group and
   reaps the worker: no message, no queue to drain, nothing a worker must still do. A
   terminal's Ctrl-C reaches only the calling process's group: the workers hear of a stop
   from it alone.
3. Every process forked inside a run dies with its parent (PR_SET_PDEATHSIG, checked
   against the parent's pid after it is set), so a command killed outright leaves nothing
   either.
4. A resource tracker of the run's own (multiprocessing's, started for this run) holds a
   pipe every worker and Lava process inherits: it reads EOF only once all of them are
   dead, then unlinks every shared memory segment they left, and exits. Teardown waits for
   it, so when a run returns or raises, no process of it lives and no segment is left.
5. The run's scratch folder (the recordings) is made here before the first fork and
   deleted after 4.

Workers use numpy only: PyTorch does not support autograd in a process forked after its
parent started autograd threads.

Written for CPython 3.10's multiprocessing (`resource_tracker.ResourceTracker`, its `_fd`,
`_pid` and `_stop`) on Linux; elsewhere PR_SET_PDEATHSIG is skipped and 2 and 4 still hold.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import shutil
import signal
import tempfile
from multiprocessing import connection, get_context, resource_tracker
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

from qffs_lava.errors import QffsError
from qffs_lava.signals import STOP_SIGNALS, stops_deferred

#: Seconds between checks that every busy worker is still alive (a worker that dies sends nothing).
LIVENESS_SECONDS = 1.0

#: work(index, scratch folder, report) -> result, run in a worker; report(n) tells the caller n more samples are done.
Work = Callable[[int, Path, Optional[Callable[[int], None]]], Any]


# Processes forked inside a run die with their parent ---------------------------------------------

PR_SET_PDEATHSIG = 1
_fork = {"in_run": False, "parent": 0}


def _before_fork() -> None:
    _fork["parent"] = os.getpid()


def _die_with_parent() -> None:
    """In a child forked inside a run: be killed when the process that forked it dies, however it dies (even by
    SIGKILL). Linux's prctl; elsewhere nothing. A parent that died between fork and prctl is caught by the
    parent pid: the child's parent is then another process."""
    if not _fork["in_run"]:
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != _fork["parent"]:
        os._exit(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_die_with_parent)


@contextlib.contextmanager
def _forks_die_with_parent() -> Iterator[None]:
    previous, _fork["in_run"] = _fork["in_run"], True
    try:
        yield
    finally:
        _fork["in_run"] = previous


# The run's own resource tracker ----------------------------------------------------------------

@contextlib.contextmanager
def _run_tracker() -> Iterator[int]:
    """A multiprocessing resource tracker for this run alone (yields the fd its children inherit); when the block
    ends it is stopped and waited for: it exits once every process holding the fd is dead, after unlinking what
    they left. Started with SIGHUP ignored (kept across exec; it ignores SIGINT and SIGTERM itself) and stderr
    on /dev/null (it warns of each segment it unlinks, which is its purpose here)."""
    tracker = resource_tracker.ResourceTracker()
    previous, stderr = signal.signal(signal.SIGHUP, signal.SIG_IGN), os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            tracker.ensure_running()
    finally:
        os.dup2(stderr, 2)
        os.close(stderr)
        signal.signal(signal.SIGHUP, previous)
    try:
        yield tracker._fd
    finally:
        tracker._stop()  # closes our end of the pipe and waits for the tracker to exit


def _use_tracker(fd: int) -> None:
    """In a worker: register shared memory with the run's tracker (Lava's processes forked from here inherit it)."""
    tracker = resource_tracker._resource_tracker
    tracker._fd, tracker._pid = fd, None


# One worker -----------------------------------------------------------------------------------

class _Worker:
    """A forked process that runs tasks given to it one at a time over a pipe, in a process group of its own."""

    def __init__(self, work: Work, scratch: Path, tracker_fd: int, report: bool):
        ours, theirs = connection.Pipe()
        self.process = get_context("fork").Process(target=_serve, args=(theirs, work, scratch, tracker_fd, report),
                                                   daemon=False)
        self.process.start()
        theirs.close()
        self.conn, self.task = ours, None
        with contextlib.suppress(OSError):  # the child does the same; whichever runs first makes the group
            os.setpgid(self.process.pid, self.process.pid)

    def give(self, task: Optional[int]) -> None:
        self.task = task
        if task is not None:
            self.conn.send(task)

    def _unreaped(self) -> bool:
        """Whether the worker is alive or a zombie: its pid, which names its group, is then still its own.
        (multiprocessing reaps finished children when it starts another: a worker that died early may be gone.)"""
        try:
            os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            return True
        except ChildProcessError:
            return False

    def died(self) -> Optional[str]:
        """Why the worker is gone, if it is (its exit code, or the signal that ended it); it is not reaped."""
        try:
            state = os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            code = None if state is None or state.si_pid == 0 else (
                state.si_status if state.si_code == os.CLD_EXITED else -state.si_status)
        except ChildProcessError:
            code = self.process.exitcode
        if code is None:
            return None
        return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"

    def end(self) -> None:
        """SIGKILL to the worker's group (it and every process it forked), then reap it."""
        if self._unreaped():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)  # had its group not been made yet
        self.process.join()
        self.conn.close()


def _serve(conn, work: Work, scratch: Path, tracker_fd: int, report: bool) -> None:
    """A worker's life: its own group, default signal dispositions, the run's tracker; then each task given is
    answered with ("done", task, result) (progress as ("progress", n) meanwhile), or ("error", task, err) after
    which it waits to be ended. It exits when the caller's end of the pipe closes, and never returns to
    multiprocessing, whose exit would join the Lava processes it forked."""
    try:
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        _use_tracker(tracker_fd)
        progress = (lambda n: conn.send(("progress", n))) if report else None
        failed = False
        while True:
            task = conn.recv()
            if failed:
                continue
            try:
                conn.send(("done", task, work(task, scratch, progress)))
            except Exception as err:  # noqa: BLE001 - the caller raises it
                conn.send(("error", task, _transferable(err)))
                failed = True
    finally:
        os._exit(1)


def _transferable(err: Exception) -> Exception:
    """The error itself if it survives pickling, else a QffsError with its text."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001
        return QffsError(f"{type(err).__name__}: {err}")


# A run ----------------------------------------------------------------------------------------

def run_in_workers(work: Work, tasks: int, workers: int,
                   progress: Optional[Callable[[int], None]] = None) -> List[Any]:
    """work(task, scratch, report) for task 0 .. tasks - 1 in `workers` forked processes (at most one per task),
    each given the next task when it answers; the results in task order.

    A failed task's error is raised; a stop signal (SIGINT, SIGTERM, SIGHUP) is raised as
    signals.interrupt once the run is torn down (module docstring). Either way, and after
    success, every worker and every process it forked is dead and every shared memory
    segment unlinked when this returns or raises.
    """
    results: Dict[int, Any] = {}
    with stops_deferred() as stops:
        scratch = Path(tempfile.mkdtemp(prefix="qffs-lava-"))
        try:
            with _run_tracker() as tracker_fd, _forks_die_with_parent():
                pool: List[_Worker] = []
                try:
                    _hand_out(pool, work, scratch, tracker_fd, tasks, workers, progress, results, stops)
                finally:
                    for worker in pool:
                        worker.end()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return [results[task] for task in range(tasks)]


def _hand_out(pool: List[_Worker], work: Work, scratch: Path, tracker_fd: int, tasks: int, workers: int,
              progress, results: Dict[int, Any], stops) -> None:
    """Start the workers and give out tasks until every result is in, a task fails (raised) or a stop is
    recorded (returns: the caller raises it after teardown)."""
    pending = iter(range(tasks))
    for _ in range(min(workers, tasks)):
        if stops.signum:
            return
        pool.append(_Worker(work, scratch, tracker_fd, progress is not None))
        pool[-1].give(next(pending))
    while len(results) < tasks and not stops.signum:
        busy = {worker.conn: worker for worker in pool if worker.task is not None}
        for conn in connection.wait(list(busy) + [stops.fd], timeout=LIVENESS_SECONDS):
            if conn == stops.fd or stops.signum:
                return
            worker = busy[conn]
            try:
                message = conn.recv()
            except EOFError:
                raise QffsError(f"a Lava worker process ended ({worker.died() or 'its pipe closed'}) before its "
                                f"chunk was done ({len(results)} of {tasks} chunks done)") from None
            if message[0] == "progress":
                progress(message[1])
            elif message[0] == "error":
                raise message[2]
            else:
                results[message[1]] = message[2]
                worker.give(next(pending, None))
        for worker in busy.values():
            why = worker.died()
            if why is not None and not worker.conn.poll():
                raise QffsError(f"a Lava worker process ended ({why}) before its chunk was done "
                                f"({len(results)} of {tasks} chunks done)")
