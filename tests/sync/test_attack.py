"""A hostile peer against a real SyncSession (issue 16 §1, §2, "Also"; sync.md §6.1).

Each test drives the victim's session with hand-written frames (``hostile.Hostile``) and
checks a bound the protocol promises: bytes out per byte in, bytes encoded per drain,
sessions that share nothing ending at once, HAVE totals.
"""

from __future__ import annotations

import pytest

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


@pytest.mark.parametrize("drops", [1, 2, 100])
def test_honest_wants_are_not_a_fault(drops: int) -> None:
    # An honest receiver that loses what it is sent (its store parks or drops batches)
    # sends WANTs that do not advance (it never repeats an unchanged one): the sender
    # tolerates them, resends, and neither side reports an error.
    from .test_session import LossyStore

    a, b = make_nodes(2)
    for n in (a, b):
        n.store.add_space(S1)
    b.write(S1, 50)
    a.store = LossyStore(a.store, drops)  # type: ignore[assignment]
    sa, sb = open_pair(a, b)
    trace = pump(sa, sb)
    assert not trace.errors()
    assert 1 <= sb.stats.stale_wants_in <= SyncLimits().stale_wants
    assert sb.stats.resent_bytes > 0
    assert sb.state is SessionState.LIVE


def test_window_grows_to_catch_up_10k_in_two_round_trips() -> None:
    # Issue 12: 10k deltas from empty took 40 round trips with a fixed 256-envelope window,
    # 4 with a growing one from 256 envelopes, 2 when the first flight is 1 MiB.
    a, b = make_nodes(2)
    for n in (a, b):
        n.store.add_space(S1)
    b.write(S1, 10_000, size=200)
    sa, sb = open_pair(a, b)
    trace = pump(sa, sb)
    assert not trace.errors()
    assert a.store.version_vector(S1) == b.store.version_vector(S1)
    assert trace.caught_up_a is not None and trace.caught_up_a <= 4  # flights: 2 RTTs


def test_max_envelope_fits_every_ceiling() -> None:
    lim = SyncLimits()
    assert min(lim.max_out_bytes, lim.max_inflight_bytes) >= MAX_ENVELOPE_BYTES


# -- decode cost and byte form (issue 16 §4, "Also") ---------------------------------

def _refusal(payload: bytes) -> tuple[str, int]:
    """(reason, peak bytes allocated) of decoding ``payload``."""
    import tracemalloc

    from mycelium.sync.messages import ProtocolError, decode_message

    tracemalloc.start()
    try:
        decode_message(payload)
    except ProtocolError as exc:
        reason = exc.reason
    else:
        reason = "accepted"
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return reason, peak


def test_a_million_empty_arrays_are_refused_without_decoding_them() -> None:
    # 1 MiB of 0x80 (empty arrays) inside an array head: cbor2 built all of them first.
    n = (1 << 20) - 5
    payload = b"\x9a" + n.to_bytes(4, "big") + b"\x80" * n
    reason, peak = _refusal(payload)
    assert reason == "bad_message" and peak < 1 << 20
    # The same inside a batch: refused at the first item that is not a byte string.
    payload = b"\xa3\x61e\x99\x01\x00" + b"\x80" * 256 + b"\x61s\x00\x61tcenv"
    assert _refusal(payload)[0] == "bad_message"


def test_counts_are_checked_before_bodies_are_read() -> None:
    # A version vector claiming a million entries: refused from its head.
    payload = b"\xa3\x61s\x00\x61tbvv\x62vv\xba\x00\x0f\x42\x40" + b"\x00" * 64
    reason, peak = _refusal(payload)
    assert reason == "too_many_entries" and peak < 1 << 16


def test_indefinite_length_batch_is_not_a_second_byte_form() -> None:
    from mycelium.sync.messages import Envelopes, encode_message

    (node,) = make_nodes(1)
    node.store.add_space(S1)
    envs = node.write(S1, 30)
    canonical = encode_message(Envelopes(0, envs))
    head = b"\x98\x1e"  # array of 30, 2-byte head
    assert canonical[3:5] == head  # after the map head and the "e" key
    # indefinite start (0x9f) + break (0xff) is the same length as the 2-byte head
    indefinite = canonical[:3] + b"\x9f" + canonical[5:-9] + b"\xff" + canonical[-9:]
    assert len(indefinite) == len(canonical)
    assert _refusal(indefinite)[0] == "bad_frame"
    assert _refusal(canonical)[0] == "accepted"


def test_reader_knows_every_message_tag() -> None:
    from mycelium.sync.messages import TAGS
    from mycelium.sync.wire import KNOWN_TAGS

    assert set(TAGS.values()) == KNOWN_TAGS


def test_gossip_message_of_empty_arrays_is_refused_without_decoding_them() -> None:
    import tracemalloc

    from mycelium.sync.gossip import decode_gossip
    from mycelium.sync.messages import ProtocolError

    n = 255 * 1024
    payload = b"\xa2\x61e\x9a" + n.to_bytes(4, "big") + b"\x80" * n + b"\x61tfgossip"
    tracemalloc.start()
    try:
        decode_gossip(payload)
    except ProtocolError as exc:
        reason = exc.reason
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert reason == "too_many_envelopes" and peak < 1 << 16
