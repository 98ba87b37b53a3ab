"""Files in and out: what kind a file is, and output written atomically and never over an input.

Outputs are made in memory, written to a temporary file beside the target and renamed
into place (`write_atomically`), so a crash, a full disk or a refused write leaves any
earlier file at that path intact and no half-written file behind. The result gets the
permissions a plain `open()` would give it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from qffs_lava.errors import ParameterError, QffsError

#: Leading bytes of the formats a user might pass by mistake, and what to call them.
SIGNATURES = (
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"PK\x03\x04", "a zip archive"),  # torch.save's format, and NumPy's .npz
    (b"\x1f\x8b", "a gzip file"),
    (b"%PDF", "a PDF document"),
)


def file_kind(path: str | Path) -> str:
    """What the file is by its first bytes: one of SIGNATURES' names, 'a pickle', 'a text file',
    'an empty file' or 'binary data of an unknown kind'."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "an empty file"
    for signature, name in SIGNATURES:
        if head.startswith(signature):
            return name
    if head[:1] == b"\x80":
        return "a pickle"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:  # possibly a multi-byte character cut at byte 512
        text = head[:-3].decode("utf-8", "replace")
    if all(c.isprintable() or c in "\t\r\n" for c in text.rstrip("\ufffd")):
        return "a text file"
    return "binary data of an unknown kind"


def kind_of_file(path: str | Path, what: str, error: type = QffsError, parameter: str | None = None,
                 give: str = "") -> str:
    """file_kind(path) once `path` is a file to read as `what` ("net file", "model file"); else `error`:
    'PATH is a folder, not a WHAT: GIVE' or 'WHAT PATH does not exist' (with `parameter`, the messages name it,
    as QffsError's {} does)."""
    name = "{}" if parameter else what
    args = (parameter,) if parameter else ()
    if Path(path).is_dir():
        raise error(("{} " if parameter else "") + f"{path} is a folder, not a {what}" + (f": {give}" if give else ""),
                    *args)
    if not Path(path).is_file():
        raise error(f"{name} {path} does not exist", *args)
    return file_kind(path)


def check_writable(path: str | Path) -> Path:
    """Fail early, before any long work, when `path` cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise QffsError(f"output path {path} is a directory; give a file name")
    if not parent.is_dir():
        raise QffsError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise QffsError(f"cannot write {path}: folder {parent} is not writable")
    return path


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_outputs(outputs: dict, inputs: dict) -> None:
    """Refuse any output that is one of the inputs, or another output, before anything runs.

    outputs, inputs: {parameter name (e.g. 'json'): path or None}; the error names the parameters.
    """
    given = {name: Path(path) for name, path in outputs.items() if path is not None}
    sources = {name: Path(path) for name, path in inputs.items() if path is not None}
    names = list(given)
    for i, name in enumerate(names):
        for other, source in list(sources.items()) + [(n, given[n]) for n in names[:i]]:
            if _same_file(given[name], source):
                raise ParameterError(f"{{}} {given[name]} is the same file as {{}} {source}: writing it would "
                                     "destroy it; choose another output path", name, other)


def _open_mode(path: Path) -> int:
    """The permission bits `open(path, 'w')` would leave: an existing file's own, else 0666 minus the umask."""
    if path.exists():
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomically(path: str | Path, data: bytes) -> Path:
    """Write `data` (the whole file, made in memory) to `path` through a temporary file beside it, renamed into
    place, with the permissions `open()` would give it (mkstemp creates it 0600).

    When the write fails (a full disk, a file-size limit, a folder gone) the temporary file is deleted, a file
    already at `path` is untouched, and a QffsError says so in one line.
    """
    path = check_writable(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _open_mode(path))
        os.replace(tmp, path)
        return path
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(err, OSError):
            kept = "the file already there is as it was" if path.exists() else "nothing was written"
            raise QffsError(f"cannot write {path}: {err.strerror or err} ({len(data):,} bytes); {kept}") from None
        raise
