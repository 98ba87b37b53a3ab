"""The signals that stop a command: Ctrl-C (SIGINT), SIGTERM (kill, timeout, batch schedulers) and SIGHUP (a
closed terminal). Each is raised as a KeyboardInterrupt, so every cleanup Ctrl-C runs runs for all three, and the
command exits with 128 + the signal's number: 130, 143, 129.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

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


def finished() -> None:
    """The command has done its work (or reported why not): a stop signal from now on exits at once."""
    _state["finished"] = True
