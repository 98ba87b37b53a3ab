"""What a Lava run holds: processes and memory (summed PSS) against qffs-run's estimate, before it starts.

    python bench/lava_memory.py NET --dataset DATASET [--samples 64] [--steps 8] [--workers 1 2] [--lava-batch 32]

Runs `qffs-run NET --backend lava` in a session of its own for each worker count and samples,
every 0.2 s, every process of the session: their number and the sum of their proportional set
sizes (PSS: each page counted once, shared pages divided among their sharers; GNU time's
maximum RSS counts one process, shared pages whole). Beside the peak it prints the estimate
the Lava backend makes before starting (backends/lava/footprint.py: its workers' runtimes,
plus this command's own process) and the peak /dev/shm use (Lava's channels).
Writes bench/lava_memory.json (appending a run per network).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def session_memory(sid: int) -> tuple[int, int, int]:
    """(processes, summed PSS in bytes, the leader's PSS) of session `sid` now."""
    count = total = leader = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat[stat.rindex(")") + 2:].split()[3]) != sid:
                continue
            rollup = (entry / "smaps_rollup").read_text()
        except (OSError, ValueError):
            continue
        pss = sum(int(line.split()[1]) * 1024 for line in rollup.splitlines() if line.startswith("Pss:"))
        count, total = count + 1, total + pss
        leader = pss if int(entry.name) == sid else leader
    return count, total, leader


def shm_used() -> int:
    return sum(p.stat().st_size for p in Path("/dev/shm").iterdir() if p.is_file())


def measure(argv: list) -> dict:
    shm_before = shm_used()
    started = time.perf_counter()
    process = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    most = {"processes": 0, "pss": 0, "command": 0, "alone": 0, "shm": 0}
    while process.poll() is None:
        count, pss, command = session_memory(process.pid)
        if pss > most["pss"]:
            most.update(pss=pss, command=command)
        if count == 1:
            most["alone"] = max(most["alone"], pss)
        most.update(processes=max(most["processes"], count), shm=max(most["shm"], shm_used() - shm_before))
        time.sleep(0.2)
    out, err = process.communicate()
    if process.returncode != 0:
        sys.exit(f"{' '.join(map(str, argv))} failed:\n{err[-2000:]}")
    estimate = next((line for line in err.splitlines() if line.startswith(("Lava:", "note:"))), "")
    return {"seconds": time.perf_counter() - started, "peak_processes": most["processes"],
            "peak_pss_gib": most["pss"] / 2**30, "command_pss_gib": most["command"] / 2**30,
            "command_alone_gib": most["alone"] / 2**30, "peak_shm_gib": most["shm"] / 2**30, "qffs_run_said": estimate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("net")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--lava-batch", type=int, default=None)
    args = parser.parse_args()

    from qffs_lava.backends.lava.footprint import gib, worker_footprint
    from qffs_lava.ir.netfile import read_net

    network = read_net(args.net)
    rows = []
    for workers in args.workers:
        argv = [BIN / "qffs-run", args.net, "--dataset", args.dataset, "--samples", str(args.samples), "--backend",
                "lava", "--steps", str(args.steps), "--workers", str(workers)]
        argv += ["--lava-batch", str(args.lava_batch)] if args.lava_batch else []
        row = measure([str(a) for a in argv])
        batch = args.lava_batch or min(32, args.samples)
        chunk = min(-(-100 // batch) * batch, args.samples)
        workers = min(workers, -(-args.samples // chunk))
        footprint = worker_footprint(network, batch, chunk, args.steps, False)
        row.update(workers=workers, estimated_processes=workers * footprint.processes,
                   estimated_gib=workers * footprint.bytes / 2**30,
                   estimated_shm_gib=workers * footprint.shared_memory / 2**30)
        rows.append(row)
        print(f"{Path(args.net).name}, {workers} worker(s), B = {batch}: peak {row['peak_processes']} processes "
              f"(estimate {row['estimated_processes']} + the command and its resource tracker), summed PSS "
              f"{row['peak_pss_gib']:.2f} GB, the command alone before it forked {row['command_alone_gib']:.2f} GB "
              f"(estimate for the rest {gib(workers * footprint.bytes)}), /dev/shm {row['peak_shm_gib']:.2f} GB "
              f"(estimate {row['estimated_shm_gib']:.2f}); {row['seconds']:.0f} s", flush=True)
    out = ROOT / "bench" / "lava_memory.json"
    record = json.loads(out.read_text()) if out.exists() else {"runs": []}
    record["runs"] = [r for r in record["runs"] if r["net"] != Path(args.net).name] + [{
        "net": Path(args.net).name, "dataset": args.dataset, "samples": args.samples, "steps": args.steps,
        "lava_batch": args.lava_batch, "machine": platform.platform(), "rows": rows}]
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
