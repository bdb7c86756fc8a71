"""Random concurrent membership histories over several nodes converge safely."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mycelium.identity.didkey import did_from_public_key
from mycelium.log.envelope import Kind
from mycelium.spaces import service
from mycelium.spaces.errors import SpaceError

from .conftest import ident
from .fakesoil import FakeSoil, sync

PEOPLE = [ident(i) for i in range(1, 6)]

step = st.tuples(
    st.sampled_from(["invite", "invite", "invite_admin", "invite_admin", "remove", "remove",
                     "sync", "write", "maintain"]),
    st.integers(0, 4),   # actor
    st.integers(0, 4),   # target
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=4, max_size=30))
def test_random_histories_converge_and_never_leak_current_key(steps) -> None:  # type: ignore[no-untyped-def]
    nodes = [FakeSoil(p) for p in PEOPLE]
    space = service.create_space(nodes[0], "prop", now_ms=1)
    joined = {0}
    for action, pick, target in steps:
        actor = sorted(joined)[pick % len(joined)]   # only nodes holding the space act
        me, other = nodes[actor], nodes[target]
        with contextlib.suppress(SpaceError):
            if action in ("invite", "invite_admin"):
                role = "admin" if action == "invite_admin" else "member"
                code = service.invite(me, space, did_from_public_key(PEOPLE[target].public_key),
                                      role=role)
                if target not in joined:
                    service.join(other, code)
                    joined.add(target)
            elif action == "remove":
                service.remove(me, space, did_from_public_key(PEOPLE[target].public_key))
            elif action == "sync" and target in joined:
                sync(me, other, space)
            elif action == "write":
                me.append(space, Kind.DATA, b"note")
            elif action == "maintain":
                service.maintain(me, space)

    live = [nodes[i] for i in sorted(joined)]
    for _ in range(3):                        # full mesh sync + admin housekeeping, to quiescence
        for x in live:
            for y in live:
                if x is not y:
                    sync(x, y, space)
        for x in live:
            service.maintain(x, space)
    for x in live:
        for y in live:
            if x is not y:
                sync(x, y, space)

    states = [n.space_state(space) for n in live]
    event(f"members={len(states[0].members)} former={len(states[0].former_members)} "
          f"epochs={len(states[0].epochs)}")
    ref = states[0]
    for s in states[1:]:
        assert (s.members, s.current_epoch, s.ignored) == (ref.members, ref.current_epoch,
                                                           ref.ignored)
    assert ref.admins and not ref.needs_rotation()
    assert ref.members_missing_key() == frozenset()
    epoch = ref.current_epoch
    assert ref.epochs[epoch].recipients == set(ref.members)
    for i, person in enumerate(PEOPLE):
        key = ref.epoch_key(epoch, person)
        assert (key is not None) == ref.is_member(person.public_key), i
