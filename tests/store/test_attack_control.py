"""Issue 15 §1: the control log cannot be exhausted by people who are not admins.

Junk control ops from throwaway keys used to be stored and counted against a per-space
cap of 10 000; an admin's remove at the cap was then accepted by one node and refused by
another, for good. Now only authors some held op named admin have control ops stored,
the bound is per author (the same ops count in any arrival order), and sync sessions
only share a space with its current members.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mycelium.log import envelope as envelope_mod
from mycelium.spaces import control, service
from mycelium.spaces import state as state_mod

from .conftest import A, B, C, Market, did, ident, open_soil, sync
from .hostile import Forger, junk_control_ops, raws


def test_strangers_control_ops_are_neither_stored_nor_counted(market: Market) -> None:
    a, b, space = market.a, market.b, market.space
    before = b.space_state(space).control_count
    junk = junk_control_ops(space, 300)
    result = b.ingest(space, raws(junk))
    assert not result.accepted
    assert b.space_state(space).control_count == before
    assert b.version_vector(space).keys() == a.version_vector(space).keys()
    # they wait in the small strangers' pool (bounded), or are refused by name
    reasons = {r for _, r in result.rejected}
    assert reasons <= {"pending_full"}
    assert b.pending_count(space) <= 1000
    # the admin's operations keep working, and b follows them
    service.invite(a, space, did(C))
    service.remove(a, space, did(C))

    sync(a, b, space)
    assert not b.space_state(space).is_member(C.public_key)
    assert b.space_state(space).current_epoch == a.space_state(space).current_epoch


def test_member_who_is_no_admin_cannot_grow_the_control_log(market: Market) -> None:
    """A plain member's control ops wait pending; they never enter the resolution."""
    b, space = market.b, market.space
    forger = Forger(B, space, seq=b.version_vector(space).get(B.public_key, 0),
                    prev=b.heads(space).get(B.public_key, (0, None))[1])
    ops = [forger.control(control.op_add_member(lc=100 + i, member=ident(50 + i).public_key))
           for i in range(5)]
    a = market.a
    before = a.space_state(space).control_count
    result = a.ingest(space, raws(ops))
    assert not result.accepted and result.pending == 5
    assert a.space_state(space).control_count == before
    assert a.metrics()["pending.not_admin"] == 1  # the first; the rest wait behind it


def test_junk_arrives_after_admin_ops_in_any_order_same_membership(tmp_path: Path) -> None:
    """Two nodes get the admin's ops and junk in opposite orders and still agree."""
    a = open_soil(tmp_path / "a.db", A)
    space = service.create_space(a, "market")
    service.invite(a, space, did(B))
    service.invite(a, space, did(C))
    service.remove(a, space, did(C))
    honest = a.control_envelopes(space)
    junk = raws(junk_control_ops(space, 50))
    x, y = open_soil(tmp_path / "x.db", ident(9)), open_soil(tmp_path / "y.db", ident(10))
    for node, order in ((x, honest + junk), (y, junk[::-1] + honest[::-1])):
        node.add_space(a.genesis(space))
        for raw in order:
            node.ingest(space, [raw])
    for node in (x, y):
        st = node.space_state(space)
        assert st.members == a.space_state(space).members
        assert node.version_vector(space) == a.version_vector(space)
        assert node.heads(space) == a.heads(space)


def test_per_author_cap_counts_the_same_ops_in_any_order(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    monkeypatch.setattr(state_mod, "MAX_CONTROL_OPS_PER_AUTHOR", 3)
    a = open_soil(tmp_path / "a.db", A)
    space = service.create_space(a, "market")  # A's op 1: the first epoch
    for i in range(4):
        service.invite(a, space, did(ident(20 + i)))  # add + grant each
    envs = a.control_envelopes(space)

    decoded = [envelope_mod.decode(r) for r in envs]
    forward = state_mod.SpaceState(a.space_state(space).genesis)
    backward = state_mod.SpaceState(a.space_state(space).genesis)
    for env in decoded:
        forward.apply(env)
    for env in reversed(decoded):
        backward.apply(env)
    assert forward.members == backward.members
    assert forward.ignored == backward.ignored
    assert forward.control_count == backward.control_count == 3
    assert sum(r == "too_many_control_ops" for r in forward.ignored.values()) == len(decoded) - 3
