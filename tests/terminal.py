"""Running a command in a pseudo-terminal and pressing Ctrl-C the way a user does.

Writing ^C to the terminal makes the kernel's line discipline send SIGINT to the whole
foreground process group: the command and every process it forked (its Lava runtime
workers, or its worker processes and their runtimes' workers).
"""

import os
import pty
import select
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import List, Set

from processes import alive, descendants_of

#: When to press Ctrl-C during a Lava run.
MOMENTS = ("starting", "running", "stopping")
RUNNING_FOR = 0.5


@dataclass
class TerminalRun:
    exit_code: int
    output: str
    seconds_to_exit: float  # from ^C to the command's exit
    workers: Set[int] = field(default_factory=set)  # every descendant process seen while it ran


def _drain(fd: int, chunks: List[bytes]) -> None:
    while True:
        try:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                data = os.read(fd, 65536)
                if not data:
                    return
                chunks.append(data)
        except OSError:  # the terminal closed: the command exited
            return


def ctrl_c_in_a_terminal(argv: List[str], moment: str, env: dict, timeout: float = 180) -> TerminalRun:
    """Run argv in a new terminal and press Ctrl-C at `moment` (see MOMENTS).

    starting: as soon as the command forks its first process (Lava is starting);
    running:  once five or more descendant processes have run for RUNNING_FOR seconds;
    stopping: as soon as one of five or more descendants has exited (a runtime is stopping).
    """
    if moment not in MOMENTS:
        raise ValueError(moment)
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session leader whose controlling terminal is the pty
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # as a shell starts a command, even if ours ignores it
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    chunks: List[bytes] = []
    reader = threading.Thread(target=_drain, args=(fd, chunks), daemon=True)
    reader.start()
    workers: Set[int] = set()
    most = 0
    deadline = time.monotonic() + timeout
    running_since = None
    try:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{moment}: the moment never came; output:\n" + b"".join(chunks).decode())
            if os.waitpid(pid, os.WNOHANG)[0]:  # a fast machine: give the command more to do
                raise AssertionError(f"{moment}: the command ended before the moment came; output:\n"
                                     + b"".join(chunks).decode())
            now = descendants_of(pid)
            workers.update(now)
            most = max(most, len(now))
            if moment == "starting" and now:
                break
            if moment == "running":
                running_since = (running_since or time.monotonic()) if len(now) >= 5 else None
                if running_since and time.monotonic() - running_since > RUNNING_FOR:
                    break
            if moment == "stopping" and most >= 5 and len(now) < most:
                break
            # every 2 ms where the moment is short (the first fork, a runtime's exit), else every 50 ms: each look
            # reads /proc, and a watcher that holds a core slows the run it watches
            time.sleep(0.002 if moment == "starting" or (moment == "stopping" and most >= 5) else 0.05)
        os.write(fd, b"\x03")
        pressed = time.monotonic()
        while True:  # wait for the exit, noting workers forked meanwhile
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            workers.update(descendants_of(pid))
            if time.monotonic() - pressed > 60:
                raise TimeoutError(f"{moment}: still running 60 s after Ctrl-C")
            time.sleep(0.01)
        seconds = time.monotonic() - pressed
    except BaseException:
        for worker in workers | {pid}:
            if alive(worker):
                os.kill(worker, 9)
        raise
    reader.join(timeout=5)
    os.close(fd)
    return TerminalRun(os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace"),
                       seconds, workers)
