"""How hard property tests try: more examples in CI (``CI=true``), fewer locally.

Hypothesis's ``@settings(max_examples=N)`` on a test overrides any profile, so properties
whose examples are costly (real SQLite stores, simnet runs, key splitting) take their
count from :func:`examples`; every other property inherits the profile loaded in
``tests/conftest.py``. ``HYPOTHESIS_EXAMPLES_SCALE`` multiplies the counts for a soak
(e.g. ``HYPOTHESIS_EXAMPLES_SCALE=10``).
"""

from __future__ import annotations

import os

from tests.ci import CI

__all__ = ["CI", "examples"]


def examples(*, ci: int, local: int) -> int:
    """Examples for one property: ``ci`` in CI, ``local`` elsewhere, times the scale."""
    scale = float(os.environ.get("HYPOTHESIS_EXAMPLES_SCALE", "1"))
    return max(1, round((ci if CI else local) * scale))
