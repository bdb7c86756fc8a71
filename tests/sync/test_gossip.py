"""Gossip bookkeeping: in-order ingest, gaps -> anti-entropy, dedupe, rates, pacing."""

from __future__ import annotations

import hashlib

import pytest

from mycelium.sync.gossip import (
    GossipDropped,
    GossipIngested,
    GossipOutbox,
    GossipTracker,
    NeedAntiEntropy,
    SeenIds,
    decode_gossip,
    encode_gossip,
    topic_for_space,
)
from mycelium.sync.memstore import MemoryStore
from mycelium.sync.messages import ProtocolError

from .pair import Node
from .test_memstore import forge

S = b"\x07" * 32


@pytest.fixture
def env() -> list[bytes]:
    return Node("w", MemoryStore()).write(S, 6)


def tracker(**kw: float) -> tuple[GossipTracker, MemoryStore]:
    st = MemoryStore()
    st.add_space(S)
    return GossipTracker(st, cache=st.cache, known_seq=st.known_seq, **kw), st  # type: ignore[arg-type]


def test_topic_rule() -> None:
    expected = hashlib.sha256(b"mycelium-topic-v1" + S).hexdigest()[:32]
    assert topic_for_space(S) == "/mycelium/space/1/" + expected
    assert S.hex() not in topic_for_space(S)


def test_in_order_envelopes_are_ingested(env: list[bytes]) -> None:
    g, st = tracker()
    acts = g.on_message(S, encode_gossip(env[:2]), "p", 0.0)
    assert len(acts) == 1 and isinstance(acts[0], GossipIngested)
    assert acts[0].accepted == tuple(env[:2])
    acts = g.on_message(S, encode_gossip(env[2:3]), "p", 0.1)
    assert isinstance(acts[0], GossipIngested) and list(st.version_vector(S).values()) == [3]


def test_gap_asks_for_anti_entropy_once_per_interval(env: list[bytes]) -> None:
    g, st = tracker(anti_entropy_interval=5.0)
    acts = g.on_message(S, encode_gossip(env[3:4]), "p", 0.0)
    assert NeedAntiEntropy(S, "p") in acts
    assert st.pending_count(S) == 1  # parked, not lost
    assert not any(isinstance(a, NeedAntiEntropy)
                   for a in g.on_message(S, encode_gossip(env[4:5]), "p", 1.0))
    assert NeedAntiEntropy(S, "p") in g.on_message(S, encode_gossip(env[5:6]), "p", 6.0)
    g.on_message(S, encode_gossip(env[:3]), "q", 7.0)
    assert list(st.version_vector(S).values()) == [6] and g.stats.gaps == 3


def test_duplicates_are_dropped_before_the_store(env: list[bytes]) -> None:
    g, _ = tracker()
    g.on_message(S, encode_gossip(env[:1]), "p", 0.0)
    assert g.on_message(S, encode_gossip(env[:1]), "q", 0.0) == []
    assert g.stats.duplicates == 1 and g.peers["q"].duplicates == 1
    g.note_local(env[1:2])
    assert g.on_message(S, encode_gossip(env[1:2]), "q", 0.0) == []


def test_bad_messages_and_envelopes(env: list[bytes]) -> None:
    g, _ = tracker()
    assert g.on_message(S, b"\xff", "p", 0.0) == [GossipDropped("p", "bad_frame")]
    assert g.on_message(S, encode_gossip([forge(env[0])]), "p", 0.0)[0].result.rejected
    assert g.stats.rejected == {"bad_frame": 1, "bad_signature": 1}
    assert g.on_message(b"\x08" * 32, encode_gossip(env[:1]), "p", 0.0) == []
    assert g.stats.rejected["wrong_space"] == 1


def test_rate_limit_per_peer(env: list[bytes]) -> None:
    g, _ = tracker(rate=1.0, burst=2.0)
    msg = encode_gossip(env[:1])
    assert g.on_message(S, msg, "p", 0.0) != [GossipDropped("p", "rate_limited")]
    g.on_message(S, msg, "p", 0.0)
    assert g.on_message(S, msg, "p", 0.0) == [GossipDropped("p", "rate_limited")]
    assert g.on_message(S, msg, "other", 0.0) == []  # a duplicate, but not rate limited
    assert g.on_message(S, msg, "p", 1.0) == []  # refilled
    assert g.peers["p"].dropped == 1


def test_gossip_codec_limits() -> None:
    with pytest.raises(ValueError):
        encode_gossip([])
    with pytest.raises(ValueError):
        encode_gossip([b"x"] * 33)
    with pytest.raises(ProtocolError):
        decode_gossip(encode_gossip([b"x"])[:-1])
    assert decode_gossip(encode_gossip([b"a", b"b"])) == [b"a", b"b"]


def test_seen_ids_is_a_bounded_lru() -> None:
    seen = SeenIds(2)
    assert seen.add(b"a") and seen.add(b"b")
    assert not seen.add(b"a")  # refreshes a
    seen.add(b"c")  # evicts b
    assert b"a" in seen and b"b" not in seen and len(seen) == 2


def test_outbox_batches_and_paces() -> None:
    box = GossipOutbox(rate=2.0, max_envelopes=3)
    for i in range(7):
        box.queue(S, bytes([i]) * 10)
    first = box.due(0.0)
    assert len(first) == 1 and first[0][0] == topic_for_space(S)
    assert decode_gossip(first[0][1]) == [bytes([i]) * 10 for i in range(3)]
    assert box.due(0.4) == [] and box.next_deadline() == 0.5
    assert len(decode_gossip(box.due(0.5)[0][1])) == 3
    assert len(decode_gossip(box.due(1.0)[0][1])) == 1
    assert box.next_deadline() is None


def test_predecoded_messages_behave_the_same(env: list[bytes]) -> None:
    g, _ = tracker()
    acts = g.on_envelopes(S, decode_gossip(encode_gossip(env[:2])), "p", 0.0)
    assert isinstance(acts[0], GossipIngested) and len(acts[0].accepted) == 2
    assert g.on_envelopes(S, env[:2], "p", 0.0) == []
