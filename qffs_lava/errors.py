"""The errors a user can fix. CLIs print them as one line on stderr and exit with code 2."""


class QffsError(Exception):
    """Bad input the user can fix: the message says what and how."""


class DatasetNotFound(QffsError):
    """A dataset is not under --data-dir; the message names the command that fetches it."""


class ModelFileError(QffsError):
    """A model file that is missing, unreadable, unsafe, or of the wrong format or version."""


class QffsFormatError(QffsError, ValueError):
    """A net file that cannot be run: the message names the layer and the key and what was expected."""
