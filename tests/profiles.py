"""How many examples a Hypothesis test runs: its full count under the `ci` profile (HYPOTHESIS_PROFILE=ci, as
.ci/run sets it), a tenth of it (at least 10) under the default `dev` profile (tests/conftest.py)."""

import os

FULL = os.environ.get("HYPOTHESIS_PROFILE", "dev") == "ci"


def examples(full: int) -> int:
    """The example count for a test whose full count is `full`."""
    return full if FULL else max(10, full // 10)
