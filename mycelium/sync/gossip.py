"""Gossip bookkeeping, sans-IO (``protocols/sync.md`` §8).

GossipSub carries new envelopes to a space's topic fast, but it is lossy (NOTES.md:
rate caps, queue overflows, dropped subscriptions). So gossip is a hint: this module
ingests what arrives in order, dedupes, accounts per-peer rates, and asks for
anti-entropy (a :class:`~mycelium.sync.session.SyncSession` with that peer) as soon as an
envelope shows a gap in an author's chain. :class:`GossipOutbox` paces and batches what
we publish so bursts do not overflow the router's queues.

Nothing here touches the network or a clock: messages and ``now`` come in, actions go out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import cbor2

from mycelium.sync.cache import CachedRejection, EnvelopeInfo, VerifyCache
from mycelium.sync.messages import MessageLimits, ProtocolError
from mycelium.sync.ports import DeltaStore, IngestResult
from mycelium.sync.wire import WireError, read_message_map

TOPIC_DOMAIN = b"mycelium-topic-v1"
TOPIC_PREFIX = "/mycelium/space/1/"
#: Envelopes and bytes in one gossip message (GossipSub's default max is 1 MiB).
MAX_GOSSIP_ENVELOPES = 32
MAX_GOSSIP_BYTES = 256 * 1024
_GOSSIP_LIMITS = MessageLimits(max_frame=MAX_GOSSIP_BYTES + 1024,
                               max_batch_envelopes=MAX_GOSSIP_ENVELOPES,
                               max_batch_bytes=MAX_GOSSIP_BYTES)

Peer = Hashable


def topic_for_space(space_id: bytes) -> str:
    """GossipSub topic of a space: the space id never appears on the wire.

    ``"/mycelium/space/1/" + hex(sha256("mycelium-topic-v1" || space_id))[:32]``. The
    hash hides the id (a topic name cannot be turned back into the capability), but
    a topic is stable, so observers can tell two subscribers share *some* space.
    """
    return TOPIC_PREFIX + hashlib.sha256(TOPIC_DOMAIN + space_id).hexdigest()[:32]


def encode_gossip(envelopes: Sequence[bytes]) -> bytes:
    """A gossip message: canonical CBOR ``{"e": [envelope, ...], "t": "gossip"}``."""
    if not 0 < len(envelopes) <= MAX_GOSSIP_ENVELOPES:
        raise ValueError(f"a gossip message carries 1..{MAX_GOSSIP_ENVELOPES} envelopes")
    return cbor2.dumps({"e": list(envelopes), "t": "gossip"})  # keys in canonical order


def decode_gossip(data: bytes) -> list[bytes]:
    """Strictly parse a gossip message. Raises :class:`ProtocolError`.

    Read by the bounded sync-frame reader (``protocols/sync.md`` §4.1): counts are checked
    before bodies, and only the deterministic encoding is accepted."""
    try:
        m = read_message_map(data, _GOSSIP_LIMITS)
    except WireError as exc:
        reason = "oversized_batch" if exc.reason == "oversized_frame" else exc.reason
        raise ProtocolError(f"gossip message: {exc}", reason=reason) from exc
    if m.keys() != {"t", "e"} or m["t"] != "gossip":
        raise ProtocolError("not a gossip message", reason="bad_message")
    envs: list[bytes] = m["e"]
    if not all(envs):
        raise ProtocolError("gossip envelopes must be byte strings", reason="bad_message")
    if not 0 < len(envs) <= MAX_GOSSIP_ENVELOPES:
        raise ProtocolError("gossip message envelope count out of range",
                            reason="too_many_envelopes")
    return envs


# -- actions --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class GossipIngested:
    """Envelopes from ``peer`` went to the store; ``accepted`` are newly stored raw
    envelopes (push them to open sessions; the session views prevent echoes). When
    ``result.accepted`` has more ids, the store released pending envelopes: call
    ``SyncSession.notify_changed(space)`` on open sessions."""

    space: bytes
    peer: Peer
    result: IngestResult
    accepted: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class NeedAntiEntropy:
    """``peer`` has envelopes of ``space`` beyond a gap in our chains: sync with it."""

    space: bytes
    peer: Peer


@dataclass(frozen=True, slots=True)
class GossipDropped:
    """A gossip message from ``peer`` was dropped (``rate_limited``, ``bad_frame``...)."""

    peer: Peer
    reason: str


GossipAction = GossipIngested | NeedAntiEntropy | GossipDropped


class SeenIds:
    """Bounded LRU set of delta ids (dedupe gossip before touching the store)."""

    __slots__ = ("_ids", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: dict[bytes, None] = {}

    def __contains__(self, delta_id: object) -> bool:
        return delta_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, delta_id: bytes) -> bool:
        """Record ``delta_id``; True if it was new. A hit refreshes its recency."""
        ids = self._ids
        if delta_id in ids:
            del ids[delta_id]
            ids[delta_id] = None
            return False
        ids[delta_id] = None
        if len(ids) > self.capacity:
            del ids[next(iter(ids))]
        return True


@dataclass(slots=True)
class PeerRate:
    """Per-peer gossip accounting and token bucket (messages per second)."""

    tokens: float
    last: float
    messages: int = 0
    envelopes: int = 0
    nbytes: int = 0
    duplicates: int = 0
    dropped: int = 0


@dataclass(slots=True)
class GossipStats:
    messages: int = 0
    envelopes: int = 0
    duplicates: int = 0
    accepted: int = 0
    gaps: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class GossipTracker:
    """Receive side of gossip for all spaces of one node.

    ``known_seq(space, author)``: optional fast lookup of the store's contiguous seq
    (default: one ``store.version_vector`` call per message). ``rate``/``burst``: token
    bucket per peer, in messages. ``anti_entropy_interval``: at most one
    :class:`NeedAntiEntropy` per (space, peer) in that many seconds.
    """

    def __init__(
        self,
        store: DeltaStore,
        *,
        cache: VerifyCache | None = None,
        known_seq: Callable[[bytes, bytes], int] | None = None,
        seen_capacity: int = 65_536,
        rate: float = 50.0,
        burst: float = 200.0,
        anti_entropy_interval: float = 5.0,
    ) -> None:
        self.store = store
        self.cache = cache if cache is not None else VerifyCache(max_entries=65_536)
        self.known_seq = known_seq
        self.seen = SeenIds(seen_capacity)
        self.rate = rate
        self.burst = burst
        self.anti_entropy_interval = anti_entropy_interval
        self.peers: dict[Peer, PeerRate] = {}
        self.stats = GossipStats()
        self._asked: dict[tuple[bytes, Peer], float] = {}

    def note_local(self, envelopes: Sequence[bytes]) -> None:
        """Mark our own published envelopes seen, so their echoes cost nothing."""
        for raw in envelopes:
            try:
                self.seen.add(self.cache.info(raw).delta_id)
            except CachedRejection:
                continue

    def on_message(self, space: bytes, data: bytes, peer: Peer, now: float) -> list[GossipAction]:
        """Handle one gossip message received on ``space``'s topic from ``peer``."""
        pr = self._account(peer, now, len(data))
        if pr is None:
            return [GossipDropped(peer, "rate_limited")]
        try:
            envs = decode_gossip(data)
        except ProtocolError as exc:
            self._count_reject(exc.reason)
            pr.dropped += 1
            return [GossipDropped(peer, exc.reason)]
        return self._on_envelopes(space, envs, peer, pr, now)

    def on_envelopes(
        self, space: bytes, envs: Sequence[bytes], peer: Peer, now: float, *, nbytes: int = 0
    ) -> list[GossipAction]:
        """Like :meth:`on_message` for a message decoded once by the caller (simnet
        delivers one published message to many nodes: decode it once, with
        :func:`decode_gossip`, and hand every receiver the same list)."""
        pr = self._account(peer, now, nbytes)
        if pr is None:
            return [GossipDropped(peer, "rate_limited")]
        return self._on_envelopes(space, envs, peer, pr, now)

    def _on_envelopes(
        self, space: bytes, envs: Sequence[bytes], peer: Peer, pr: PeerRate, now: float
    ) -> list[GossipAction]:
        st = self.stats
        st.messages += 1
        st.envelopes += len(envs)
        pr.envelopes += len(envs)
        fresh: list[tuple[EnvelopeInfo, bytes]] = []
        for raw in envs:
            try:
                info = self.cache.info(raw)
            except CachedRejection as exc:
                self._count_reject(exc.reason)
                continue
            if info.space != space:
                self._count_reject("wrong_space")
                continue
            if not self.seen.add(info.delta_id):
                st.duplicates += 1
                pr.duplicates += 1
                continue
            fresh.append((info, raw))
        if not fresh:
            return []
        known = self._known(space)
        fresh.sort(key=lambda p: (p[0].author, p[0].seq))
        expected: dict[bytes, int] = {}
        to_ingest: list[bytes] = []
        gap = False
        for info, raw in fresh:
            have = expected.get(info.author)
            if have is None:
                have = known(info.author)
            if info.seq <= have:
                st.duplicates += 1
                pr.duplicates += 1
                continue
            if info.seq == have + 1:
                expected[info.author] = info.seq
            else:
                gap = True  # still ingested: the store parks it until the gap is filled
            to_ingest.append(raw)
        actions: list[GossipAction] = []
        if to_ingest:
            result = self.store.ingest(space, to_ingest)
            for _, reason in result.rejected:
                self._count_reject(reason)
            st.accepted += len(result.accepted)
            ids = set(result.accepted)
            accepted = tuple(raw for info, raw in fresh if info.delta_id in ids)
            actions.append(GossipIngested(space, peer, result, accepted))
        if gap:
            st.gaps += 1
            last = self._asked.get((space, peer))
            if last is None or now - last >= self.anti_entropy_interval:
                self._asked[(space, peer)] = now
                actions.append(NeedAntiEntropy(space, peer))
        return actions

    def forget_peer(self, peer: Peer) -> None:
        self.peers.pop(peer, None)
        for key in [k for k in self._asked if k[1] == peer]:
            del self._asked[key]

    def _known(self, space: bytes) -> Callable[[bytes], int]:
        if self.known_seq is not None:
            fn = self.known_seq
            return lambda author: fn(space, author)
        vv = self.store.version_vector(space)
        return lambda author: vv.get(author, 0)

    def _account(self, peer: Peer, now: float, size: int) -> PeerRate | None:
        pr = self.peers.get(peer)
        if pr is None:
            pr = self.peers[peer] = PeerRate(tokens=self.burst, last=now)
        pr.tokens = min(self.burst, pr.tokens + (now - pr.last) * self.rate)
        pr.last = now
        pr.messages += 1
        pr.nbytes += size
        if pr.tokens < 1.0:
            pr.dropped += 1
            self._count_reject("rate_limited")
            return None
        pr.tokens -= 1.0
        return pr

    def _count_reject(self, reason: str) -> None:
        self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1


