"""SyncSession over in-memory pairs: convergence, round trips, limits, hostile input."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest

from mycelium.codec.frames import encode_uvarint
from mycelium.sync.memstore import MemoryStore
from mycelium.sync.messages import (
    Ack,
    Done,
    Envelopes,
    Error,
    Hello,
    Live,
    Vector,
    Want,
    decode_message,
    encode_message,
)
from mycelium.sync.ports import IngestResult
from mycelium.sync.session import (
    CaughtUp,
    Closed,
    EnvelopesIngested,
    SessionError,
    SessionState,
    SpacesShared,
    SyncLimits,
    SyncSession,
)

from .pair import Node, make_nodes, open_pair, pump
from .test_memstore import forge

S1 = b"\x01" * 32
S2 = b"\x02" * 32
S3 = b"\x03" * 32


def nodes(n: int = 2, spaces: tuple[bytes, ...] = (S1,)) -> list[Node]:
    out = make_nodes(n)
    for node in out:
        for s in spaces:
            node.store.add_space(s)
    return out


def errors(events: list) -> list[SessionError]:
    return [e for e in events if isinstance(e, SessionError)]


def handshaken(a: Node, b: Node) -> tuple[SyncSession, SyncSession]:
    sa, sb = open_pair(a, b)
    pump(sa, sb)
    sa.events()
    sb.events()
    return sa, sb


# -- convergence ------------------------------------------------------------------

@pytest.mark.parametrize(("na", "nb"), [(0, 0), (30, 0), (0, 30), (17, 23), (200, 150)])
def test_disjoint_data_converges(na: int, nb: int) -> None:
    a, b = nodes(2, (S1, S2))
    a.write(S1, na)
    b.write(S1, nb)
    b.write(S2, nb // 2)
    sa, sb = open_pair(a, b)
    trace = pump(sa, sb)
    assert not trace.errors()
    for s in (S1, S2):
        assert a.store.version_vector(s) == b.store.version_vector(s)
    assert sa.state is sb.state is SessionState.LIVE
    assert sa.stats.envelopes_out == na and sb.stats.envelopes_out == nb + nb // 2


def test_overlapping_data_sends_only_the_difference() -> None:
    a, b = nodes()
    shared = a.write(S1, 10)
    b.store.ingest(S1, shared)
    a.write(S1, 5)  # a is 5 ahead on its own chain
    c = Node("c", b.store)
    c.write(S1, 7)  # b holds a third author's chain
    sa, sb = open_pair(a, b)
    pump(sa, sb)
    assert a.store.version_vector(S1) == b.store.version_vector(S1)
    assert sa.stats.envelopes_out == 5 and sb.stats.envelopes_out == 7
    assert sa.stats.duplicates_in == sb.stats.duplicates_in == 0


def test_only_shared_spaces_are_synced() -> None:
    a, b = nodes(2, ())
    for s in (S1, S2):
        a.store.add_space(s)
    for s in (S2, S3):
        b.store.add_space(s)
    a.write(S1, 3)
    b.write(S3, 3)
    b.write(S2, 2)
    sa, sb = open_pair(a, b)
    trace = pump(sa, sb)
    assert [e.spaces for e in trace.events_a if isinstance(e, SpacesShared)] == [(S2,)]
    assert sa.shared_spaces == sb.shared_spaces == [S2]
    assert a.store.version_vector(S1) != {} and b.store.version_vector(S1) == {}
    assert a.store.version_vector(S3) == {}
    assert a.store.version_vector(S2) == b.store.version_vector(S2)


# -- round trips ------------------------------------------------------------------

def test_empty_initiator_catches_up_in_one_round_trip() -> None:
    a, b = nodes()
    b.write(S1, 50)
    sa, sb = open_pair(a, b)
    trace = pump(sa, sb)
    # flight 1: HELLO + VV; flight 2: HELLO + VV + ENV + DONE -> caught up.
    assert trace.caught_up_a == 2
    assert a.store.version_vector(S1) == b.store.version_vector(S1)


def test_empty_responder_catches_up_in_three_flights() -> None:
    a, b = nodes()
    a.write(S1, 50)
    sa, sb = open_pair(a, b)
    trace = pump(sa, sb)
    # flight 1: HELLO + VV; flight 2: HELLO + VV + DONE; flight 3: ENV + DONE.
    assert trace.caught_up_b == 3
    assert trace.flights == 3
    assert a.store.version_vector(S1) == b.store.version_vector(S1)


def test_first_flight_is_hello_then_vectors() -> None:
    a, b = nodes(2, (S1, S2))
    sa, _ = open_pair(a, b)
    msgs = [decode_message(f) for f in sa.frames_to_send()]
    assert isinstance(msgs[0], Hello) and len(msgs[0].offers) == 2
    assert [type(m) for m in msgs[1:]] == [Vector, Vector]


# -- flow control -----------------------------------------------------------------

def test_batches_respect_credit_and_batch_limits() -> None:
    a, b = nodes()
    a.write(S1, 100)
    lim = SyncLimits(batch_envelopes=7, credit_envelopes=10, credit_growth=1)
    sa, sb = open_pair(a, b, limits=lim)
    in_flight: list[int] = []

    def check(out_a: list[bytes], out_b: list[bytes]) -> None:
        batches = [decode_message(f) for f in out_a]
        sizes = [len(m.envelopes) for m in batches if isinstance(m, Envelopes | Live)]
        assert all(n <= 7 for n in sizes)
        in_flight.append(sum(sizes))

    pump(sa, sb, on_flight=check)
    assert max(in_flight) <= 10 and sum(in_flight) == 100
    assert a.store.version_vector(S1) == b.store.version_vector(S1)


def test_peer_exceeding_credit_is_cut_off() -> None:
    a, b = nodes()
    envs = a.write(S1, 5)
    sb = SyncSession(b.store, local_id=b.id, remote_id=a.id, initiator=False, now=0,
                     limits=SyncLimits(credit_envelopes=2))
    sa = SyncSession(a.store, local_id=a.id, remote_id=b.id, initiator=True, now=0)
    for f in sa.frames_to_send():
        sb.receive_frame(f, 0)
    sb.receive_frame(encode_message(Envelopes(0, envs[:3])), 0)
    assert [e.reason for e in errors(sb.events())] == ["credit_exceeded"]
    assert sb.state is SessionState.CLOSED


# -- live -------------------------------------------------------------------------

def test_live_push_reaches_peer_without_echo() -> None:
    a, b = nodes()
    a.write(S1, 3)
    sa, sb = handshaken(a, b)
    new = a.write(S1, 4)
    for raw in new:
        assert sa.push_local(S1, raw)
    trace = pump(sa, sb)
    assert trace.flights == 1  # one LIVE frame; credit comes back only when half used
    got = [e for e in trace.events_b if isinstance(e, EnvelopesIngested)]
    assert sum(len(e.accepted) for e in got) == 4
    # b relays what it ingested: the session knows a has it, so nothing goes back.
    assert not any(sb.push_local(S1, raw) for raw in new)
    assert sb.frames_to_send() == []
    assert sa.stats.envelopes_out == 7 and sb.stats.envelopes_out == 0


def test_live_push_out_of_order_falls_back_to_store() -> None:
    a, b = nodes()
    sa, sb = handshaken(a, b)
    new = a.write(S1, 3)
    sa.push_local(S1, new[2])  # not contiguous for b: the session pumps from the store
    pump(sa, sb)
    assert b.store.version_vector(S1) == a.store.version_vector(S1)


def test_three_nodes_converge_through_a_hub() -> None:
    a, hub, c = nodes(3)
    a.write(S1, 10)
    c.write(S1, 12)
    hub.write(S1, 1)
    ah, ha = open_pair(a, hub)
    ch, hc = open_pair(c, hub)
    relay = {id(ha): hc, id(hc): ha}

    def step() -> bool:
        moved = False
        for x, y in ((ah, ha), (ch, hc)):
            fx, fy = x.frames_to_send(), y.frames_to_send()
            moved |= bool(fx or fy)
            for f in fx:
                y.receive_frame(f, 0)
            for f in fy:
                x.receive_frame(f, 0)
            for s in (x, y):
                for ev in s.events():
                    assert not isinstance(ev, SessionError)
                    if isinstance(ev, EnvelopesIngested) and id(s) in relay:
                        for raw in ev.accepted:
                            relay[id(s)].push_local(ev.space, raw)
        return moved

    for _ in range(50):
        if not step():
            break
    vv = hub.store.version_vector(S1)
    assert len(vv) == 3
    assert a.store.version_vector(S1) == vv == c.store.version_vector(S1)
    # live: a write at a reaches c through the hub
    raw = a.write(S1, 1)[0]
    ah.push_local(S1, raw)
    for _ in range(10):
        if not step():
            break
    assert c.store.version_vector(S1) == a.store.version_vector(S1)


# -- gaps and WANT ----------------------------------------------------------------

class LossyStore:
    """Wraps a MemoryStore; the first ``drops`` ingests lose their envelopes."""

    def __init__(self, inner, drops: int) -> None:
        self.inner = inner
        self.drops = drops
        self.cache = inner.cache

    def member_spaces(self):
        return self.inner.member_spaces()

    def version_vector(self, space):
        return self.inner.version_vector(space)

    def envelopes_since(self, space, remote, *, limit, max_bytes):
        return self.inner.envelopes_since(space, remote, limit=limit, max_bytes=max_bytes)

    def ingest(self, space, envelopes):
        if self.drops > 0:
            self.drops -= 1
            return IngestResult(pending=len(envelopes))
        return self.inner.ingest(space, envelopes)


@pytest.mark.parametrize(("drops", "complete"), [(1, True), (100, False)])
def test_missing_after_done_sends_want(drops: int, complete: bool) -> None:
    a, b = nodes()
    b.write(S1, 20)
    a.store = LossyStore(a.store, drops)  # type: ignore[assignment]
    sa, sb = open_pair(a, b)
    wants: list[Want] = []
    trace = pump(sa, sb, on_flight=lambda oa, ob: wants.extend(
        m for m in map(decode_message, oa) if isinstance(m, Want)))
    assert [e.complete for e in trace.events_a if isinstance(e, CaughtUp)] == [complete]
    assert (a.store.version_vector(S1) == b.store.version_vector(S1)) is complete
    assert 1 <= len(wants) <= SyncLimits().max_want_rounds
    assert sa.state is SessionState.LIVE


# -- hostile input ----------------------------------------------------------------

def test_garbage_frame_ends_session() -> None:
    a, b = nodes()
    _, sb = handshaken(a, b)
    sb.receive_frame(b"\xff\x00garbage", 1.0)
    evs = sb.events()
    assert [e.reason for e in errors(evs)] == ["bad_frame"] and isinstance(evs[-1], Closed)
    assert decode_message(sb.frames_to_send()[-1]) == Error("bad_frame")
    sb.receive_frame(encode_message(Ack(1, 1)), 2.0)  # ignored once closed
    assert sb.events() == []


def test_oversized_frame_prefix_ends_session_before_payload() -> None:
    a, b = nodes()
    _, sb = handshaken(a, b)
    sb.receive_data(encode_uvarint(2 << 20), 1.0)
    assert [e.reason for e in errors(sb.events())] == ["oversized_frame"]


def test_receive_data_handles_any_split() -> None:
    a, b = nodes()
    a.write(S1, 30)
    sa, sb = open_pair(a, b)
    for _ in range(10):
        da, db = sa.data_to_send(), sb.data_to_send()
        if not da and not db:
            break
        for i in range(0, len(da), 7):
            sb.receive_data(da[i:i + 7], 0)
        sa.receive_data(db, 0)
    assert not errors(sa.events() + sb.events())
    assert a.store.version_vector(S1) == b.store.version_vector(S1)


@pytest.mark.parametrize("msg", [Vector(0, {}), Done(0), Ack(1, 1), Envelopes(0, [b"x"])])
def test_messages_before_hello_are_unexpected(msg) -> None:
    a, b = nodes()
    sb = SyncSession(b.store, local_id=b.id, remote_id=a.id, initiator=False, now=0)
    sb.receive_frame(encode_message(msg), 0)
    assert [e.reason for e in errors(sb.events())] == ["unexpected_message"]


def test_second_hello_is_unexpected() -> None:
    a, b = nodes()
    _, sb = handshaken(a, b)
    sb.receive_frame(encode_message(Hello(b"s" * 16, (), 10, 1 << 20)), 0)
    assert [e.reason for e in errors(sb.events())] == ["unexpected_message"]


def test_unknown_space_index_is_an_error() -> None:
    a, b = nodes()
    _, sb = handshaken(a, b)
    sb.receive_frame(encode_message(Done(9)), 0)
    assert [e.reason for e in errors(sb.events())] == ["unknown_space"]


def test_hello_with_tiny_credit_is_refused() -> None:
    a, b = nodes()
    sb = SyncSession(b.store, local_id=b.id, remote_id=a.id, initiator=False, now=0)
    sb.receive_frame(encode_message(Hello(b"s" * 16, (), 1, 100)), 0)
    assert [e.reason for e in errors(sb.events())] == ["bad_credit"]


def test_forged_envelope_ends_session_and_is_counted() -> None:
    a, b = nodes()
    envs = a.write(S1, 2)
    empty = Node("a", MemoryStore(cache=a.store.cache), a.key)
    empty.store.add_space(S1)
    _, sb = handshaken(empty, b)  # a session with a's identity that sent nothing yet
    sb.receive_frame(encode_message(Envelopes(0, [envs[0], forge(envs[1])])), 1.0)
    evs = sb.events()
    assert [e.reason for e in errors(evs)] == ["bad_signature"]
    assert errors(evs)[0].remote
    assert b.store.rejections == {"bad_signature": 1}
    assert sb.stats.rejected_in == {"bad_signature": 1}
    assert len(b.store.envelopes(S1)) == 1  # the valid one was kept


def test_replayed_envelopes_are_idempotent() -> None:
    a, b = nodes()
    envs = a.write(S1, 4)
    sa, sb = open_pair(a, b)
    pump(sa, sb)
    sb.receive_frame(encode_message(Live(0, envs)), 1.0)
    sb.receive_frame(encode_message(Envelopes(0, envs[:2])), 1.0)
    evs = sb.events()
    assert not errors(evs)
    assert [e.result.duplicates for e in evs if isinstance(e, EnvelopesIngested)] == [4, 2]
    assert len(b.store.envelopes(S1)) == 4


# -- privacy ----------------------------------------------------------------------

def test_non_member_learns_no_space_ids() -> None:
    a, b = nodes(2, ())
    a.store.add_space(S1)
    b.store.add_space(S2)
    a.write(S1, 3)
    sa, sb = open_pair(a, b)
    wire: list[bytes] = []
    pump(sa, sb, on_flight=lambda oa, ob: wire.extend(oa + ob))
    assert sa.shared_spaces == sb.shared_spaces == []
    blob = b"".join(wire)
    assert S1 not in blob and S2 not in blob
    hellos = [m for m in map(decode_message, wire) if isinstance(m, Hello)]
    assert len(hellos[0].offers) == 1 and hellos[1].offers == ()  # b answers nothing
    assert sb.stats.envelopes_in == 0 and sa.stats.envelopes_out == 0


def test_offer_tokens_differ_across_sessions() -> None:
    a, b = nodes()
    tokens = []
    for _ in range(3):
        sa, _ = open_pair(a, b)
        tokens.append(decode_message(sa.frames_to_send()[0]).offers)  # type: ignore[union-attr]
    assert len({t for ts in tokens for t in ts}) == 3


# -- time -------------------------------------------------------------------------

def test_handshake_timeout() -> None:
    a, b = nodes()
    sa, _ = open_pair(a, b, now=100.0)
    sa.frames_to_send()
    assert sa.next_deadline() == 110.0
    sa.tick(109.0)
    assert sa.events() == []
    sa.tick(110.0)
    assert [e.reason for e in errors(sa.events())] == ["timeout"]
    assert sa.next_deadline() is None


def test_keepalive_then_idle_timeout() -> None:
    a, b = nodes()
    sa, sb = handshaken(a, b)
    sa.tick(30.0)
    assert [decode_message(f) for f in sa.frames_to_send()] == [Ack(0, 0)]
    sb.tick(30.0)  # the peer's keepalive is what keeps sa from timing out
    for f in sb.frames_to_send():
        sa.receive_frame(f, 30.0)
    sa.tick(149.0)
    assert not errors(sa.events())
    sa.tick(150.0)
    assert [e.reason for e in errors(sa.events())] == ["timeout"]


def test_close_sends_bye() -> None:
    a, b = nodes()
    sa, sb = handshaken(a, b)
    sa.close()
    for f in sa.frames_to_send():
        sb.receive_frame(f, 0)
    assert sb.events() == [Closed("bye")]
    assert sb.state is SessionState.CLOSED and sb.frames_to_send() == []


def test_salt_must_be_sixteen_bytes() -> None:
    a, b = nodes()
    with pytest.raises(ValueError):
        SyncSession(a.store, local_id=a.id, remote_id=b.id, initiator=True, now=0, salt=b"x")
    assert os.urandom(1)


def test_authorize_hook_hides_spaces_from_a_peer() -> None:
    a, b = nodes(2, (S1, S2))
    a.write(S1, 2)
    a.write(S2, 2)
    sa = SyncSession(a.store, local_id=a.id, remote_id=b.id, initiator=True, now=0,
                     authorize=lambda space, peer: space == S2)
    sb = SyncSession(b.store, local_id=b.id, remote_id=a.id, initiator=False, now=0)
    pump(sa, sb)
    assert sa.shared_spaces == [S2] and b.store.version_vector(S1) == {}


def test_limits_are_validated() -> None:
    a, b = nodes()
    for bad in (SyncLimits(batch_bytes=1000), SyncLimits(credit_bytes=1000),
                SyncLimits(batch_envelopes=0), SyncLimits(batch_envelopes=1000),
                SyncLimits(credit_envelopes=0)):
        with pytest.raises(ValueError):
            SyncSession(a.store, local_id=a.id, remote_id=b.id, initiator=True, now=0,
                        limits=bad)


def test_notify_changed_sends_what_arrived_by_other_means() -> None:
    a, b = nodes()
    sa, sb = handshaken(a, b)
    other = Node("o", MemoryStore(cache=a.store.cache))
    envs = other.write(S1, 3)
    a.store.ingest(S1, envs)  # e.g. via gossip, not through this session
    assert pump(sa, sb).flights == 0
    sa.notify_changed(S1)
    pump(sa, sb)
    assert b.store.version_vector(S1) == a.store.version_vector(S1)
    assert sa.state is SessionState.LIVE


def test_non_fatal_rejections_keep_the_session() -> None:
    a, b = nodes()
    a.write(S1, 3)
    strict = Node("b", MemoryStore(cache=b.store.cache, is_member=lambda s, author: False),
                  b.key)
    strict.store.add_space(S1)
    sa, sb = open_pair(a, strict)
    trace = pump(sa, sb)
    assert not trace.errors()
    assert sb.stats.rejected_in["not_member"] >= 3
    assert [e.complete for e in trace.events_b if isinstance(e, CaughtUp)] == [False]
    assert sa.state is sb.state is SessionState.LIVE


def test_connection_lost_closes_silently() -> None:
    a, b = nodes()
    sa, _ = handshaken(a, b)
    a.write(S1, 1)
    sa.notify_changed(S1)
    sa.connection_lost()
    assert sa.events() == [Closed("connection_lost")]
    assert sa.frames_to_send() == [] and sa.state is SessionState.CLOSED
    sa.connection_lost()
    assert sa.events() == []


def test_seq_too_large_ends_the_session() -> None:
    """An envelope at seq >= 2^63 can only come from a forging peer: no honest chain
    reaches it and an honest store never holds one (protocols/delta.md §5)."""

    class Refusing(MemoryStore):
        def ingest(self, space: bytes, envelopes: Sequence[bytes]) -> IngestResult:
            result = IngestResult()
            result.rejected.extend((None, "seq_too_large") for _ in envelopes)
            return result

    a, b = nodes()
    a.write(S1, 1)
    strict = Node("b", Refusing(cache=b.store.cache), b.key)
    strict.store.add_space(S1)
    sa, sb = open_pair(a, strict)
    trace = pump(sa, sb)
    assert [e.reason for e in trace.errors()] == ["seq_too_large", "seq_too_large"]
