"""Lazy push (cap "lazy", protocols/sync.md §7.5): PRUNE on duplicates, HAVE, graft by WANT."""

from __future__ import annotations

from mycelium.sync.messages import (
    CAP_LAZY,
    Have,
    Hello,
    Live,
    Message,
    Prune,
    Want,
    decode_message,
    encode_message,
)
from mycelium.sync.session import SessionError, SyncLimits, SyncSession

from .pair import Node, make_nodes, open_pair, pump

S1 = b"\x01" * 32
LAZY = SyncLimits(lazy_push=True)


def lazy_pair(*, limits_b: SyncLimits = LAZY) -> tuple[Node, Node, SyncSession, SyncSession]:
    a, b = make_nodes(2)
    for n in (a, b):
        n.store.add_space(S1)
    a.write(S1, 2)
    sa, sb = open_pair(a, b, limits=LAZY, limits_b=limits_b)
    pump(sa, sb)
    sa.events()
    sb.events()
    return a, b, sa, sb


def sent(frames: list[bytes]) -> list[Message]:
    return [decode_message(f) for f in frames]


def prune_link(a: Node, b: Node, sa: SyncSession, sb: SyncSession) -> list[bytes]:
    """a pushes an envelope b already got another way: b prunes the link."""
    new = a.write(S1, 1)
    b.store.ingest(S1, new)
    assert sa.push_local(S1, new[0])
    pump(sa, sb)
    return new


def test_cap_is_negotiated_and_absent_by_default() -> None:
    a, b = make_nodes(2)
    a.store.add_space(S1)
    b.store.add_space(S1)
    plain = SyncSession(a.store, local_id=a.id, remote_id=b.id, initiator=True, now=0)
    hello = sent(plain.frames_to_send())[0]
    assert isinstance(hello, Hello) and hello.caps == ()  # default wire bytes unchanged
    *_, sa, sb = lazy_pair()
    assert sa.lazy and sb.lazy
    *_, sa, sb = lazy_pair(limits_b=SyncLimits())
    assert not sa.lazy and not sb.lazy  # one side without the cap: eager as before


def test_duplicate_live_push_prunes_the_link_both_ways() -> None:
    a, b, sa, sb = lazy_pair()
    prune_link(a, b, sa, sb)
    assert sb.stats.prunes_out == 1 and sa.stats.prunes_out == 0
    assert not sa._by_space[S1].eager and not sb._by_space[S1].eager
    # from now on a announces instead of pushing (and b would too)
    new = a.write(S1, 2)
    for raw in new:
        assert sa.push_local(S1, raw)
    msgs = sent(sa.frames_to_send(now=1.0))
    assert not any(isinstance(m, Live) for m in msgs)
    have = [m for m in msgs if isinstance(m, Have)]
    assert len(have) == 1 and have[0].vv == {a.id: 5}
    assert sa.stats.haves_out == 1


def test_useful_live_push_does_not_prune() -> None:
    a, b, sa, sb = lazy_pair()
    for raw in a.write(S1, 3):
        sa.push_local(S1, raw)
    pump(sa, sb)
    assert sb.stats.prunes_out == 0 and sa._by_space[S1].eager
    assert b.store.version_vector(S1) == a.store.version_vector(S1)


def test_have_of_missing_envelope_grafts_after_the_timeout() -> None:
    a, b, sa, sb = lazy_pair()
    prune_link(a, b, sa, sb)
    new = a.write(S1, 1)
    sa.push_local(S1, new[0], now=1.0)
    for f in sa.frames_to_send(now=1.0):
        sb.receive_frame(f, 1.0)
    # b's view of a now includes it: b would never push it back to a
    assert not sb.push_local(S1, new[0])
    deadline = sb.lazy_deadline()
    # graft_timeout plus a per-session share of it (from the salt): peers spread out
    assert 1.0 + LAZY.graft_timeout <= deadline < 1.0 + 2 * LAZY.graft_timeout
    assert sb.next_deadline() == deadline
    assert sent(sb.frames_to_send(now=deadline - 0.01)) == []  # not yet
    msgs = sent(sb.frames_to_send(now=deadline))
    assert [type(m) for m in msgs] == [Want] and sb.stats.grafts_out == 1
    for m in msgs:
        sa.receive_frame(encode_message(m), deadline)
    assert sa._by_space[S1].eager  # grafted: a pushes to b again
    pump(sa, sb, now=deadline)
    assert b.store.version_vector(S1) == a.store.version_vector(S1)
    assert not any(isinstance(e, SessionError) for e in sa.events() + sb.events())


def test_have_of_envelope_that_arrives_another_way_does_not_graft() -> None:
    a, b, sa, sb = lazy_pair()
    prune_link(a, b, sa, sb)
    new = a.write(S1, 1)
    sa.push_local(S1, new[0], now=1.0)
    for f in sa.frames_to_send(now=1.0):
        sb.receive_frame(f, 1.0)
    b.store.ingest(S1, new)  # the tree delivered it
    assert sent(sb.frames_to_send(now=1.0 + 2 * LAZY.graft_timeout)) == []
    assert sb.stats.grafts_out == 0 and sb.lazy_deadline() == float("inf")


def test_have_and_prune_without_the_cap_are_unexpected() -> None:
    *_, _sa, sb = lazy_pair(limits_b=SyncLimits())
    sb.receive_frame(encode_message(Prune(0)), 0.0)
    errs = [e for e in sb.events() if isinstance(e, SessionError)]
    assert errs and errs[0].reason == "unexpected_message"
    assert CAP_LAZY == "lazy"


def test_envelopes_announced_while_a_graft_timer_runs_get_their_own_deadline() -> None:
    a, b, sa, sb = lazy_pair()
    prune_link(a, b, sa, sb)
    first = a.write(S1, 1)
    sa.push_local(S1, first[0], now=1.0)
    for f in sa.frames_to_send(now=1.0):
        sb.receive_frame(f, 1.0)
    g1 = sb.lazy_deadline()
    later = a.write(S1, 1)
    sa.push_local(S1, later[0], now=1.5)
    for f in sa.frames_to_send(now=1.5):  # the next HAVE (have_interval later)
        sb.receive_frame(f, 1.5)
    assert sb.lazy_deadline() == g1  # not pushed back by the second HAVE
    b.store.ingest(S1, first)  # what the first HAVE announced arrived another way
    assert sent(sb.frames_to_send(now=g1)) == []  # no graft for the one still in flight
    g2 = sb.lazy_deadline()
    assert g2 == g1 + 0.5  # its own deadline: announced 0.5 s later
    msgs = sent(sb.frames_to_send(now=g2))
    assert [type(m) for m in msgs] == [Want] and sb.stats.grafts_out == 1
