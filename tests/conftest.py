"""Suite-wide settings: Hypothesis profiles (more examples in CI, fewer locally).

Profiles govern every property without its own ``max_examples``; costly properties take
theirs from :func:`tests.budget.examples`. ``HYPOTHESIS_PROFILE`` picks a profile by name.
In CI the failing example's reproduction blob is printed, so a failure found by a random
example can be replayed (``@reproduce_failure``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

from tests.browser import launch_chromium
from tests.ci import CI

settings.register_profile("ci", max_examples=200, deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if CI else "dev"))


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """The session's Chromium (tests/browser.py), shared by the web and gateway tests."""
    yield from launch_chromium()
