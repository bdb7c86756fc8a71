"""Who may sync a space with this node: the ``authorize`` hook of its sync sessions.

:class:`mycelium.sync.session.SyncSession` offers and accepts only the spaces its
``authorize(space, remote)`` allows. A node allows a space to a peer exactly when the
space's control log makes that peer a current member (or a writer a member delegated):
:meth:`mycelium.spaces.state.SpaceState.may_sync`. Strangers who learned a space id, and
removed members, can neither read nor push anything through sync (protocols/sync.md §3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from mycelium.errors import MyceliumError
from mycelium.spaces.state import SpaceState


class HoldsSpaces(Protocol):
    def space_state(self, space_id: bytes) -> SpaceState: ...


def member_policy(store: HoldsSpaces) -> Callable[[bytes, bytes], bool]:
    """``authorize(space, remote_pub)`` for sessions over ``store`` (see module docstring)."""

    def authorize(space: bytes, remote: bytes) -> bool:
        try:
            state = store.space_state(space)
        except MyceliumError:  # a space this node does not hold
            return False
        # A community space without any control op is one this node holds only the
        # genesis of, while restoring it (docs/recovery.md): offer it to anyone; only a
        # peer that holds it can match the offer, and it answers only if its log lists us.
        restoring = state.kind == "community" and state.control_count == 0
        return restoring or state.may_sync(remote)

    return authorize
