"""Service layer end to end over an in-memory Soil stand-in (and the real Soil when present)."""

from __future__ import annotations

import pytest

from mycelium.identity.didkey import did_from_public_key
from mycelium.log.envelope import Kind
from mycelium.spaces import service
from mycelium.spaces.errors import BadInvite, MembershipError, NoEpochKey, NotAdmin, SpaceError
from mycelium.spaces.invite import decode_invite

from .conftest import ident
from .fakesoil import FakeSoil, sync

A, B, C, D = ident(1), ident(2), ident(3), ident(4)


def did(who) -> str:  # type: ignore[no-untyped-def]
    return did_from_public_key(who.public_key)


def write(soil: FakeSoil, space: bytes, text: bytes) -> None:
    soil.append(space, Kind.DATA, text)


def test_create_space_makes_caller_admin_with_a_key() -> None:
    a = FakeSoil(A)
    space = service.create_space(a, "market", now_ms=5)
    state = a.space_state(space)
    assert state.members == {A.public_key: "admin"} and state.name == "market"
    assert not state.needs_rotation()
    write(a, space, b"hello")
    assert a.readable(space) == {b"hello"}


def test_invite_join_and_read_each_other() -> None:
    a, b = FakeSoil(A), FakeSoil(B)
    space = service.create_space(a, "market")
    write(a, space, b"from a, before b joined")
    code = service.invite(a, space, did(B))
    assert decode_invite(code).genesis == a.genesis(space)
    assert service.join(b, code) == space
    assert b.space_state(space).members == a.space_state(space).members
    write(b, space, b"from b")
    sync(a, b, space)
    assert b"from b" in a.readable(space)
    assert b.readable(space) == {b"from a, before b joined", b"from b"}


def test_join_refuses_code_for_someone_else_and_stores_nothing() -> None:
    a, c = FakeSoil(A), FakeSoil(C)
    space = service.create_space(a, "market")
    code = service.invite(a, space, did(B))
    with pytest.raises(BadInvite) as exc:
        service.join(c, code)
    assert exc.value.reason == "not_invited"
    assert c.space_ids() == []


def test_removal_end_to_end_with_three_identities() -> None:
    a, b, c = FakeSoil(A), FakeSoil(B), FakeSoil(C)
    space = service.create_space(a, "market")
    service.join(b, service.invite(a, space, did(B)))
    service.join(c, service.invite(a, space, did(C)))
    for soil, text in ((a, b"a1"), (b, b"b1"), (c, b"c1")):
        write(soil, space, text)
    for x, y in ((a, b), (a, c), (b, c)):
        sync(x, y, space)
    before = {b"a1", b"b1", b"c1"}
    assert a.readable(space) == b.readable(space) == c.readable(space) == before

    old_epoch = a.space_state(space).current_epoch
    new_epoch = service.remove(a, space, did(C))
    assert new_epoch != old_epoch
    sync(a, b, space)
    assert b.space_state(space).current_epoch == new_epoch
    write(a, space, b"a2 secret")
    write(b, space, b"b2 secret")
    write(c, space, b"c2 from removed member")   # C has not heard of its removal yet
    for x, y in ((a, b), (a, c), (b, c)):
        sync(x, y, space)

    assert not c.space_state(space).is_member(C.public_key)
    # C still reads what it had (and its own late write); nothing written by A or B after.
    assert c.readable(space) == before | {b"c2 from removed member"}
    assert a.readable(space) == b.readable(space) == before | {b"a2 secret", b"b2 secret"}
    with pytest.raises(NoEpochKey):
        write(c, space, b"c3")


def test_concurrent_remove_and_add_converge_after_maintain() -> None:
    a, b = FakeSoil(A), FakeSoil(B)
    space = service.create_space(a, "market")
    service.join(b, service.invite(a, space, did(B), role="admin"))
    service.invite(a, space, did(C))
    sync(a, b, space)
    service.remove(a, space, did(C))          # A removes C ...
    service.invite(b, space, did(D))          # ... while B, offline, adds D
    sync(a, b, space)
    for soil in (a, b):
        service.maintain_all(soil)
    sync(a, b, space)
    for soil in (a, b):
        assert service.maintain_all(soil) == []
    sa, sb = a.space_state(space), b.space_state(space)
    assert sa.members == sb.members == {A.public_key: "admin", B.public_key: "admin",
                                        D.public_key: "member"}
    assert sa.current_epoch == sb.current_epoch != 0
    assert sa.members_missing_key() == frozenset()
    assert sa.epoch_key(sa.current_epoch, C) is None
    assert sa.epoch_key(sa.current_epoch, D) is not None


def test_permission_and_sanity_errors() -> None:
    a, b = FakeSoil(A), FakeSoil(B)
    space = service.create_space(a, "market")
    service.join(b, service.invite(a, space, did(B)))
    with pytest.raises(NotAdmin):
        service.invite(b, space, did(C))
    with pytest.raises(MembershipError) as exc:
        service.remove(a, space, did(C))
    assert exc.value.reason == "not_member"
    with pytest.raises(MembershipError) as exc:
        service.remove(a, space, did(A))
    assert exc.value.reason == "last_admin"


def test_personal_space_is_deterministic_and_private() -> None:
    one, two = FakeSoil(A), FakeSoil(A)
    pid = service.ensure_personal_space(one)
    assert service.ensure_personal_space(one) == pid == service.ensure_personal_space(two)
    assert one.space_state(pid).kind == "personal"
    assert len(one.control_envelopes(pid)) == 1
    with pytest.raises(SpaceError) as exc:
        service.invite(one, pid, did(B))
    assert exc.value.reason == "personal_space"


def test_reinviting_a_member_adds_nothing_new() -> None:
    a = FakeSoil(A)
    space = service.create_space(a, "market")
    service.invite(a, space, did(B))
    n = len(a.control_envelopes(space))
    service.invite(a, space, did(B))
    assert len(a.control_envelopes(space)) == n
