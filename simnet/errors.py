"""Errors of the simnet harness that users cause (bad scenarios, unavailable backends).

Both derive from :class:`simnet.faults.SimnetError`, so ``simnet run`` catches one base
class and prints a one-line message instead of a traceback (DESIGN.md §10).
"""

from __future__ import annotations

from simnet.faults import SimnetError


class ScenarioError(SimnetError):
    """A scenario file is invalid. ``path`` is the dotted location of the problem
    (``events[2].node``) so the message points at the line to fix."""

    reason = "bad_scenario"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class BackendUnavailable(SimnetError):
    """The requested backend is not implemented or cannot run here; never faked."""

    reason = "backend_unavailable"


__all__ = ["BackendUnavailable", "ScenarioError", "SimnetError"]
