"""Periodic anti-entropy: which peer to sync with next, and when (``protocols/sync.md`` §9).

Gossip is lossy and meshes sometimes never form, so every node periodically runs a sync
session with one random peer. With N nodes each picking a random peer every interval,
an update spreads to everyone in O(log N) intervals even with no gossip at all.

Sans-IO and deterministic: the caller passes ``now`` and a seeded ``random.Random``;
peers are kept in insertion order (never a ``set``, whose order depends on the hash
seed), so a simulation replays exactly. Failing peers back off exponentially; a gap
seen in gossip (``request``) makes a peer due at once.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from dataclasses import dataclass

Peer = Hashable


@dataclass(slots=True)
class _PeerState:
    failures: int = 0
    retry_at: float = 0.0


class AntiEntropyScheduler:
    """``due(now) -> peer | None``: at most one random eligible peer per interval.

    The period is ``interval * (1 + uniform(-jitter, jitter))`` so that nodes started
    together do not sync in lockstep. After ``k`` consecutive failures a peer is skipped
    for ``min(backoff * 2**(k-1), max_backoff)`` seconds.
    """

    def __init__(
        self,
        interval: float,
        jitter: float,
        rng: random.Random,
        *,
        now: float = 0.0,
        backoff: float | None = None,
        max_backoff: float | None = None,
    ) -> None:
        if interval <= 0 or not 0 <= jitter < 1:
            raise ValueError("need interval > 0 and 0 <= jitter < 1")
        self.interval = interval
        self.jitter = jitter
        self.rng = rng
        self.backoff = backoff if backoff is not None else interval
        self.max_backoff = max_backoff if max_backoff is not None else 32 * interval
        self._peers: dict[Peer, _PeerState] = {}
        self._urgent: list[Peer] = []
        self._busy: set[Peer] = set()
        self._next = now + self._period()

    def _period(self) -> float:
        return self.interval * (1 + self.rng.uniform(-self.jitter, self.jitter))

    @property
    def peers(self) -> list[Peer]:
        return list(self._peers)

    def add_peer(self, peer: Peer) -> None:
        self._peers.setdefault(peer, _PeerState())

    def remove_peer(self, peer: Peer) -> None:
        self._peers.pop(peer, None)
        self._busy.discard(peer)
        if peer in self._urgent:
            self._urgent.remove(peer)

    def request(self, peer: Peer) -> None:
        """Sync with ``peer`` as soon as possible (e.g. after a gossip gap)."""
        if peer in self._peers and peer not in self._urgent:
            self._urgent.append(peer)

    def started(self, peer: Peer) -> None:
        """A session with ``peer`` is running (also if the peer opened it): skip it."""
        self._busy.add(peer)

    def report_success(self, peer: Peer, now: float) -> None:
        self._busy.discard(peer)
        st = self._peers.get(peer)
        if st is not None:
            st.failures = 0
            st.retry_at = now

    def report_failure(self, peer: Peer, now: float) -> None:
        self._busy.discard(peer)
        st = self._peers.get(peer)
        if st is not None:
            st.failures += 1
            st.retry_at = now + min(self.backoff * 2 ** (st.failures - 1), self.max_backoff)

    def _eligible(self, peer: Peer, now: float) -> bool:
        st = self._peers.get(peer)
        return st is not None and peer not in self._busy and st.retry_at <= now

    def due(self, now: float) -> Peer | None:
        """The peer to start a session with now, or None. Marks it busy."""
        while self._urgent:
            peer = self._urgent.pop(0)
            if self._eligible(peer, now):
                self._busy.add(peer)
                return peer
        if now < self._next:
            return None
        candidates = [p for p in self._peers if self._eligible(p, now)]
        if not candidates:
            # Do not waste the slot: come back when the first backed-off peer may retry.
            retries = [st.retry_at for p, st in self._peers.items()
                       if p not in self._busy and st.retry_at > now]
            self._next = min(retries, default=now + self._period())
            return None
        self._next = now + self._period()
        peer = self.rng.choice(candidates)
        self._busy.add(peer)
        return peer

    def next_deadline(self) -> float:
        """When ``due`` may next return a peer (urgent requests: now)."""
        return float("-inf") if self._urgent else self._next
