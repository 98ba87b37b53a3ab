"""The signals that stop a command: Ctrl-C (SIGINT), SIGTERM (kill, timeout, batch schedulers) and SIGHUP (a
closed terminal). Each is raised as a KeyboardInterrupt, so every cleanup Ctrl-C runs runs for all three, and the
command exits with 128 + the signal's number: 130, 143, 129. One raised where Python swallows exceptions (an
at-fork hook, say, as a DataLoader starts its workers) is raised again (`_redeliver`). Every stop a command
receives is also recorded, and one whose interrupt never reached the command (swallowed where no hook sees it: C
code that clears errors, a library's bare `except:`) is raised at the next checkpoint (`raise_if_stopped`: before a
Lava run or a DataLoader starts, and before the command reports success), so none is lost. Where a cleanup must
not be cut short (a Lava run's worker processes), `stops_deferred` records the signal instead and raises it once
the block is done.
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
    """The exception a stop signal raises: KeyboardInterrupt for SIGINT, Stopped for the others. In a command that
    ends with the stop (`stop_signals_raise(whole_process=True)`), a child's death from now on is part of the stop:
    SIGCHLD goes back to its default, so that PyTorch's DataLoader, whose workers the same signal may have killed
    before they could ignore it, does not report them as crashed."""
    if _state["whole"] and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    return KeyboardInterrupt() if signum == signal.SIGINT else Stopped(signum)


def signal_of(err: BaseException) -> int:
    """The stop signal an interrupt came from (SIGINT unless it says otherwise)."""
    return getattr(err, "signum", signal.SIGINT)


def exit_code(err: BaseException) -> int:
    """128 + the number of the signal that stopped the command, as a shell reports it."""
    return 128 + signal_of(err)


_state = {"finished": False, "whole": False, "owner": None, "hook": sys.unraisablehook, "pending": None,
          "profile": None, "received": None}


def _redeliver(unraisable) -> None:
    """sys.unraisablehook inside `stop_signals_raise`: a stop signal's interrupt that Python had to swallow (raised
    in an at-fork hook, a __del__, a weakref or GC callback, whose exceptions are printed as "Exception ignored")
    is raised again at this thread's next function call or return outside this hook (`_raise_pending`, a profile
    function), so that no stop is lost. In a process forked meanwhile, whose parent stops it, it is dropped."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        _state["hook"](unraisable)
    elif os.getpid() == _state["owner"] and _state["pending"] is None:
        _state.update(pending=signal_of(unraisable.exc_value), profile=sys.getprofile())
        sys.setprofile(_raise_pending)


def _raise_pending(frame, event, arg) -> None:
    """The profile function `_redeliver` sets: raise the pending stop (and put the previous profile function back)."""
    if frame.f_code is _redeliver.__code__:
        return  # the hook's own return: an interrupt there would be swallowed again
    signum = _state["pending"]
    sys.setprofile(_state["profile"])
    _state["pending"] = None
    raise interrupt(signum)


def _handle(signum, frame) -> None:
    if not _state["finished"]:
        _state["received"] = _state["received"] or signum
        raise interrupt(signum)
    end_process(128 + signum)  # the command's work is done: end it at once, as the signal asks


def end_process(code: int) -> None:
    """Flush stdout and stderr and end this process with `code` at once, without the interpreter's exit, during
    which Python puts the default handlers back and a signal would kill the process instead (exit -2, not 130),
    but with its children ended as that exit ends them. A stop signal that came in meanwhile, too late for its
    handler to run, still sets the code."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, RuntimeError, ValueError):
            pass
    if threading.current_thread() is threading.main_thread():
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        pending = sorted(signal.sigpending() & set(STOP_SIGNALS))
        code = 128 + pending[0] if pending else code
    end_children()
    os._exit(code)


def end_children() -> None:
    """Kill and reap this process's multiprocessing children (a DataLoader's workers, stopped mid-start or
    mid-shutdown), as the interpreter's exit would have ended them: os._exit skips that."""
    multiprocessing = sys.modules.get("multiprocessing")
    children = multiprocessing.active_children() if multiprocessing is not None else []
    for child in children:
        child.kill()
    for child in children:
        child.join(5)


def raise_if_stopped() -> None:
    """A checkpoint: raise the first stop signal received inside `stop_signals_raise` if its interrupt never
    reached the command, that is, unless one is being handled now (its cleanup calls this too)."""
    signum = _state["received"]
    if signum and os.getpid() == _state["owner"] and not isinstance(sys.exc_info()[1], KeyboardInterrupt):
        raise interrupt(signum)


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
    _state.update(finished=False, whole=whole_process, owner=os.getpid(), hook=sys.unraisablehook, received=None)
    sys.unraisablehook = _redeliver
    try:
        yield
    finally:
        if not whole_process:
            _state.update(finished=False, whole=False, received=None)
            sys.unraisablehook = _state["hook"]
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
    Python cannot handle signals, nothing is recorded. A stop received before the block and lost is raised at
    its start (`raise_if_stopped`)."""
    raise_if_stopped()
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
