"""Looking for leaked processes and shared memory after Lava runs."""

import os
import tempfile
from pathlib import Path

#: multiprocessing starts one resource tracker per parent process on first use and keeps
#: it for the parent's lifetime; it is not a leak.
RESOURCE_TRACKER = b"multiprocessing.resource_tracker"


def _processes():
    """(pid, state, parent pid, session, command line) of every process in /proc now."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        state, ppid, _, session = stat[stat.rindex(")") + 2:].split()[:4]
        yield int(entry.name), state, int(ppid), int(session), cmdline


def children_of(pid: int):
    """Live (non-zombie) child processes of `pid`, except multiprocessing's resource tracker."""
    return sorted(child for child, state, ppid, _, cmdline in _processes()
                  if ppid == pid and state != "Z" and RESOURCE_TRACKER not in cmdline)


def session_alive(sid: int):
    """The live processes of session `sid` (a command started with start_new_session, and every process it forked
    in whatever process group, the resource tracker too), as 'pid command'."""
    return [f"{member} " + cmdline[:100].replace(b"\0", b" ").decode(errors="replace")
            for member, state, _, session, cmdline in _processes() if session == sid and state not in "ZX"]


def descendants_of(pid: int):
    """Live descendants of `pid` (children, their children, ...), as children_of counts them."""
    found, frontier = [], [pid]
    while frontier:
        children = [child for parent in frontier for child in children_of(parent)]
        found += children
        frontier = children
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def shared_memory_segments():
    return set(os.listdir("/dev/shm"))


def lava_scratch_folders():
    """The Lava backend's temporary recording folders (qffs-lava-*) that exist now."""
    return set(Path(tempfile.gettempdir()).glob("qffs-lava-*"))
