"""Rate limits of the relay: keyed token buckets, pure (time is an argument).

One :class:`KeyedBuckets` per limit (handshakes per IP, handshakes per identity, frames
per IP, frames per identity). ``take`` answers how long the caller must wait (0: go
ahead), which becomes ``Retry-After`` over REST. Memory is bounded: the least recently
used keys are forgotten first (a forgotten key starts with a full bucket again, which
only ever favours the client; the cap only matters under a flood of distinct keys).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RelayLimits:
    """Every limit of a relay in one place (protocols/relay.md §6). Rates are per second."""

    handshakes_per_ip: float = 2.0
    handshake_burst_ip: float = 20.0
    handshakes_per_identity: float = 1.0
    handshake_burst_identity: float = 10.0
    frames_per_identity: float = 200.0
    frame_burst_identity: float = 2000.0
    frames_per_ip: float = 400.0
    frame_burst_ip: float = 4000.0
    max_sessions: int = 1000
    max_sessions_per_identity: int = 8
    #: Largest REST request body (a POST of envelopes); WebSocket messages are bounded
    #: by the sync frame limit.
    max_body_bytes: int = 4 * 1024 * 1024
    #: Envelopes per REST page.
    page_envelopes: int = 256
    page_bytes: int = 1024 * 1024
    challenge_ttl_s: float = 60.0
    #: A WebSocket that does not finish the handshake within this many seconds is closed.
    handshake_timeout_s: float = 15.0


class KeyedBuckets:
    """Token buckets keyed by identity or address; ``rate`` tokens/s, ``burst`` at most."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be > 0, burst >= 1, max_keys >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[object, tuple[float, float]] = OrderedDict()

    def take(self, key: object, now: float, n: float = 1.0) -> float:
        """Spend ``n`` tokens of ``key``'s bucket: 0.0 if granted, else the seconds until
        they would be (nothing is spent on a refusal)."""
        tokens, stamp = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - stamp) * self.rate)
        wait = 0.0
        if tokens >= n:
            tokens -= n
        else:
            wait = (n - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)
