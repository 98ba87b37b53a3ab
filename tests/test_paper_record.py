"""make paper's record (bench/paper.py): every finished part is written into paper.json, and a part it records, from
an earlier make paper or a commit, is done, so a clone continues where the committed file stops; --again measures
everything anew."""

import datetime
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import paper  # noqa: E402

CONFIG = paper.Config("mnist", "lenet", 4, 3, 0)


def never_run(line):
    raise AssertionError(f"make paper ran a part its record holds: {line}")


def test_a_recorded_part_is_done_and_again_measures_it(tmp_path):
    (tmp_path / "paper.json").write_text(json.dumps(
        {"date": "2026-12-02", "runs": [{**asdict(CONFIG), "qann_accuracy": 0.993}],
         "peers": [{"converter": "sinabs from_model"}], "peers_seconds": 5.0,
         "direct": [{"dataset": "mnist", "arch": "lenet", "seconds": 3.0}]}))
    settings = replace(paper.FULL, runs=tmp_path / "runs", record=tmp_path / "paper.json")
    assert paper.measure(CONFIG, settings, never_run)["qann_accuracy"] == 0.993
    assert paper.peers(settings, never_run) == {"peers": [{"converter": "sinabs from_model"}], "peers_seconds": 5.0}
    assert paper.direct(settings, ("mnist", "lenet"), never_run)["seconds"] == 3.0
    assert paper.direct(settings, ("fashionmnist", "resnet8"), None) is None  # not recorded: to run
    assert paper.measure(paper.Config("mnist", "lenet", 1, 3, 0), settings, None) is None  # not recorded: to run
    assert not (tmp_path / "runs").exists()

    written = paper.record(settings, "make paper")
    assert written["date"] == f"2026-12-02 to {datetime.date.today().isoformat()}"
    assert json.loads((tmp_path / "paper.json").read_text()) == written
    assert [r["hidden_bits"] for r in written["runs"]] == [4] and written["expected"] == len(paper.configs(settings))
    assert [d["arch"] for d in written["direct"]] == ["lenet"]

    again = replace(settings, take_recorded=False)
    assert paper.measure(CONFIG, again, None) is None
    assert paper.finished(again) == {"runs": [], "peers": [], "peers_seconds": 0, "direct": []}
