"""Whom we know, whom we dial, and whom we refuse: :class:`PeerManager`.

The host (:mod:`mycelium.net.host`) enforces per-stream limits; this module keeps the
per-peer memory those limits need to add up to a policy:

- **known peers** with their addresses and where we learned them (static, mDNS,
  inbound), capped at :attr:`PeerPolicy.max_known` (the oldest non-static, unconnected,
  unbanned entry is forgotten first);
- **dialling with backoff**: each failed dial doubles the peer's wait (with jitter, so a
  LAN of nodes that lost their Wi-Fi together does not redial in lockstep) up to a cap;
  a success resets it. :meth:`PeerManager.due` lists the peers worth dialling now;
- **strikes and bans**: whoever notices a peer misbehaving (the host: rate limit, stream
  flood; the sync driver: garbage frames, protocol violations) calls
  :meth:`PeerManager.report`. ``strikes_to_ban`` strikes within ``strike_window`` ban
  the peer for ``ban_duration`` (doubled for each repeat ban, capped). A banned peer's
  streams are reset, its gossip dropped, its connections closed, and we do not dial it.

Time comes from ``clock`` (trio's by default) so tests can drive it; only :meth:`dial`
and :meth:`run` do I/O.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from mycelium.errors import MyceliumError
from mycelium.net.errors import ConnectError

log = logging.getLogger("mycelium.net.peers")

#: Strike reasons reported by the host itself (see :meth:`MyceliumHost.set_peer_gate`).
FAULT_RATE_LIMITED = "rate_limited"
FAULT_STREAM_FLOOD = "stream_flood"
#: The message :class:`~mycelium.sync.session.SyncSession` gives a ``SessionError`` that
#: only relays the peer's own ERR frame: the peer reported a problem (possibly ours), it
#: did not break the protocol, so it earns no strike.
_REPORTED_BY_PEER = "reported by peer"


class Dialer(Protocol):
    """What :class:`PeerManager` needs from a host (:class:`MyceliumHost` fits)."""

    peer_id: str

    async def connect(self, maddr: str) -> str: ...

    async def disconnect(self, peer_id: str) -> None: ...

    def connected_peers(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    """Backoff, ban and size limits (defaults suit a home node on a community LAN)."""

    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    #: Each wait is multiplied by a uniform factor in ``[1 - jitter, 1 + jitter]``.
    backoff_jitter: float = 0.2
    strikes_to_ban: int = 3
    strike_window: float = 600.0
    ban_duration: float = 900.0
    max_ban_duration: float = 24 * 3600.0
    max_known: int = 1024
    max_addrs_per_peer: int = 16
    #: Bans waiting to be enforced (connections to close); more are enforced on the
    #: peer's next stream instead.
    max_pending_cuts: int = 256


@dataclass(slots=True)
class PeerState:
    """What we remember about one peer; also what ``status`` shows."""

    peer_id: str
    source: str
    addrs: list[str] = field(default_factory=list)
    first_seen: float = 0.0
    last_seen: float = 0.0
    dials_ok: int = 0
    dials_failed: int = 0
    #: Failures since the last success; drives the backoff.
    consecutive_failures: int = 0
    next_dial_at: float = 0.0
    last_error: str | None = None
    strikes: deque[float] = field(default_factory=deque)
    faults: Counter[str] = field(default_factory=Counter)
    bans: int = 0
    banned_until: float | None = None
    ban_reason: str | None = None

    def as_dict(self, now: float) -> dict[str, object]:
        """JSON-ready summary (times relative to ``now``)."""
        banned = self.banned_until is not None and self.banned_until > now
        return {
            "peer_id": self.peer_id,
            "source": self.source,
            "addrs": list(self.addrs),
            "dials_ok": self.dials_ok,
            "dials_failed": self.dials_failed,
            "last_error": self.last_error,
            "next_dial_in_s": max(0.0, round(self.next_dial_at - now, 1)),
            "faults": dict(self.faults),
            "bans": self.bans,
            "banned_for_s": round(self.banned_until - now, 1) if banned else None,  # type: ignore[operator]
            "ban_reason": self.ban_reason if banned else None,
        }


def peer_fault(event: object) -> str | None:
    """The strike reason a sync-session event implies, or None.

    A :class:`~mycelium.sync.session.SessionError` with ``remote=True`` means the peer
    broke the protocol (bad or oversized frame, credit exceeded, ...), unless it merely
    relays the peer's ERR frame. Local causes (timeouts) are no fault of the peer's.
    """
    from mycelium.sync.session import SessionError

    if isinstance(event, SessionError) and event.remote and event.message != _REPORTED_BY_PEER:
        return event.reason
    return None


class PeerManager:
    """Known peers, dial backoff, per-peer stats and a ban list with expiry.

    Attach it to a host with ``host.set_peer_gate(manager)`` so the host consults
    :meth:`is_banned` and reports its own findings; run :meth:`run` in a nursery so bans
    also close the banned peer's connections.
    """

    def __init__(
        self,
        dialer: Dialer,
        policy: PeerPolicy | None = None,
        *,
        clock: Callable[[], float] = trio.current_time,
        rng: random.Random | None = None,
    ) -> None:
        self.dialer = dialer
        self.policy = policy if policy is not None else PeerPolicy()
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._peers: dict[str, PeerState] = {}
        self._cut_send, self._cut_receive = trio.open_memory_channel[str](
            self.policy.max_pending_cuts
        )
        self.metrics: Counter[str] = Counter()
        self._wakeup = trio.Event()

    # -- knowing peers --------------------------------------------------------------
    def add(self, peer_id: str, addrs: list[str] | tuple[str, ...] = (), *,
            source: str = "static") -> PeerState | None:
        """Remember ``peer_id`` (and any new ``addrs``); None for ourselves.

        Addresses keep their order (callers dial the first first), loopback moves last,
        and at most ``max_addrs_per_peer`` are kept.
        """
        if peer_id == self.dialer.peer_id:
            return None
        now = self._clock()
        state = self._peers.get(peer_id)
        if state is None:
            self._make_room()
            state = self._peers[peer_id] = PeerState(peer_id, source, first_seen=now)
        state.last_seen = now
        before = len(state.addrs)
        if source == "static":
            state.source = source  # static wins: it is never evicted
        for addr in addrs:
            full = addr if "/p2p/" in addr else f"{addr}/p2p/{peer_id}"
            if full.endswith("/p2p/" + peer_id) and full not in state.addrs:
                state.addrs.append(full)
        state.addrs.sort(key=_is_loopback)
        del state.addrs[self.policy.max_addrs_per_peer:]
        if len(state.addrs) != before:
            self._wakeup.set()  # keep_connected: someone new to dial
        return state

    def _make_room(self) -> None:
        if len(self._peers) < self.policy.max_known:
            return
        connected = set(self.dialer.connected_peers())
        now = self._clock()
        candidates = [
            s for s in self._peers.values()
            if s.source != "static" and s.peer_id not in connected and not self._banned(s, now)
        ]
        if not candidates:
            candidates = [s for s in self._peers.values() if s.peer_id not in connected]
        if candidates:
            oldest = min(candidates, key=lambda s: s.last_seen)
            del self._peers[oldest.peer_id]
            self.metrics["evicted"] += 1

    def get(self, peer_id: str) -> PeerState | None:
        return self._peers.get(peer_id)

    def known(self) -> list[PeerState]:
        return list(self._peers.values())

    def connected(self) -> set[str]:
        return set(self.dialer.connected_peers())

    # -- dialling -------------------------------------------------------------------
    def due(self) -> list[str]:
        """Peers worth dialling now: known addresses, not connected, not banned, and
        their backoff has run out. Fewest failures first."""
        now = self._clock()
        connected = self.connected()
        ready = [
            s for s in self._peers.values()
            if s.addrs and s.peer_id not in connected and not self._banned(s, now)
            and s.next_dial_at <= now
        ]
        ready.sort(key=lambda s: (s.consecutive_failures, s.next_dial_at))
        return [s.peer_id for s in ready]

    def next_due_at(self, exclude: set[str] | frozenset[str] = frozenset()) -> float | None:
        """When :meth:`due` may next return a peer not in ``exclude`` (None: no
        dialable peer)."""
        now = self._clock()
        skip = self.connected() | exclude
        times = [
            max(s.next_dial_at, s.banned_until or 0.0) for s in self._peers.values()
            if s.addrs and s.peer_id not in skip
        ]
        return max(now, min(times)) if times else None

    async def dial(self, peer_id: str, *, force: bool = False) -> str:
        """Connect to a known peer through its addresses in order; return the peer id.

        Raises :class:`ConnectError`: ``banned``, ``unknown_peer``, ``no_address``,
        ``backoff`` (its wait has not run out; ``force`` skips that check) or the last
        address's failure reason. Success resets the backoff; failure extends it.
        """
        state = self._peers.get(peer_id)
        if state is None:
            raise ConnectError(f"peer {_short(peer_id)} is not known", reason="unknown_peer")
        now = self._clock()
        if self._banned(state, now):
            raise ConnectError(f"peer {_short(peer_id)} is banned", reason="banned")
        if not state.addrs:
            raise ConnectError(f"no address for peer {_short(peer_id)}", reason="no_address")
        if not force and state.next_dial_at > now:
            raise ConnectError(
                f"peer {_short(peer_id)} in backoff for {state.next_dial_at - now:.1f} s",
                reason="backoff",
            )
        last: ConnectError | None = None
        for addr in list(state.addrs):
            try:
                got = await self.dialer.connect(addr)
            except ConnectError as exc:
                last = exc
                continue
            except MyceliumError as exc:
                last = ConnectError(str(exc), reason=exc.reason)
                continue
            if got != peer_id:  # cannot happen with /p2p/ addresses and Noise; be sure
                last = ConnectError(f"{addr} answered as {_short(got)}", reason="wrong_peer")
                continue
            self._dial_succeeded(state)
            return peer_id
        assert last is not None
        self._dial_failed(state, last.reason)
        raise last

    def _dial_succeeded(self, state: PeerState) -> None:
        state.dials_ok += 1
        state.consecutive_failures = 0
        state.next_dial_at = 0.0
        state.last_error = None
        state.last_seen = self._clock()
        self.metrics["dials_ok"] += 1

    def _dial_failed(self, state: PeerState, reason: str) -> None:
        p = self.policy
        state.dials_failed += 1
        state.consecutive_failures += 1
        state.last_error = reason
        base = min(p.backoff_max, p.backoff_initial * 2 ** (state.consecutive_failures - 1))
        jitter = self._rng.uniform(1 - p.backoff_jitter, 1 + p.backoff_jitter)
        state.next_dial_at = self._clock() + base * jitter
        self.metrics["dials_failed"] += 1
        log.info(
            "dial %s failed (%s): next try in %.1f s", _short(state.peer_id), reason,
            state.next_dial_at - self._clock(),
        )

    # -- strikes and bans -----------------------------------------------------------
    def is_banned(self, peer_id: str) -> bool:
        state = self._peers.get(peer_id)
        return state is not None and self._banned(state, self._clock())

    def _banned(self, state: PeerState, now: float) -> bool:
        if state.banned_until is None:
            return False
        if state.banned_until <= now:
            state.banned_until = None
            log.info("ban of %s expired", _short(state.peer_id))
            return False
        return True

    def report(self, peer_id: str, reason: str) -> bool:
        """Count one strike against ``peer_id``; True if this strike banned it.

        Synchronous and cheap: called from the host's stream tasks and from session
        event callbacks. The ban's disconnect happens in :meth:`run`.
        """
        if peer_id == self.dialer.peer_id:
            return False
        state = self._peers.get(peer_id) or self.add(peer_id, source="inbound")
        assert state is not None
        now = self._clock()
        p = self.policy
        state.faults[reason] += 1
        self.metrics[f"fault_{reason}"] += 1
        if self._banned(state, now):
            return False
        state.strikes.append(now)
        while state.strikes and state.strikes[0] <= now - p.strike_window:
            state.strikes.popleft()
        log.warning(
            "peer %s misbehaved (%s): strike %d of %d", _short(peer_id), reason,
            len(state.strikes), p.strikes_to_ban,
        )
        if len(state.strikes) < p.strikes_to_ban:
            return False
        self.ban(peer_id, reason)
        return True

    def observe(self, peer_id: str, event: object) -> bool:
        """Feed a sync-session event; a protocol violation by the peer is a strike
        (see :func:`peer_fault`). True if that banned the peer."""
        reason = peer_fault(event)
        return False if reason is None else self.report(peer_id, reason)

    def ban(self, peer_id: str, reason: str, duration: float | None = None) -> None:
        """Ban ``peer_id`` now. Without ``duration``: ``ban_duration`` doubled for each
        earlier ban of this peer, capped at ``max_ban_duration``."""
        state = self._peers.get(peer_id) or self.add(peer_id, source="inbound")
        if state is None:
            return
        p = self.policy
        if duration is None:
            duration = min(p.max_ban_duration, p.ban_duration * 2 ** state.bans)
        state.bans += 1
        state.banned_until = self._clock() + duration
        state.ban_reason = reason
        state.strikes.clear()
        self.metrics["bans"] += 1
        log.warning("peer %s banned for %.0f s (%s)", _short(peer_id), duration, reason)
        try:
            self._cut_send.send_nowait(peer_id)
        except trio.WouldBlock:
            self.metrics["cuts_deferred"] += 1  # enforced on its next stream instead

    def unban(self, peer_id: str) -> None:
        state = self._peers.get(peer_id)
        if state is not None:
            state.banned_until = None
            state.strikes.clear()

    def banned(self) -> dict[str, float]:
        """Banned peers and the seconds their bans have left."""
        now = self._clock()
        return {
            s.peer_id: s.banned_until - now  # type: ignore[operator]
            for s in self._peers.values() if self._banned(s, now)
        }

    # -- service --------------------------------------------------------------------
    async def run(self) -> None:
        """Close the connections of peers as they get banned (until cancelled)."""
        async for peer_id in self._cut_receive:
            if self.is_banned(peer_id) and peer_id in self.connected():
                await self.dialer.disconnect(peer_id)
                self.metrics["cuts"] += 1

    async def keep_connected(
        self,
        on_connected: Callable[[str], Awaitable[None]],
        *,
        max_parallel: int = 8,
        poll_interval: float = 5.0,
    ) -> None:
        """Dial every :meth:`due` peer (at most ``max_parallel`` dials at once) until
        cancelled, then await ``on_connected(peer_id)`` in the dial's task (e.g. run a
        sync session). A peer is not dialled again while its ``on_connected`` runs.

        Wakes when :meth:`add` learns an address, when a backoff runs out, and every
        ``poll_interval`` seconds (to notice disconnects). Errors from ``on_connected``
        are logged and counted (``on_connected_failed``), never raised.
        """
        limiter = trio.CapacityLimiter(max_parallel)
        busy: set[str] = set()
        async with trio.open_nursery() as nursery:
            while True:
                self._wakeup = trio.Event()
                for peer_id in self.due():
                    if peer_id not in busy:
                        busy.add(peer_id)
                        nursery.start_soon(self._dial_then, peer_id, on_connected, limiter, busy)
                delay = poll_interval
                next_at = self.next_due_at(busy)
                if next_at is not None:
                    delay = min(delay, max(0.01, next_at - self._clock()))
                with trio.move_on_after(delay):
                    await self._wakeup.wait()

    async def _dial_then(
        self,
        peer_id: str,
        on_connected: Callable[[str], Awaitable[None]],
        limiter: trio.CapacityLimiter,
        busy: set[str],
    ) -> None:
        try:
            async with limiter:
                try:
                    await self.dial(peer_id)
                except ConnectError:
                    return  # counted and backed off by dial()
            try:
                await on_connected(peer_id)
            except Exception as exc:
                self.metrics["on_connected_failed"] += 1
                log.warning(
                    "after connecting to %s: %s", _short(peer_id),
                    getattr(exc, "reason", None) or repr(exc),
                )
        finally:
            busy.discard(peer_id)
            self._wakeup.set()

    def summary(self) -> dict[str, object]:
        """Counts for ``status``: known, connected, banned, and the fault counters."""
        return {
            "known": len(self._peers),
            "connected": len(self.connected()),
            "banned": len(self.banned()),
            **{k: v for k, v in sorted(self.metrics.items())},
        }


def _is_loopback(addr: str) -> bool:
    return addr.startswith("/ip4/127.") or addr.startswith("/ip6/::1/")


def _short(peer_id: str) -> str:
    return peer_id[-8:]


__all__ = [
    "FAULT_RATE_LIMITED",
    "FAULT_STREAM_FLOOD",
    "Dialer",
    "PeerManager",
    "PeerPolicy",
    "PeerState",
    "peer_fault",
]
