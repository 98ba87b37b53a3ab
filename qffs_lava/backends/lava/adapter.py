"""Where the Lava backend leans on lava-nc beyond its Process, ProcessModel and run-configuration API, in one place.

Written for the versions in WRITTEN_FOR (tests/test_lava.py checks that they are the installed ones; with
another lava-nc or Python, read this file again):

- `import_lava`: lava-nc's runtime sets multiprocessing's start method to 'fork' when first imported, and that
  import fails where something (tqdm's lock, for one) has fixed the start method already.
- `create_runtime`: the compiler's `pypy_channel_size` key, the messages each channel holds (lava-nc's default 64;
  footprint.CHANNEL_SLOTS here), read by lava-nc's PyPy channel builder and nowhere documented.
- `loihi_installed`: `lava.utils.loihi.is_installed`, what says lava-loihi is there (absent in some releases).
"""

from __future__ import annotations

from qffs_lava.backends.lava.footprint import CHANNEL_SLOTS

#: The versions this file was written and checked for.
WRITTEN_FOR = {"lava-nc": "0.10.0", "python": "3.10"}


def import_lava() -> None:
    """Import Lava's runtime, resetting multiprocessing's start method first so that Lava sets 'fork' itself."""
    import multiprocessing

    if multiprocessing.get_start_method(allow_none=True) is not None:
        multiprocessing.set_start_method(None, force=True)
    import lava.magma.core.process.process  # noqa: F401


def create_runtime(process, run_config) -> None:
    """Compile and start the runtime of `process`'s network with channels of CHANNEL_SLOTS messages."""
    process.create_runtime(run_cfg=run_config, compile_config={"pypy_channel_size": CHANNEL_SLOTS})


def loihi_installed() -> bool:
    """Whether lava-loihi, Intel's Loihi 2 extension of Lava, is installed."""
    import_lava()
    try:
        from lava.utils.loihi import is_installed
    except ImportError:
        return False
    return bool(is_installed())
