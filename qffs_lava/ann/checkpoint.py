"""What qffs-train keeps beside the model file while it trains (docs/training.md, "Long runs").

    MODEL.checkpoint.pt   after every epoch of every phase: the model, optimizer, schedule, fp16's
                          gradient scaler, every rank's random states, the phase and epoch, and
                          the results so far;
                          `--resume` continues from it. Removed once the model file is written.
    MODEL.metrics.jsonl   one JSON object per epoch: phase, epoch, loss, validation accuracy,
                          learning rate, images per second, seconds; a phase's last line also
                          its test accuracy and the epoch its model is from.

Both are written whole and atomically (made in memory, renamed into place) by rank 0 alone,
so an interruption at any moment leaves the last complete checkpoint. A checkpoint is plain
data: it loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any, Dict, List

import torch

from qffs_lava.errors import ParameterError, QffsError
from qffs_lava.fileio import write_atomically

CHECKPOINT_FORMAT = "qffs-checkpoint"
CHECKPOINT_VERSION = 1
#: Options that may differ between a run and its resumption: they change no result.
RESUMABLE_CHANGES = ("download", "data_dir", "workers")


def checkpoint_path(out: str | Path) -> Path:
    """model.pt -> model.checkpoint.pt"""
    return Path(out).with_suffix(".checkpoint.pt")


def metrics_path(out: str | Path) -> Path:
    """model.pt -> model.metrics.jsonl"""
    return Path(out).with_suffix(".metrics.jsonl")


def save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    """Write a checkpoint whole, atomically."""
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}, buffer)
    write_atomically(path, buffer.getvalue())


def load_checkpoint(path: Path, config: Dict[str, Any]) -> Dict[str, Any]:
    """The checkpoint at `path`, checked to be one and to belong to a run with this configuration."""
    if not path.is_file():
        raise ParameterError(f"{{}}: there is no checkpoint {path} to resume from (it is written after the first "
                             "epoch, and removed when the model file is written); run without it", "resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as err:
        raise QffsError(f"cannot read checkpoint {path} ({type(err).__name__}: {str(err)[:150]}); delete it and "
                        "train from the start") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise QffsError(f"{path} is not a qffs-train checkpoint; delete it or choose another --out")
    if state.get("version") != CHECKPOINT_VERSION:
        raise QffsError(f"checkpoint {path} is of version {state.get('version')}, this qffs-train writes and "
                        f"reads version {CHECKPOINT_VERSION}; train from the start")
    saved = state["config"]
    differing = [name for name in sorted(set(saved) | set(config)) if name not in RESUMABLE_CHANGES
                 and saved.get(name) != config.get(name)]
    if differing:
        raise ParameterError(f"{{}}: checkpoint {path} is of a run with other options ("
                             + "; ".join(f"{name}: {saved.get(name)!r} there, {config.get(name)!r} now"
                                         for name in differing[:5])
                             + "): resume with the options it was started with", "resume")
    return state


def write_metrics(path: Path, lines: List[Dict[str, Any]]) -> None:
    """The metrics file: one JSON object per line."""
    write_atomically(path, "".join(json.dumps(line) + "\n" for line in lines).encode())


def read_metrics(path: str | Path) -> List[Dict[str, Any]]:
    """The metrics file's lines as dicts."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def phase_seconds(lines: List[Dict[str, Any]]) -> Dict[str, float]:
    """Seconds per phase (float, qat, hardware), summed over the metrics file's epochs."""
    seconds = {"float": 0.0, "qat": 0.0, "hardware": 0.0}
    for line in lines:
        seconds[line["phase"]] += line["seconds"]
    return seconds
