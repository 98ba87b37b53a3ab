"""`make paper` (bench/paper.py) on its --check settings: the whole path on digits, stopped with a Ctrl-C at a moment
no one chose once its first configuration is finished, then run again to the end without redoing what was
finished (make test-slow; about 8 minutes). The seed of the moment is printed; QFFS_STOP_SEED replays it."""

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
CHECK_CONFIGURATIONS = 15  # bench/paper.py's configs() on --check's two seeds


def make_paper(runs: Path, **kwargs):
    return subprocess.Popen(["make", "--no-print-directory", "paper", f"PAPER_ARGS=--check --runs {runs}"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def working_in(folder: Path) -> list:
    """The processes whose working directory is inside `folder` (make paper's commands each run in their own)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")).is_relative_to(folder):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_make_paper_check_stops_on_ctrl_c_and_continues_where_it_stopped(tmp_path):
    runs = tmp_path / "runs"
    seed = int(os.environ.get("QFFS_STOP_SEED", random.randrange(2 ** 32)))
    pause = random.Random(seed).uniform(0, 4)
    print(f"QFFS_STOP_SEED={seed}: Ctrl-C {pause:.2f} s after the first configuration is finished")
    first = make_paper(runs, start_new_session=True)
    deadline = time.monotonic() + 600
    while not list(runs.glob("*/result.json")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(pause)
    os.killpg(first.pid, signal.SIGINT)  # a terminal's Ctrl-C: make, make paper (which passes it on once)
    output = first.communicate(timeout=300)[0]
    assert first.returncode != 0, output[-3000:]
    assert "make paper stopped" in output, output[-3000:]
    time.sleep(1)
    assert working_in(tmp_path) == [], "a command of make paper outlived it"
    finished = {path: path.stat().st_mtime_ns for path in runs.glob("*/result.json")}
    assert finished and len(finished) < CHECK_CONFIGURATIONS

    second = make_paper(runs)
    output = second.communicate(timeout=1800)[0]
    assert second.returncode == 0, output[-3000:]
    assert f"{CHECK_CONFIGURATIONS} configurations, {len(finished)} done before" in output
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in finished.items()), "a finished one was redone"
    paper = json.loads((runs / "paper.json").read_text())
    assert len(paper["runs"]) == paper["expected"] == CHECK_CONFIGURATIONS
    assert {p["converter"] for p in paper["peers"]} == {"SpikingJelly ann2snn (99.9%)", "sinabs from_model", "QFFS"}
    assert all("accuracy_by_step" in p for p in paper["peers"])
    assert [(d["arch"], len(d["accuracy_by_step"])) for d in paper["direct"]] == [("lenet", 4), ("resnet8", 4)]
    for run in paper["runs"]:
        assert run["accuracy_by_step"][-1] == run["qann_accuracy"]  # every sample settled at the QANN's output
        assert run["settled_p99"] <= run["steps"] and run["sops_per_sample"] > 0
    report = (runs / "paper.md").read_text()
    for heading in ("## 1. Bit precision", "### Seeds", "## 2. Other converters", "## 3. Direct training"):
        assert heading in report
    assert "Not measured yet" not in report
    assert all((runs / name).stat().st_size > 10000 for name in ("paper_bits.png", "paper_peers.png",
                                                                  "paper_direct.png"))
