"""In-memory drivers for sync sessions: no sockets, no clock, exact flight counting.

A *flight* is one step in which each session's pending output is delivered to the other
at once (both directions in parallel), like one one-way network latency. Two flights
are one round trip.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mycelium.sync.cache import VerifyCache
from mycelium.sync.memstore import MemoryStore
from mycelium.sync.session import (
    CaughtUp,
    EnvelopesIngested,
    Event,
    SessionError,
    SessionState,
    SyncLimits,
    SyncSession,
)

GROUP_KEY = bytes(range(32))


@dataclass
class Node:
    """A store plus an identity, for tests."""

    name: str
    store: MemoryStore
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def id(self) -> bytes:
        return self.key.public_key().public_bytes_raw()

    def write(self, space: bytes, n: int = 1, size: int = 40) -> list[bytes]:
        return [self.store.append_local(space, os.urandom(size), signer=self.key,
                                        group_key=GROUP_KEY).raw for _ in range(n)]


def make_nodes(n: int, cache: VerifyCache | None = None) -> list[Node]:
    cache = cache if cache is not None else VerifyCache()
    return [Node(f"n{i}", MemoryStore(cache=cache)) for i in range(n)]


def open_pair(
    a: Node, b: Node, *, now: float = 0.0, limits: SyncLimits | None = None,
    limits_b: SyncLimits | None = None,
) -> tuple[SyncSession, SyncSession]:
    """Session ``a`` (initiator) <-> ``b`` (responder), sharing the stores' cache."""
    sa = SyncSession(a.store, local_id=a.id, remote_id=b.id, initiator=True, now=now,
                     limits=limits, cache=a.store.cache)
    sb = SyncSession(b.store, local_id=b.id, remote_id=a.id, initiator=False, now=now,
                     limits=limits_b or limits, cache=b.store.cache)
    return sa, sb


@dataclass
class Trace:
    flights: int = 0
    events_a: list[Event] = field(default_factory=list)
    events_b: list[Event] = field(default_factory=list)
    #: flight number at which each side first saw CaughtUp for every shared space.
    caught_up_a: int | None = None
    caught_up_b: int | None = None

    def errors(self) -> list[SessionError]:
        return [e for e in self.events_a + self.events_b if isinstance(e, SessionError)]


def pump(
    sa: SyncSession, sb: SyncSession, *, now: float = 0.0, max_flights: int = 1000,
    on_flight: Callable[[list[bytes], list[bytes]], None] | None = None,
) -> Trace:
    """Deliver frames both ways until neither side has anything to send."""
    trace = Trace()
    for _ in range(max_flights):
        out_a, out_b = sa.frames_to_send(), sb.frames_to_send()
        if not out_a and not out_b:
            return trace
        if on_flight is not None:
            on_flight(out_a, out_b)
        trace.flights += 1
        for f in out_a:
            sb.receive_frame(f, now)
        for f in out_b:
            sa.receive_frame(f, now)
        ev_a, ev_b = sa.events(), sb.events()
        trace.events_a += ev_a
        trace.events_b += ev_b
        if trace.caught_up_a is None and _all_caught_up(sa, trace.events_a):
            trace.caught_up_a = trace.flights
        if trace.caught_up_b is None and _all_caught_up(sb, trace.events_b):
            trace.caught_up_b = trace.flights
    raise AssertionError(f"sessions did not go quiet within {max_flights} flights")


def _all_caught_up(s: SyncSession, events: list[Event]) -> bool:
    if s.state is SessionState.HANDSHAKE:
        return False
    done = {e.space for e in events if isinstance(e, CaughtUp)}
    return all(sp in done for sp in s.shared_spaces)


def sync_pair(a: Node, b: Node, **kw: object) -> Trace:
    """Open a session a -> b, pump to quiescence, close both."""
    sa, sb = open_pair(a, b)
    trace = pump(sa, sb)
    sa.close()
    sb.close()
    return trace


def ingested(events: list[Event]) -> int:
    return sum(len(e.accepted) for e in events if isinstance(e, EnvelopesIngested))
