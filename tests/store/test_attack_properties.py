"""Issue 15, property: two honest nodes fed the same hostile envelopes, in any order and
any batching, end with identical membership, version vectors and heads.

The honest history (genesis, invites, a removal that pins the removed member's chain)
arrives first; then a pool of hostile envelopes — junk control ops of strangers, one of
whom an admin's later op makes admin (that op is in the pool too), a plain member's
control ops, the removed member's forged chain and its writes after the removal,
future-dated writes, a seq beyond 2^63, strangers' data — in an order and batching
hypothesis picks, followed by one anti-entropy round that offers everything again.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.spaces import control, service
from mycelium.store.soil import Soil

from .conftest import A, B, C, Clock, did, ident, open_soil, sync
from .hostile import Forger, group_key, junk_control_ops, raws, throwaway

HOUR = 3_600_000


@dataclass(frozen=True)
class World:
    genesis: bytes
    space: bytes
    honest: list[bytes]
    pool: list[bytes]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    tmp = tmp_path_factory.mktemp("world")
    clock = Clock()
    a, b, m = (open_soil(tmp / f"{n}.db", w, clock) for n, w in (("a", A), ("b", B),
                                                                 ("m", C)))
    space = service.create_space(a, "market")
    service.join(b, service.invite(a, space, did(B)))
    service.join(m, service.invite(a, space, did(C)))
    old_epoch, old_key = group_key(m, space)
    for i in range(3):
        m.put_doc(space, "products", f"m{i}", {"title": f"bike {i}"})
    sync(m, a, space)
    sync(b, a, space)
    honest = a.envelopes_since(space, {}, limit=10_000, max_bytes=1 << 26)
    service.remove(a, space, did(C))
    # the removal (and the rotation after it) travel with the hostile envelopes: some
    # nodes hear of it only after the removed member's later writes
    held = set(honest)
    pool: list[bytes] = [r for r in a.envelopes_since(space, {}, limit=10_000,
                                                      max_bytes=1 << 26) if r not in held]
    assert len(pool) == 2  # the remove op and the epoch op that follows it
    pool += raws(junk_control_ops(space, 6))
    # a stranger's chain of control ops, and the admin's later op that makes it admin
    s2 = ident(60)
    chain = Forger(s2, space)
    pool += [chain.control(control.op_add_member(lc=900 + i, member=ident(61 + i).public_key))
             .raw for i in range(3)]
    pool += [service._append(a, space, control.op_add_member(
        lc=a.space_state(space).next_lc(), member=s2.public_key, role="admin")).raw]
    # the removed member: a forged chain for its pinned seqs, and writes after removal
    forged = Forger(C, space)
    pool += [forged.listing(f"m{i}", {"title": "SOLD, pay the scammer"}, old_epoch, old_key)
             .raw for i in range(3)]
    pinned_seq, pinned_id = a.heads(space)[C.public_key]
    late = Forger(C, space, seq=pinned_seq, prev=pinned_id)
    pool += [late.listing("late", {"title": "after removal"}, old_epoch, old_key).raw]
    # a plain member: a control op it may not write, then future-dated writes
    b_seq, b_id = a.heads(space).get(B.public_key, (0, None))
    member = Forger(B, space, seq=b_seq, prev=b_id)
    epoch, key = group_key(a, space)
    pool += [member.control(control.op_add_member(lc=999, member=ident(70).public_key)).raw]
    pool += [member.listing(f"future{i}", {"title": "soon"}, epoch, key,
                            wall_ms=clock.now + 48 * HOUR).raw for i in range(3)]
    # a seq no store can hold, and strangers' data
    pool += [Forger(throwaway(), space, seq=2**63 - 1, prev=os.urandom(32)).listing(
        "huge", {"title": "x"}, epoch, os.urandom(32)).raw]
    pool += [Forger(throwaway(), space).listing("s", {"title": "spam"}, epoch,
                                                os.urandom(32)).raw for _ in range(4)]
    genesis = a.genesis(space)
    for s in (a, b, m):
        s.close()
    return World(genesis, space, honest, pool)


def _node(path: Path, world: World, seed: int) -> Soil:
    soil = open_soil(path, ident(seed), Clock())
    soil.add_space(world.genesis)
    soil.ingest(world.space, world.honest)
    return soil


def _feed(soil: Soil, world: World, order: list[int], sizes: list[int]) -> None:
    items = [world.pool[i] for i in order]
    sizes = sizes or [len(items)]
    k = 0
    while items[k:]:
        n = sizes[k % len(sizes)]
        soil.ingest(world.space, items[k:k + n])
        k += n
    # an anti-entropy round offers everything again
    soil.ingest(world.space, world.honest + world.pool)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_same_hostile_envelopes_any_order_same_state(world: World, data: st.DataObject) -> None:
    n = len(world.pool)
    orders = [data.draw(st.permutations(range(n))) for _ in range(2)]
    sizes = [data.draw(st.lists(st.integers(1, n), max_size=4)) for _ in range(2)]
    with tempfile.TemporaryDirectory() as tmp:
        x = _node(Path(tmp) / "x.db", world, 90)
        y = _node(Path(tmp) / "y.db", world, 91)
        _feed(x, world, orders[0], sizes[0])
        _feed(y, world, orders[1], sizes[1])
        sx, sy = x.space_state(world.space), y.space_state(world.space)
        assert sx.members == sy.members
        assert sx.current_epoch == sy.current_epoch
        assert x.version_vector(world.space) == y.version_vector(world.space)
        assert x.heads(world.space) == y.heads(world.space)
        assert sx.is_admin(ident(60).public_key)  # the stranger an admin made admin
        assert not sx.is_member(C.public_key) and not sx.is_member(ident(70).public_key)
        x.close()
        y.close()
