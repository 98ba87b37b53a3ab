"""The errors a user can fix. CLIs print them as one line on stderr and exit with code 2.

An error may name parameters: its message is then a template with one "{}" per parameter (a
name, or (name, value) where the value matters); other braces are text. In Python the message shows them as
arguments are written (`steps`, `loihi_check=False`); the command-line tools show them as their
own flags (`--steps`, `--no-loihi-check`) through `render`.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Optional, Tuple, Union

#: A parameter named in an error: its name, or (name, value).
Parameter = Union[str, Tuple[str, Any]]


def python_argument(name: str, value: Optional[Any]) -> str:
    """A parameter as a Python call writes it: `name`, or `name=value`."""
    return name if value is None else f"{name}={value!r}"


class QffsError(Exception):
    """Bad input the user can fix: the message says what and how."""

    def __init__(self, message: str, *parameters: Parameter):
        self.template = message
        self.parameters = tuple(p if isinstance(p, tuple) else (p, None) for p in parameters)
        super().__init__(self.render(python_argument))

    def renamed(self, names: Dict[str, str]) -> "QffsError":
        """The same error, its parameters named as `names` maps them (a function's own argument names)."""
        err = copy.copy(self)
        err.parameters = tuple((names.get(name, name), value) for name, value in self.parameters)
        err.args = (err.render(python_argument),)
        return err

    def render(self, show: Callable[[str, Optional[Any]], str]) -> str:
        """The message, each named parameter shown by show(name, value) (value None where it does not matter)."""
        parts = self.template.split("{}")
        if len(parts) != len(self.parameters) + 1:
            return self.template
        shown = [show(name, value) for name, value in self.parameters]
        return parts[0] + "".join(text + part for text, part in zip(shown, parts[1:]))


class ParameterError(QffsError, ValueError):
    """An argument out of its range, of the wrong kind, or contradicting another: the message names them."""


class DatasetNotFound(QffsError):
    """A dataset is not in the data folder; the message names the command that fetches it."""


class ModelFileError(QffsError):
    """A model file that is missing, unreadable, unsafe, or of the wrong format or version."""


class QffsFormatError(QffsError, ValueError):
    """A net file that cannot be run: the message names the layer and the key and what was expected.

    where: the place ('layer 3 (conv)', 'layer 3 synapse 1', 'meta'); None for the file as a whole
    key:   the key at that place; None where the place as a whole is wrong
    """

    def __init__(self, message: str, *parameters: Parameter, where: Optional[str] = None,
                 key: Optional[str] = None):
        super().__init__(message, *parameters)
        self.where, self.key = where, key

    @classmethod
    def at(cls, where: str, key: str, text: str) -> "QffsFormatError":
        """The error "WHERE key 'KEY': TEXT"."""
        return cls(f"{where} key '{key}': {text}", where=where, key=key)
