"""Issue 15 §3: a stranger cannot fill the pending rows for good.

Envelopes of unknown authors used to be parked as ``not_member`` with nothing ever
expiring or evicting them: 10 000 of them made a newly invited member's first write and
an honest out-of-order envelope be refused ``pending_full``, still after a restart. Now
strangers share a small pool (per author and in total), their rows expire, and the rest
of the room is kept for authors the control log admits.
"""

from __future__ import annotations

import os
from pathlib import Path

from mycelium.log.limits import (
    MAX_PENDING_PER_STRANGER,
    MAX_PENDING_STRANGERS,
    PENDING_STRANGER_TTL_MS,
)
from mycelium.spaces import service

from .conftest import A, B, Clock, did, ident, open_soil, sync
from .hostile import Forger, raws, throwaway


def test_strangers_cannot_take_the_room_of_members(tmp_path: Path) -> None:
    clock = Clock()
    a, b = open_soil(tmp_path / "a.db", A), open_soil(tmp_path / "b.db", B, clock)
    space = service.create_space(a, "market")
    service.join(b, service.invite(a, space, did(B)))
    epoch, junk_key = a.space_state(space).current_epoch, os.urandom(32)

    flood = [Forger(throwaway(), space).listing("x", {"title": "spam"}, epoch, junk_key)
             for _ in range(MAX_PENDING_STRANGERS + 200)]
    one = Forger(throwaway(), space, seq=1, prev=os.urandom(32))  # a long chain after a gap
    flood += [one.listing(f"y{i}", {"title": "spam"}, epoch, junk_key)
              for i in range(MAX_PENDING_PER_STRANGER + 10)]
    result = b.ingest(space, raws(flood))
    assert not result.accepted
    assert b.pending_count(space) <= MAX_PENDING_STRANGERS
    assert {r for _, r in result.rejected} == {"pending_full"}
    assert b.metrics()["rejected.pending_full"] >= 200

    # an honest member's out-of-order envelopes still wait for their gap
    for i in range(3):
        a.put_doc(space, "products", f"a{i}", {"title": f"pear {i}"})
    from_a = a.envelopes_since(space, b.version_vector(space), limit=100, max_bytes=1 << 22)
    assert b.ingest(space, from_a[1:]).pending == len(from_a) - 1
    assert len(b.ingest(space, from_a[:1]).accepted) == len(from_a)

    # a newly invited member writes; once the add op is here its writes are stored,
    # even out of order
    e = open_soil(tmp_path / "e.db", ident(5))
    service.join(e, service.invite(a, space, did(ident(5))))
    for i in range(3):
        e.put_doc(space, "products", f"e{i}", {"title": f"fig {i}"})
    sync(a, b, space)
    from_e = e.envelopes_since(space, b.version_vector(space), limit=100, max_bytes=1 << 22)
    assert b.ingest(space, from_e[1:]).pending == len(from_e) - 1
    b.ingest(space, from_e[:1])
    assert b.get_doc(space, "products", "e2")["title"] == "fig 2"

    # the strangers' rows survive a restart, but not their time to live
    b.close()
    b = open_soil(tmp_path / "b.db", B, clock)
    held = b.pending_count(space)
    assert 0 < held <= MAX_PENDING_STRANGERS
    clock.now += PENDING_STRANGER_TTL_MS + 1
    b.retry_deferred(space)  # the node's housekeeping
    assert b.pending_count(space) == 0
    assert b.metrics()["pending_expired"] == held
    for s in (a, b, e):
        s.close()
