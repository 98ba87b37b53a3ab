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


#: The /dev/shm names Lava's runtime makes, through Python's multiprocessing: SharedMemory segments (psm_...) and
#: named semaphores (sem.mp-...). Only these are counted: other programs on the machine make and leave their own
#: (a loky semaphore made by the machine's own tooling appeared in /dev/shm during a CI run and failed a test).
OUR_PREFIXES = ("psm_", "sem.mp-")


def shared_memory_segments():
    """The /dev/shm entries now that a Lava run (multiprocessing) could have made."""
    return {name for name in os.listdir("/dev/shm") if name.startswith(OUR_PREFIXES)}


def segments_in_use() -> set:
    """The /dev/shm entries some live process has open or mapped now."""
    used = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            used.update(line.split("/dev/shm/", 1)[1].removesuffix(" (deleted)")
                        for line in (entry / "maps").read_text().splitlines() if "/dev/shm/" in line)
            for fd in (entry / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("/dev/shm/"):
                    used.add(target[len("/dev/shm/"):])
        except OSError:
            continue
    return used


def leaked_segments(before: set) -> set:
    """Shared memory segments made since `before` (a shared_memory_segments()) that are still there and that no live
    process has open or mapped: left behind. Another job's segments in use at the same time are not counted."""
    new = shared_memory_segments() - before
    if not new:
        return set()
    used = segments_in_use()
    return (new & shared_memory_segments()) - used


def lava_scratch_folders():
    """The Lava backend's temporary recording folders (qffs-lava-*) that exist now, in the temporary directory (the
    test's own with the `own_tmpdir` fixture, so that other jobs' runs do not count)."""
    return set(Path(tempfile.gettempdir()).glob("qffs-lava-*"))


class Snapshot:
    """What exists before a run: this process's descendants, the shared memory segments and the Lava scratch folders;
    `left()` names what the run left behind."""

    def __init__(self):
        self.descendants, self.segments = descendants_of(os.getpid()), shared_memory_segments()
        self.scratch = lava_scratch_folders()

    def left(self) -> dict:
        found = {"processes": sorted(set(descendants_of(os.getpid())) - set(self.descendants)),
                 "shared memory": sorted(leaked_segments(self.segments)),
                 "scratch folders": sorted(map(str, lava_scratch_folders() - self.scratch))}
        return {what: items for what, items in found.items() if items}
