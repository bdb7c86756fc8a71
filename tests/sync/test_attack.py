"""A hostile peer against a real SyncSession (issue 16 §1, §2, "Also"; sync.md §6.1).

Each test drives the victim's session with hand-written frames (``hostile.Hostile``) and
checks a bound the protocol promises: bytes out per byte in, bytes encoded per drain,
sessions that share nothing ending at once, HAVE totals.
"""

from __future__ import annotations

from mycelium.log.envelope import MAX_ENVELOPE_BYTES
from mycelium.sync.messages import Ack, Have, Want
from mycelium.sync.session import Closed, SessionError, SessionState, SyncLimits

from .hostile import Hostile
from .pair import make_nodes, open_pair, pump

S1 = b"\x01" * 32


def victim(n: int, size: int) -> tuple[object, bytes, int]:
    """A node holding ``n`` envelopes of ``size`` bytes in S1: (store, id, space bytes)."""
    (node,) = make_nodes(1)
    node.store.add_space(S1)
    envs = node.write(S1, n, size=size)
    return node.store, node.id, sum(map(len, envs))


def reasons(h: Hostile) -> list[str]:
    return [e.reason for e in h.victim.events() if isinstance(e, SessionError)]


def test_want_loop_is_bounded_and_ends_the_session() -> None:
    # Issue 16 §1: 16 bytes of want(s, {}) made the node resend the whole space, forever.
    store, vid, space_bytes = victim(200, 4000)
    h = Hostile(store, vid, spaces=(S1,))
    h.drain()
    for _ in range(1000):
        if h.closed:
            break
        h.send(Ack(1 << 20, 1 << 30))
        h.send(Want(0, {}))
        h.drain()
    assert h.closed
    assert reasons(h) in (["stale_want"], ["want_flood"])
    # One full sync of the space, a bounded allowance of resends; never unbounded.
    lim = SyncLimits()
    assert h.bytes_out <= 2 * space_bytes + lim.resend_bytes + 2 * lim.batch_bytes


def test_advancing_want_loop_hits_the_resend_budget() -> None:
    # Advancing one seq per WANT is "progress", but each WANT would still resend almost
    # everything: the resend budget ends it.
    store, vid, space_bytes = victim(200, 4000)
    author = next(iter(store.version_vector(S1)))
    h = Hostile(store, vid, spaces=(S1,))
    h.drain()
    for seq in range(1, 200):
        if h.closed:
            break
        h.send(Ack(1 << 20, 1 << 30))
        h.send(Want(0, {author: seq}))
        h.drain()
    assert h.closed and reasons(h) == ["want_flood"]
    lim = SyncLimits()
    assert h.bytes_out <= 2 * space_bytes + lim.resend_bytes + 2 * lim.batch_bytes


def test_output_is_produced_as_the_transport_drains() -> None:
    # Whatever credit the peer grants, one data_to_send encodes about max_out_bytes and
    # the total without ACKs stays under max_inflight_bytes.
    store, vid, space_bytes = victim(600, 60_000)
    lim = SyncLimits()
    h = Hostile(store, vid, spaces=(S1,))
    first = h.victim.data_to_send()
    assert len(first) <= lim.max_out_bytes + lim.batch_bytes + 4096
    assert h.victim.output_pending
    total = len(first) + h.drain()
    assert space_bytes > lim.max_inflight_bytes
    assert total <= lim.max_inflight_bytes + lim.batch_bytes + 65_536
    assert not h.closed


def test_inflight_ceiling_holds_for_message_transports_too() -> None:
    store, vid, _ = victim(600, 60_000)
    lim = SyncLimits()
    h = Hostile(store, vid, spaces=(S1,))
    frames = h.victim.frames_to_send()
    assert sum(map(len, frames)) <= lim.max_inflight_bytes + lim.batch_bytes + 65_536


def test_session_sharing_nothing_ends_after_the_handshake() -> None:
    # Issue 16 §2: sessions with no shared space sat in LIVE holding a slot.
    store, vid, _ = victim(1, 100)
    h = Hostile(store, vid, spaces=())
    assert h.closed
    assert [e for e in h.victim.events() if isinstance(e, Closed)] == [Closed("nothing_shared")]
    assert h.victim.data_to_send()  # its HELLO, then BYE


def test_honest_pair_sharing_nothing_closes_both_sides() -> None:
    a, b = make_nodes(2)
    a.store.add_space(S1)
    b.store.add_space(b"\x02" * 32)
    sa, sb = open_pair(a, b)
    trace = pump(sa, sb)
    assert sa.state is sb.state is SessionState.CLOSED
    assert not trace.errors()


def test_have_cannot_grow_the_view_without_bound() -> None:
    # Issue 16 "Also": each HAVE may carry 8192 invented authors; their sum is capped.
    store, vid, _ = victim(1, 100)
    lim = SyncLimits(lazy_push=True)
    h = Hostile(store, vid, spaces=(S1,), lazy=True, limits=lim)
    h.drain()
    for k in range(4):
        if h.closed:
            break
        h.send(Have(0, {bytes([k]) + i.to_bytes(31, "big"): 1 for i in range(8000)}))
    assert h.closed and reasons(h) == ["too_many_entries"]


def test_honest_wants_are_not_stale() -> None:
    # An honest receiver that keeps losing envelopes (pending_full) sends at most
    # max_want_rounds WANTs: the victim must not treat that as an attack.
    a, b = make_nodes(2)
    for n in (a, b):
        n.store.add_space(S1)
    a.write(S1, 50)
    sa, sb = open_pair(a, b)
    trace = pump(sa, sb)
    assert not trace.errors()
    assert sa.stats.stale_wants_in == sb.stats.stale_wants_in == 0


def test_window_grows_to_catch_up_10k_in_four_round_trips() -> None:
    # Issue 12: 10k deltas from empty took 40 round trips with a fixed 256-envelope window.
    a, b = make_nodes(2)
    for n in (a, b):
        n.store.add_space(S1)
    b.write(S1, 10_000, size=200)
    sa, sb = open_pair(a, b)
    trace = pump(sa, sb)
    assert not trace.errors()
    assert a.store.version_vector(S1) == b.store.version_vector(S1)
    assert trace.caught_up_a is not None and trace.caught_up_a <= 8  # flights: 4 RTTs


def test_max_envelope_fits_every_ceiling() -> None:
    lim = SyncLimits()
    assert min(lim.max_out_bytes, lim.max_inflight_bytes) >= MAX_ENVELOPE_BYTES
