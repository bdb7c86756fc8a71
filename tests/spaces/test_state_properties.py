"""Order independence: the state is a function of the SET of control envelopes."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.log.envelope import Envelope
from mycelium.spaces import control
from mycelium.spaces.genesis import make_genesis, parse_genesis
from mycelium.spaces.state import SpaceState, epoch_id_for

from .conftest import Chain, ident

PEOPLE = [ident(i) for i in range(1, 5)]
GENESIS = parse_genesis(make_genesis(PEOPLE[0], "prop", "community", 1, b"p"))
FAKE_BOX = b"\x07" * 133

action = st.tuples(
    st.integers(0, 3),                      # author
    st.sampled_from(["add", "remove", "role", "epoch", "grant"]),
    st.integers(0, 3),                      # target member
    st.sampled_from(["admin", "member"]),
    st.integers(1, 6),                      # lc (small range -> many ties and conflicts)
    st.sets(st.integers(0, 3), min_size=1),  # recipients
)


def build(actions: list[tuple[Any, ...]]) -> list[Envelope]:
    chains = [Chain(p, GENESIS.space_id) for p in PEOPLE]
    envs: list[Envelope] = []
    epochs: list[int] = [1]
    for author, kind, target, role, lc, recips in actions:
        member = PEOPLE[target].public_key
        keys = {PEOPLE[r].public_key: FAKE_BOX for r in recips}
        if kind == "add":
            payload = control.op_add_member(lc=lc, member=member, role=role)
        elif kind == "remove":
            keep = len(recips)
            payload = control.op_remove_member(lc=lc, member=member, keep=keep,
                                               head=bytes([keep]) * 32 if keep else None)
        elif kind == "role":
            payload = control.op_set_role(lc=lc, member=member, role=role)
        elif kind == "epoch":
            payload = control.op_epoch(lc=lc, keys=keys)
        else:
            payload = control.op_grant(lc=lc, epoch=epochs[target % len(epochs)], keys=keys)
        env = chains[author].control(payload)
        if kind == "epoch":
            epochs.append(epoch_id_for(env.delta_id))
        envs.append(env)
    return envs


def snapshot(state: SpaceState) -> tuple[Any, ...]:
    return (
        state.members, state.former_members, state.current_epoch, state.needs_rotation(),
        {p.public_key: state.kept_seq(p.public_key) for p in PEOPLE},
        state.members_missing_key(), state.ignored, state.next_lc(),
        {i: (e.author, e.position, e.recipients) for i, e in state.epochs.items()},
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action, min_size=1, max_size=14), st.randoms(use_true_random=False))
def test_any_permutation_and_batching_gives_the_same_state(actions, rnd) -> None:  # type: ignore[no-untyped-def]
    envs = build(actions)
    reference = SpaceState(GENESIS)
    for env in envs:
        reference.apply(env)

    shuffled = list(envs)
    rnd.shuffle(shuffled)
    one_by_one = SpaceState(GENESIS)
    for env in shuffled:
        one_by_one.apply(env)
        assert one_by_one.admins  # a read forces resolution, so the incremental path runs

    rnd.shuffle(shuffled)
    batched = SpaceState(GENESIS)
    cut = rnd.randint(0, len(shuffled))
    batched.apply_many(shuffled[:cut])
    batched.apply_many(shuffled[cut:] + shuffled[:2])  # duplicates are harmless

    assert snapshot(one_by_one) == snapshot(reference) == snapshot(batched)


@settings(max_examples=100, deadline=None)
@given(st.lists(action, min_size=1, max_size=14))
def test_invariants_hold_after_any_history(actions) -> None:  # type: ignore[no-untyped-def]
    state = SpaceState(GENESIS)
    state.apply_many(build(actions))
    assert state.admins, "a space never loses its last admin"
    assert set(state.members).isdisjoint(state.former_members)
    current = state.current_epoch
    if current:
        assert state.epochs[current].recipients <= set(state.members)
    else:
        assert state.needs_rotation()
