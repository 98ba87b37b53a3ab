"""Loihi 2 hardware tests: they need lava-loihi (Intel's INRC) and are skipped elsewhere."""

import pytest


def _lava_loihi_installed() -> bool:
    try:
        from lava.utils.loihi import is_installed
    except ImportError:
        return False
    return bool(is_installed())


def pytest_collection_modifyitems(config, items):
    if _lava_loihi_installed():
        return
    skip = pytest.mark.skip(
        reason="needs lava-loihi and Loihi 2 access through Intel's INRC; see README 'Deploying to Loihi 2'"
    )
    for item in items:
        item.add_marker(skip)
