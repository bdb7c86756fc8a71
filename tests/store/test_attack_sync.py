"""Issue 15 §1 and §2 through real sync sessions: only current members sync a space.

The node's sessions carry :func:`mycelium.spaces.access.member_policy` as their
``authorize`` hook (the daemon wires it): a stranger who knows a space id, or a removed
member, can neither read nor push anything through sync.
"""

from __future__ import annotations

from pathlib import Path

from mycelium.spaces import service
from mycelium.spaces.access import member_policy
from mycelium.sync.session import SyncSession
from tests.sync.pair import pump

from .conftest import A, B, Market, did, ident, open_soil


def test_sync_shares_a_space_only_with_its_current_members(market: Market,
                                                           tmp_path: Path) -> None:
    """A stranger (or removed member) who knows the space id gets nothing through sync,
    and pushes nothing: the node's sessions carry the member policy."""
    a, space = market.a, market.space
    stranger_id = ident(77)
    stranger = open_soil(tmp_path / "s.db", stranger_id)
    stranger.add_space(a.genesis(space))
    # the stranger's store also holds junk it wants to push (it "is a member" of nothing,
    # so offer the space by hand through a store that claims it)
    stranger.ingest(space, a.control_envelopes(space))

    class Pushy:
        def __init__(self, inner: object) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> object:
            return getattr(self.inner, name)

        def member_spaces(self) -> list[bytes]:
            return [space]

    sa = SyncSession(Pushy(stranger), local_id=stranger_id.public_key,  # type: ignore[arg-type]
                     remote_id=A.public_key, initiator=True, now=0)
    sb = SyncSession(a, local_id=A.public_key, remote_id=stranger_id.public_key,
                     initiator=False, now=0, authorize=member_policy(a))
    pump(sa, sb)
    assert sa.shared_spaces == [] and sb.shared_spaces == []
    # a member is served
    sc = SyncSession(market.b, local_id=B.public_key, remote_id=A.public_key,
                     initiator=True, now=0, authorize=member_policy(market.b))
    sd = SyncSession(a, local_id=A.public_key, remote_id=B.public_key, initiator=False,
                     now=0, authorize=member_policy(a))
    pump(sc, sd)
    assert sc.shared_spaces == [space]
    # and a removed member is not, any more
    service.remove(a, space, did(B))
    se = SyncSession(market.b, local_id=B.public_key, remote_id=A.public_key,
                     initiator=True, now=0)
    sf = SyncSession(a, local_id=A.public_key, remote_id=B.public_key, initiator=False,
                     now=0, authorize=member_policy(a))
    pump(se, sf)
    assert sf.shared_spaces == []
    stranger.close()
