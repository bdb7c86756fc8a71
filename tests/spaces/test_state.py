from __future__ import annotations

import pytest

from mycelium.crypto.aead import DecryptError
from mycelium.log.envelope import Envelope
from mycelium.spaces import control
from mycelium.spaces.errors import (
    BadControlOp,
    NotAdmin,
    NotMember,
    RemovedAuthor,
    UnknownEpoch,
    WrongSpace,
)
from mycelium.spaces.genesis import Genesis, make_genesis, parse_genesis
from mycelium.spaces.state import SpaceState, epoch_id_for

from .conftest import Chain, ident, random_key

A, B, C, D = ident(1), ident(2), ident(3), ident(4)


def community(creator=A, kind="community") -> Genesis:  # type: ignore[no-untyped-def]
    return parse_genesis(make_genesis(creator, "market", kind, 1, b"salt"))


def rotate(state: SpaceState, chain: Chain, recipients, lc=None) -> tuple[Envelope, bytes]:  # type: ignore[no-untyped-def]
    key = random_key()
    keys = control.seal_keys(state.space_id, key, recipients)
    env = chain.control(control.op_epoch(lc=lc or state.next_lc(), keys=keys))
    return env, key


def invite(state: SpaceState, chain: Chain, who, key: bytes, role="member") -> list[Envelope]:  # type: ignore[no-untyped-def]
    add = chain.control(control.op_add_member(lc=state.next_lc(), member=who.public_key, role=role))
    state.apply(add)
    keys = control.seal_keys(state.space_id, key, [who.public_key])
    lc = state.next_lc()
    grant = chain.control(control.op_grant(lc=lc, epoch=state.current_epoch, keys=keys))
    state.apply(grant)
    return [add, grant]


def promote(state: SpaceState, chain: Chain, who) -> None:  # type: ignore[no-untyped-def]
    state.apply(chain.control(control.op_set_role(lc=state.next_lc(), member=who.public_key,
                                                  role="admin")))


def setup_abc() -> tuple[SpaceState, Chain, bytes]:
    """Space by A with members A (admin), B, C (members) and one epoch held by all."""
    g = community()
    state = SpaceState(g)
    ca = Chain(A, g.space_id)
    env, key = rotate(state, ca, [A.public_key])
    state.apply(env)
    invite(state, ca, B, key)
    invite(state, ca, C, key)
    return state, ca, key


def test_fresh_space_has_creator_admin_and_needs_rotation() -> None:
    state = SpaceState(community())
    assert state.members == {A.public_key: "admin"}
    assert state.current_epoch == 0 and state.needs_rotation()
    assert state.name == "market" and state.kind == "community"


def test_epoch_and_invite_deliver_keys_to_members_only() -> None:
    state, _, key = setup_abc()
    epoch = state.current_epoch
    assert epoch != 0 and state.epochs[epoch].author == A.public_key
    assert not state.needs_rotation()
    assert state.members == {A.public_key: "admin", B.public_key: "member", C.public_key: "member"}
    for who in (A, B, C):
        assert state.epoch_key(epoch, who) == key
    assert state.epoch_key(epoch, D) is None
    assert state.epoch_key(12345, A) is None
    assert state.members_missing_key() == frozenset()


def test_removed_member_keeps_old_key_but_cannot_read_new_data() -> None:
    state, ca, old_key = setup_abc()
    old_epoch = state.current_epoch
    cb = Chain(B, state.space_id)
    before = cb.data(b"before removal", old_epoch, old_key)

    state.apply(ca.control(control.op_remove_member(lc=state.next_lc(), member=C.public_key)))
    assert not state.is_member(C.public_key)
    assert state.needs_rotation() and state.current_epoch == 0

    env, new_key = rotate(state, ca, state.members)
    state.apply(env)
    new_epoch = state.current_epoch
    assert new_epoch not in (0, old_epoch)
    assert state.epoch_key(new_epoch, C) is None
    assert state.epoch_key(new_epoch, B) == new_key
    after = cb.data(b"after removal", new_epoch, state.epoch_key(new_epoch, B) or b"")

    c_old = state.epoch_key(old_epoch, C)
    assert c_old == old_key
    assert before.open(c_old) == b"before removal"
    with pytest.raises(DecryptError):
        after.open(c_old)
    state.check_data_author(after)
    with pytest.raises(RemovedAuthor):
        state.check_data_author(Chain(C, state.space_id).data(b"x", old_epoch, old_key))


