"""The signals that stop a command: Ctrl-C (SIGINT), SIGTERM (kill, timeout, batch schedulers) and SIGHUP (a
closed terminal). Each is raised as a KeyboardInterrupt, so every cleanup Ctrl-C runs runs for all three, and the
command exits with 128 + the signal's number: 130, 143, 129. Where a cleanup must not be cut short (a Lava run's
worker processes), `stops_deferred` records the signal instead and raises it once the block is done.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator, Optional

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C raises KeyboardInterrupt."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def interrupt(signum: int) -> KeyboardInterrupt:
    """The exception a stop signal raises: KeyboardInterrupt for SIGINT, Stopped for the others."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Stopped(signum)


def signal_of(err: BaseException) -> int:
    """The stop signal an interrupt came from (SIGINT unless it says otherwise)."""
    return getattr(err, "signum", signal.SIGINT)


def exit_code(err: BaseException) -> int:
    """128 + the number of the signal that stopped the command, as a shell reports it."""
    return 128 + signal_of(err)


_state = {"finished": False}


def _handle(signum, frame) -> None:
    if not _state["finished"]:
        raise interrupt(signum)
    end_process(128 + signum)  # the command's work is done: end it at once, as the signal asks


def end_process(code: int) -> None:
    """Flush stdout and stderr and end this process with `code` at once, without the interpreter's exit, during
    which Python puts the default handlers back and a signal would kill the process instead (exit -2, not 130).
    A stop signal that came in meanwhile, too late for its handler to run, still sets the code."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, RuntimeError, ValueError):
            pass
    if threading.current_thread() is threading.main_thread():
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        pending = sorted(signal.sigpending() & set(STOP_SIGNALS))
        code = 128 + pending[0] if pending else code
    os._exit(code)


@contextlib.contextmanager
def stop_signals_raise(whole_process: bool):
    """Inside the block SIGINT, SIGTERM and SIGHUP raise `interrupt(signum)` in this process (main thread
    only: Python handles signals there). With `whole_process` (the block is the process's command, which
    ends with `end_process`), once `finished()` is called a signal ends the process at once with 128 + its
    number; otherwise the previous handlers come back when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _handle) for signum in STOP_SIGNALS}
    _state["finished"] = False
    try:
        yield
    finally:
        if not whole_process:
            _state["finished"] = False
            for signum, handler in previous.items():
                signal.signal(signum, handler)


class Deferred:
    """The first stop signal received, recorded instead of raised; each one also makes `fd` readable, so that a
    loop waiting on it (multiprocessing.connection.wait, select) wakes."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.owner = os.getpid()
        self.fd, self._wake = os.pipe()
        for fd in (self.fd, self._wake):
            os.set_blocking(fd, False)

    def handle(self, signum, frame) -> None:
        if os.getpid() != self.owner:
            return  # a process forked meanwhile, before it set its own handlers: its parent stops it
        self.signum = self.signum or signum
        try:
            os.write(self._wake, b"\0")
        except OSError:  # full: it is readable already
            pass

    def close(self) -> None:
        for fd in (self.fd, self._wake):
            os.close(fd)


@contextlib.contextmanager
def stops_deferred() -> Iterator[Deferred]:
    """Inside the block SIGINT, SIGTERM and SIGHUP raise nothing: the first is recorded (`Deferred`), so no
    cleanup is ever cut short at a moment no one chose. When the block ends, however it ends, the previous
    handlers come back and the recorded signal is raised as `interrupt(signum)`. Off the main thread, where
    Python cannot handle signals, nothing is recorded."""
    deferred = Deferred()
    previous = {}
    try:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                previous[signum] = signal.signal(signum, deferred.handle)
        yield deferred
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        deferred.close()
        if deferred.signum:
            raise interrupt(deferred.signum)


def finished() -> None:
    """The command has done its work (or reported why not): a stop signal from now on exits at once."""
    _state["finished"] = True
