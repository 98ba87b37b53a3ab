"""How the library speaks: `logging` for what it says, `warnings.warn` for what a Python user should act on.

Each module logs through its own logger, `logging.getLogger(__name__)`, under "qffs_lava" (the exporter's under its
own package's name, which it `serve`s). These package loggers are at INFO and carry the library's handler, which
writes each message on stderr (a warning's after "warning: "), through tqdm.write so that a progress bar stays
whole, and only where the record reaches no handler of the application's (on the root logger or on the way up to
it): a program that sets up logging gets the records in its own handlers, once. Under torchrun the library's
handler writes rank 0's records alone. To silence or redirect the library:

    logging.getLogger("qffs_lava").setLevel(logging.WARNING)    # warnings only (the exporter's logger likewise)
    logging.getLogger("qffs_lava").addHandler(logging.FileHandler("qffs.log"))  # into a file instead

What a Python user should know and act on (a Lava run with fewer workers than asked, a model near chance) is a
`QffsWarning`, given with `warnings.warn` (`warnings.filterwarnings("ignore", category=qffs.QffsWarning)`).
The commands (`command_messages`) write the records and the QffsWarnings the same way on a stream of their own,
at the level their --quiet and -v/--verbose set.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from typing import Iterator, List

from tqdm import tqdm

from qffs_lava.distributed import main_rank

#: The library's package logger, which the commands' QffsWarnings are logged through.
LIBRARY = "qffs_lava"


class QffsWarning(UserWarning):
    """Something a Python user should know and act on; the commands show it as 'warning: ...'."""

    prefix = "warning: "


class QffsNote(QffsWarning):
    """A run that goes on otherwise than asked (fewer Lava workers, fewer samples); the commands show it as
    'note: ...'."""

    prefix = "note: "


#: The package loggers the library's handler serves: "qffs_lava" and those a package built on it adds (`serve`).
PACKAGES: List[str] = []

#: Where the handler writes (sys.<stream>, looked up at each record), the level a package served is given, and
#: whether a command owns the output (then every record is written, whatever handlers the process has).
_output = {"stream": "stderr", "level": logging.INFO, "command": False}


class Lines(logging.Handler):
    """The library's handler: a record's message (a warning's after 'warning: ', an error's after 'error: '),
    written through tqdm.write."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not main_rank():
            return False
        return (_output["command"] or not _heard_elsewhere(record)) and bool(super().filter(record))

    def format(self, record: logging.LogRecord) -> str:
        prefix = getattr(record, "prefix", f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else "")
        return prefix + super().format(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=getattr(sys, _output["stream"]))
        except BrokenPipeError:  # the reader went away: the command ends quietly, as it does for its own output
            raise
        except Exception:
            self.handleError(record)


def _heard_elsewhere(record: logging.LogRecord) -> bool:
    """Whether a record reaches a handler other than the library's: the application's own."""
    logger = logging.getLogger(record.name)
    while logger is not None:
        if any(not isinstance(handler, Lines) for handler in logger.handlers):
            return True
        if not logger.propagate:
            return False
        logger = logger.parent
    return False


_HANDLER = Lines()


def serve(package: str) -> None:
    """Give a package's logger the library's handler, and INFO (or the running command's level) where it has no
    level of its own."""
    if package in PACKAGES:
        return
    PACKAGES.append(package)
    logger = logging.getLogger(package)
    logger.addHandler(_HANDLER)
    if logger.level == logging.NOTSET:
        logger.setLevel(_output["level"])


@contextlib.contextmanager
def command_messages(stream: str, level: int) -> Iterator[None]:
    """A command's output: the library's records at `level` and above, and its QffsWarnings (each time given, not
    once per place), written on sys.<stream> ("stdout" or "stderr") whatever handlers the process has; all as it
    was after."""
    saved = dict(_output)
    levels = {name: logging.getLogger(name).level for name in PACKAGES}
    _output.update(stream=stream, level=level, command=True)
    for name in PACKAGES:
        logging.getLogger(name).setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", QffsWarning)
            warnings.showwarning = _logging_ours(warnings.showwarning)
            yield
    finally:
        _output.update(saved)
        for name in PACKAGES:
            logging.getLogger(name).setLevel(levels.get(name, saved["level"]))


def _logging_ours(show):
    """A warnings.showwarning that logs a QffsWarning (after its prefix) and leaves any other warning to `show`."""

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, QffsWarning):
            logging.getLogger(LIBRARY).warning("%s", message, extra={"prefix": category.prefix})
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


serve(LIBRARY)