def test_check_data_author_reasons() -> None:
    state, _, key = setup_abc()
    with pytest.raises(NotMember) as exc:
        state.check_data_author(Chain(D, state.space_id).data(b"x", state.current_epoch, key))
    assert exc.value.reason == "not_member"
    with pytest.raises(UnknownEpoch):
        state.check_data_author(Chain(B, state.space_id).data(b"x", 99, key))
    with pytest.raises(WrongSpace):
        state.check_data_author(Chain(B, b"\x00" * 32).data(b"x", state.current_epoch, key))


def test_member_cannot_change_membership_but_promoted_member_can() -> None:
    state, ca, _ = setup_abc()
    cb = Chain(B, state.space_id)
    cb.seq = 5
    cb.prev = b"\x00" * 32
    base = state.next_lc()
    add_d = cb.control(control.op_add_member(lc=base + 1, member=D.public_key))
    with pytest.raises(NotAdmin):
        state.check_control_author(add_d)
    state.apply(add_d)
    assert not state.is_member(D.public_key)
    assert state.ignored[add_d.delta_id] == "not_admin"
    # A's promotion of B sorts before B's op (lower lc): B's op becomes valid.
    state.apply(ca.control(control.op_set_role(lc=base, member=B.public_key, role="admin")))
    assert state.is_member(D.public_key)
    assert add_d.delta_id not in state.ignored


def test_last_admin_cannot_leave_or_be_demoted() -> None:
    state, ca, _ = setup_abc()
    rm = ca.control(control.op_remove_member(lc=state.next_lc(), member=A.public_key))
    state.apply(rm)
    assert state.ignored[rm.delta_id] == "last_admin"
    demote = ca.control(control.op_set_role(lc=state.next_lc(), member=A.public_key, role="member"))
    state.apply(demote)
    assert state.ignored[demote.delta_id] == "last_admin"
    assert state.admins == frozenset({A.public_key})


def test_personal_space_refuses_members() -> None:
    g = community(kind="personal")
    state = SpaceState(g)
    ca = Chain(A, g.space_id)
    env, key = rotate(state, ca, [A.public_key])
    state.apply(env)
    add = ca.control(control.op_add_member(lc=state.next_lc(), member=B.public_key))
    state.apply(add)
    assert state.ignored[add.delta_id] == "personal_space"
    assert state.members == {A.public_key: "admin"}
    assert state.epoch_key(state.current_epoch, A) == key


def test_concurrent_removal_and_rotation_forces_new_epoch() -> None:
    """A removes C while B (admin) rotates to everyone it knows, including C."""
    state, ca, _ = setup_abc()
    promote(state, ca, B)
    lc = state.next_lc()
    cb = Chain(B, state.space_id)
    b_rotation, _ = rotate(state, cb, state.members, lc=lc)           # B has not seen the removal
    a_removal = ca.control(control.op_remove_member(lc=lc, member=C.public_key))
    for env in (b_rotation, a_removal):
        state.apply(env)
    tainted = epoch_id_for(b_rotation.delta_id)
    assert tainted in state.epochs and C.public_key in state.epochs[tainted].recipients
    assert state.current_epoch != tainted
    assert state.needs_rotation()
    fix, key = rotate(state, cb, state.members)
    state.apply(fix)
    assert state.current_epoch == epoch_id_for(fix.delta_id)
    assert state.epoch_key(state.current_epoch, C) is None
    assert state.epoch_key(state.current_epoch, A) == key


