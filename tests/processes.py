"""Looking for leaked processes and shared memory after Lava runs."""

import os
import tempfile
from pathlib import Path

#: multiprocessing starts one resource tracker per parent process on first use and keeps
#: it for the parent's lifetime; it is not a leak.
RESOURCE_TRACKER = b"multiprocessing.resource_tracker"


def children_of(pid: int):
    """Live (non-zombie) child processes of `pid`, except multiprocessing's resource tracker."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("PPid", "").strip() == str(pid) and not fields.get("State", "").startswith("Z") \
                and RESOURCE_TRACKER not in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def group_alive(pgid: int):
    """The live processes of process group `pgid` (the resource tracker too), as 'pid command'."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()[:100].replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state, _, group = stat[stat.rindex(")") + 2:].split()[:3]
        if int(group) == pgid and state not in "ZX":
            found.append(f"{entry.name} {command}")
    return found


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
