"""Suite-wide settings: Hypothesis profiles (more examples in CI, fewer locally, many
and fresh with ``HYPOTHESIS_PROFILE=explore``).

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

# CI draws the same examples on every run (derandomize): the gate is reproducible, and a
# red build means the change, not the dice. Exploration is the "explore" profile's job
# (fresh random examples, more of them; README "Development"): what it finds becomes an
# @example or a regression test.
settings.register_profile("ci", max_examples=200, deadline=None, print_blob=True,
                          derandomize=True)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile("explore", max_examples=1000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if CI else "dev"))


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """The session's Chromium (tests/browser.py), shared by the web and gateway tests."""
    yield from launch_chromium()
