"""What the suite knows about running in CI (``CI=true``, as ``.ci/run`` is run).

In CI a test must not skip because something it needs is missing: that would hide the
regression the test exists for. :func:`unavailable` is a visible skip locally and a
failure in CI.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip locally; fail in CI, where everything the suite needs must be present."""
    if CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)