def test_concurrent_add_and_rotation_reports_missing_key() -> None:
    state, ca, _ = setup_abc()
    promote(state, ca, B)
    lc = state.next_lc()
    cb = Chain(B, state.space_id)
    rotation, key = rotate(state, cb, state.members, lc=lc)
    add_d = ca.control(control.op_add_member(lc=lc, member=D.public_key))
    state.apply_many([rotation, add_d])
    assert state.current_epoch == epoch_id_for(rotation.delta_id)
    assert state.members_missing_key() == frozenset({D.public_key})
    keys = control.seal_keys(state.space_id, key, [D.public_key])
    grant = cb.control(control.op_grant(lc=state.next_lc(), epoch=state.current_epoch, keys=keys))
    state.apply(grant)
    assert state.members_missing_key() == frozenset()
    assert state.epoch_key(state.current_epoch, D) == key


def test_lc_must_increase_along_an_authors_chain() -> None:
    state, ca, _ = setup_abc()
    backdated = ca.control(control.op_remove_member(lc=1, member=B.public_key))
    state.apply(backdated)
    assert state.ignored[backdated.delta_id] == "lc_not_increasing"
    assert state.is_member(B.public_key)


def test_apply_is_idempotent_and_rejects_foreign_or_data_envelopes() -> None:
    state, ca, key = setup_abc()
    before = (state.members, state.current_epoch, state.control_count)
    env = ca.control(control.op_add_member(lc=state.next_lc(), member=D.public_key))
    state.apply(env)
    state.apply(env)
    assert state.control_count == before[2] + 1
    with pytest.raises(WrongSpace):
        other = Chain(A, b"\x01" * 32)
        state.apply(other.control(control.op_add_member(lc=1, member=D.public_key)))
    with pytest.raises(BadControlOp):
        state.apply(ca.control(b"\xa0"))
    with pytest.raises(Exception) as exc:
        state.apply(ca.data(b"x", state.current_epoch, key))
    assert getattr(exc.value, "reason", None) == "not_control"


def test_out_of_order_burst_costs_one_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    g = community()
    chain = Chain(A, g.space_id)
    envs = [chain.control(control.op_add_member(lc=i + 1, member=(i + 9).to_bytes(32, "big")))
            for i in range(300)]
    state = SpaceState(g)
    calls = []
    original = SpaceState._replay
    monkeypatch.setattr(SpaceState, "_replay", lambda self: (calls.append(1), original(self)))
    for env in reversed(envs):
        state.apply(env)
    assert len(state.members) == 301 and len(calls) == 1
    for env in envs:                       # duplicates: no work at all
        state.apply(env)
    assert state.control_count == 300 and len(calls) == 1


def test_removed_members_writes_up_to_keep_stay_valid() -> None:
    """Nodes that learn of the removal before C's earlier writes still accept those writes."""
    state, ca, key = setup_abc()
    epoch = state.current_epoch
    cc = Chain(C, state.space_id)
    early = [cc.data(b"c%d" % i, epoch, key) for i in (1, 2)]
    state.apply(ca.control(control.op_remove_member(lc=state.next_lc(), member=C.public_key,
                                                    keep=2, head=early[1].delta_id)))
    late = cc.data(b"c3", epoch, key)
    assert state.kept_seq(C.public_key) == 2
    for env in early:
        state.check_data_author(env)
    with pytest.raises(RemovedAuthor):
        state.check_data_author(late)
    # Re-adding C makes it a member again; its keep no longer matters.
    state.apply(ca.control(control.op_add_member(lc=state.next_lc(), member=C.public_key)))
    assert state.kept_seq(C.public_key) == 0
    state.check_data_author(late)


def test_check_control_author_filters() -> None:
    state, ca, key = setup_abc()
    state.check_control_author(ca.control(control.op_add_member(lc=99, member=D.public_key)))
    with pytest.raises(WrongSpace):
        state.check_control_author(Chain(A, b"\x02" * 32).control(
            control.op_add_member(lc=1, member=D.public_key)))
    with pytest.raises(BadControlOp):
        state.check_control_author(ca.data(b"x", state.current_epoch, key))