class GossipOutbox:
    """Send side: batch envelopes per space and pace publishes per topic.

    GossipSub's router drops bursts (a 32-message queue, ~10 messages/s per topic by
    default), so we publish at most ``rate`` messages per second per topic, each carrying
    up to ``max_envelopes``. ``due(now)`` returns ``(topic, payload)`` pairs to publish.
    Envelopes that wait beyond ``max_queue`` per space are dropped (anti-entropy repairs).
    """

    def __init__(self, *, rate: float = 5.0, max_envelopes: int = MAX_GOSSIP_ENVELOPES,
                 max_bytes: int = 64 * 1024, max_queue: int = 1024) -> None:
        self.interval = 1.0 / rate
        self.max_envelopes = max_envelopes
        self.max_bytes = max_bytes
        self.max_queue = max_queue
        self._queues: dict[bytes, list[bytes]] = {}
        self._next: dict[bytes, float] = {}
        self.dropped = 0

    def queue(self, space: bytes, envelope: bytes) -> None:
        q = self._queues.setdefault(space, [])
        if len(q) >= self.max_queue:
            self.dropped += 1
            return
        q.append(envelope)

    def due(self, now: float) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        for space, q in self._queues.items():
            if not q or now < self._next.get(space, now):
                continue
            n, size = 0, 0
            limit = min(len(q), self.max_envelopes)
            while n < limit and (n == 0 or size + len(q[n]) <= self.max_bytes):
                size += len(q[n])
                n += 1
            out.append((topic_for_space(space), encode_gossip(q[:n])))
            del q[:n]
            self._next[space] = now + self.interval
        return out

    def next_deadline(self) -> float | None:
        times = [self._next.get(s, 0.0) for s, q in self._queues.items() if q]
        return min(times) if times else None
