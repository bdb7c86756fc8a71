"""Property tests: flow control is never exceeded; random partitions always converge."""

from __future__ import annotations

import itertools
import os
from functools import cache

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.sync.cache import VerifyCache
from mycelium.sync.memstore import MemoryStore
from mycelium.sync.messages import Envelopes, Live, decode_message
from mycelium.sync.session import SyncLimits

from .pair import GROUP_KEY, Node, open_pair, pump

SPACES = (b"\x0a" * 32, b"\x0b" * 32)
CACHE = VerifyCache()
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@cache
def pool() -> list[tuple[bytes, bytes]]:
    """(space, envelope) for 3 authors x 2 spaces x 6 envelopes of varied size."""
    out = []
    for i in range(3):
        key = Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32)
        writer = MemoryStore(cache=CACHE)
        for space in SPACES:
            for j in range(6):
                env = writer.append_local(space, os.urandom(50 + 900 * ((i + j) % 4)),
                                          signer=key, group_key=GROUP_KEY)
                out.append((space, env.raw))
    return out


@cache
def big_pool() -> list[bytes]:
    key = Ed25519PrivateKey.from_private_bytes(b"\x09" * 32)
    writer = MemoryStore(cache=CACHE)
    return [writer.append_local(SPACES[0], os.urandom(size), signer=key,
                                group_key=GROUP_KEY).raw
            for size in (100, 20_000, 5_000, 40_000, 60_000, 10, 30_000, 64_000, 1_000, 2_000)]


def new_node(name: str) -> Node:
    node = Node(name, MemoryStore(cache=CACHE))
    for s in SPACES:
        node.store.add_space(s)
    return node


limits = st.builds(
    SyncLimits,
    batch_envelopes=st.integers(1, 8),
    batch_bytes=st.integers(64 * 1024, 200 * 1024),
    credit_envelopes=st.integers(1, 12),
    credit_bytes=st.integers(64 * 1024, 160 * 1024),
)


@PROPS
@given(la=limits, lb=limits, split=st.integers(0, 10))
def test_flow_control_is_never_exceeded(la: SyncLimits, lb: SyncLimits, split: int) -> None:
    a, b = new_node("a"), new_node("b")
    envs = big_pool()
    a.store.ingest(SPACES[0], envs[:split])
    b.store.ingest(SPACES[0], envs[split:])
    sa, sb = open_pair(a, b, limits=la, limits_b=lb)

    def check(out_a: list[bytes], out_b: list[bytes]) -> None:
        for out, peer, mine in ((out_a, lb, la), (out_b, la, lb)):
            batches = [m for m in map(decode_message, out) if isinstance(m, Envelopes | Live)]
            # The window grows (sync.md §7.3), never beyond its ceilings; the receiver
            # itself refuses anything beyond its current credit (no errors below).
            assert sum(len(m.envelopes) for m in batches) <= peer.max_credit_envelopes
            assert (sum(len(e) for m in batches for e in m.envelopes)
                    <= min(peer.max_credit_bytes, mine.max_inflight_bytes))
            assert all(len(m.envelopes) <= mine.batch_envelopes for m in batches)

    trace = pump(sa, sb, on_flight=check)
    assert not trace.errors()
    assert a.store.version_vector(SPACES[0]) == b.store.version_vector(SPACES[0])
    assert len(a.store.envelopes(SPACES[0])) == len(envs)


@PROPS
@given(
    n=st.integers(2, 3),
    holders=st.lists(st.sets(st.integers(0, 2), min_size=1), min_size=36, max_size=36),
    order=st.randoms(use_true_random=False),
    first=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), max_size=6),
    lim=limits,
)
def test_random_partitions_converge(n: int, holders: list[set[int]], order, first, lim) -> None:
    nodes = [new_node(f"n{i}") for i in range(n)]
    items = pool()
    assignments = [(k, i % n) for k, hs in enumerate(holders) for i in hs]
    order.shuffle(assignments)  # out-of-order arrival exercises pending gaps
    for k, i in assignments:
        space, raw = items[k]
        nodes[i].store.ingest(space, [raw])
    def session(i: int, j: int) -> int:
        sa, sb = open_pair(nodes[i], nodes[j], limits=lim)
        assert not pump(sa, sb).errors()
        return sa.stats.envelopes_out + sb.stats.envelopes_out

    for i, j in first:
        if i % n != j % n:
            session(i % n, j % n)
    for _ in range(4):  # rounds of every ordered pair, until a round moves nothing
        if sum(session(i, j) for i, j in itertools.permutations(range(n), 2)) == 0:
            break
    else:
        raise AssertionError("no quiescence after 4 rounds")
    for space in SPACES:
        vvs = [node.store.version_vector(space) for node in nodes]
        assert all(vv == vvs[0] for vv in vvs)
        assert sorted(vvs[0].values()) == [6, 6, 6]
        assert all(node.store.pending_count(space) == 0 for node in nodes)
