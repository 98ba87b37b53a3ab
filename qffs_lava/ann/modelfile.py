"""The model file (model.pt): a quantized ANN as plain data, safe to load.

A dict saved with torch.save that loads with `torch.load(path, weights_only=True)`:

    format "qffs-model", version 2, arch (plain-data nodes, see models.py), state_dict,
    quantized (bool), bits {act, out, weight, layers}, input_norm {mean, std},
    dataset, input_shape, num_classes, input_levels, accuracy {float, qann, ...}, train {...}

and, from qffs-train's hardware-exact phase on, `hardware_exact`: true when the QANN the
model was trained as (accuracy.qann) is its integer network (convert.integer), not the LSQ
forward pass. Files without the key are LSQ models.

Version 1 files (whose arch is a `layers` chain) are read too: their arch becomes the
equivalent chain of nodes (`models.arch_from_v1`). Anything that would need arbitrary
unpickling is refused before it runs.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from qffs_lava.ann.models import GraphModel, arch_from_v1, build_model, input_normalization, set_quantized
from qffs_lava.errors import ModelFileError
from qffs_lava.fileio import kind_of_file, write_atomically

MODEL_FORMAT = "qffs-model"
MODEL_VERSION = 2
READ_VERSIONS = (1, 2)
REQUIRED_KEYS = ("arch", "state_dict", "quantized", "bits", "input_norm", "dataset", "accuracy")


def save_model_file(path: str | Path, model: nn.Module, record: Dict[str, Any]) -> Dict[str, Any]:
    """Write `record` (everything but the state dict) plus the model's state dict, atomically: made in memory,
    checked to load safely (or it is not written), then written whole (fileio.write_atomically)."""
    content = {"format": MODEL_FORMAT, "version": MODEL_VERSION, **record,
               "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
    buffer = io.BytesIO()
    torch.save(content, buffer)
    _checked_model_file(Path(path), torch.load(io.BytesIO(buffer.getvalue()), map_location="cpu", weights_only=True))
    write_atomically(path, buffer.getvalue())
    return content


def _unpickling_refusal(err: pickle.UnpicklingError) -> str:
    """What torch's weights-only loader found: the text after 'WeightsUnpickler error:', whole words."""
    text = " ".join(str(err).split())
    reason = text.split("WeightsUnpickler error:", 1)[-1].strip() if "WeightsUnpickler error:" in text else text
    return reason if len(reason) <= 200 else reason[:200].rsplit(" ", 1)[0] + " ..."


def _load_weights_only(path: Path) -> Any:
    """torch.load(path, weights_only=True), every failure a ModelFileError that says what the file is."""
    kind = kind_of_file(path, "model file", ModelFileError, give="give the model file that qffs-train wrote")
    if kind == "an HDF5 file":
        raise ModelFileError(f"{path} is an HDF5 file (a net.h5?), not a PyTorch model file: give the model file "
                             "that qffs-train wrote (did you swap the arguments? qffs-export MODEL.pt NET.h5)")
    if kind not in ("a zip archive", "a pickle"):
        raise ModelFileError(f"{path} is not a PyTorch model file: it is {kind}; give the model file that "
                             "qffs-train wrote")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelFileError(f"refused {path}: loading it needs arbitrary unpickling, which could run code "
                             f"({_unpickling_refusal(err)})") from None
    except Exception as err:  # truncated zip, a zip that torch did not write, ...
        raise ModelFileError(f"cannot read model file {path}: {type(err).__name__}: {str(err)[:200]}") from None


def read_init(path: str | Path) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, torch.Tensor]]]:
    """qffs-train --init's file, loaded once: (content, None) for a qffs model file, (None, state dict) for a
    plain PyTorch state dict (`torch.save(model.state_dict(), path)`, or a checkpoint dict holding one under
    "state_dict")."""
    path = Path(path)
    content = _load_weights_only(path)
    if isinstance(content, dict) and content.get("format") == MODEL_FORMAT:
        return _checked_model_file(path, content), None
    if isinstance(content, dict) and isinstance(content.get("state_dict"), dict):
        content = content["state_dict"]
    if not isinstance(content, dict) or not content or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in content.items()):
        raise ModelFileError(f"{path} is neither a qffs model file nor a PyTorch state dict (a dict of tensors, "
                             "as torch.save(model.state_dict(), path) writes)")
    return None, content


def read_model_file(path: str | Path) -> Dict[str, Any]:
    """The model file's dict, loaded without arbitrary unpickling and checked for format and version."""
    path = Path(path)
    return _checked_model_file(path, _load_weights_only(path))


def _checked_model_file(path: Path, content: Any) -> Dict[str, Any]:
    """The loaded `content` of `path` checked for format, version and keys; a version 1 file made version 2."""
    if not isinstance(content, dict) or content.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path} is not a qffs model file (no format '{MODEL_FORMAT}'); make one with qffs-train")
    version = content.get("version")
    if isinstance(version, bool) or version not in READ_VERSIONS:
        raise ModelFileError(f"{path} is model file version {version!r}; this qffs-lava reads versions "
                             f"{', '.join(map(str, READ_VERSIONS))}")
    missing = [k for k in REQUIRED_KEYS if k not in content]
    if missing:
        raise ModelFileError(f"{path} lacks {', '.join(missing)}")
    if version == 1:
        try:
            content = {**content, "version": MODEL_VERSION, "arch": arch_from_v1(content["arch"])}
        except (ValueError, TypeError, AttributeError) as err:
            raise ModelFileError(f"{path}: {err}") from None
    return content


def load_model_file(path: str | Path) -> Tuple[Dict[str, Any], GraphModel]:
    """(content, model in eval mode): the architecture rebuilt from plain data and its weights loaded."""
    return model_from_content(path, read_model_file(path))


def model_from_content(path: str | Path, content: Dict[str, Any]) -> Tuple[Dict[str, Any], GraphModel]:
    """(content, model in eval mode) from the checked content of the model file at `path`."""
    try:
        weight_bits = content["bits"].get("weight")
        with torch.device("meta"):  # shapes only: nothing is allocated for a hostile architecture
            skeleton = build_model(content["arch"], weight_bits=weight_bits).state_dict()
        state = content["state_dict"]
        if not isinstance(state, dict) or set(state) != set(skeleton):
            raise ValueError(f"the state dict's keys do not match the architecture's ({len(skeleton)} expected)")
        for key, expected in skeleton.items():
            if not isinstance(state[key], torch.Tensor) or state[key].shape != expected.shape:
                got = tuple(state[key].shape) if isinstance(state[key], torch.Tensor) else type(state[key]).__name__
                raise ValueError(f"{key} is {got}, the architecture needs {tuple(expected.shape)}")
        model = build_model(content["arch"], weight_bits=weight_bits)
        model.load_state_dict(state, strict=True)
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError) as err:
        raise ModelFileError(f"{path}: architecture and weights do not fit: {str(err)[:300]}") from None
    try:
        content = {**content, "input_norm": input_normalization(content["input_norm"],
                                                                content["arch"]["input_shape"][0])}
    except ValueError as err:
        raise ModelFileError(f"{path}: input_norm: {err}") from None
    model.set_input_norm(content["input_norm"])
    set_quantized(model, bool(content["quantized"]))
    return content, model.eval()
