"""The relay's policy, free of HTTP: who may connect, how often, and what happens to the
envelopes of a session (protocols/relay.md §5–§6).

:class:`RelayService` owns the :class:`~mycelium.relay.store.RelayStore`, the relay's identity
and challenge issuer, the rate limits and the live sessions. The Starlette app
(:mod:`mycelium.relay.server`) only translates HTTP and WebSocket traffic into calls here,
so the REST and WebSocket paths share one implementation of every decision.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import trio

from mycelium.identity.auth import AuthError, ChallengeIssuer
from mycelium.identity.didkey import did_from_public_key, public_key_from_did
from mycelium.identity.identity import Identity
from mycelium.relay.client_ip import TrustedProxies
from mycelium.relay.driver import MessageSessionDriver
from mycelium.relay.errors import BadRequest, Limited, Unauthenticated, Unavailable
from mycelium.relay.handshake import RelayIdentity
from mycelium.relay.limits import KeyedBuckets, RelayLimits
from mycelium.relay.store import RelayStore
from mycelium.sync import EnvelopesIngested, SyncSession, VerifyCache

log = logging.getLogger("mycelium.relay")

#: Rejections that mean "this client sent more than it may store": the session ends with
#: this reason (the REST path answers 429).
QUOTA_REASONS = frozenset({"over_quota"})


@dataclass
class RelayMetrics:
    handshakes_ok: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    envelopes_in: int = 0
    envelopes_out: int = 0
    sessions_total: int = 0

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


class RelayService:
    """Shared state of one relay process (one trio thread)."""

    def __init__(self, store: RelayStore, identity: Identity, origins: str | Sequence[str], *,
                 limits: RelayLimits | None = None,
                 clock: Callable[[], float] = time.time,
                 trusted_proxies: TrustedProxies | None = None) -> None:
        self.store = store
        #: Reverse proxies whose X-Forwarded-For the per-IP limits believe (client_ip.py).
        self.proxies = trusted_proxies if trusted_proxies is not None else TrustedProxies()
        self.limits = limits if limits is not None else RelayLimits()
        self.clock = clock
        lim = self.limits
        #: Origins clients may reach this relay under (``--public-url``, repeatable: a relay
        #: behind several names or proxies); each has its own challenge audience.
        self.origins = [origins] if isinstance(origins, str) else list(origins)
        if not self.origins:
            raise ValueError("a relay needs at least one origin")
        self._relays = {o: RelayIdentity(identity, o) for o in self.origins}
        self._issuers = {o: ChallengeIssuer(o, lim.challenge_ttl_s) for o in self.origins}
        self.relay = self._relays[self.origins[0]]
        self.issuer = self._issuers[self.origins[0]]
        self.handshakes_ip = KeyedBuckets(lim.handshakes_per_ip, lim.handshake_burst_ip)
        self.handshakes_id = KeyedBuckets(lim.handshakes_per_identity,
                                          lim.handshake_burst_identity)
        self.frames_ip = KeyedBuckets(lim.frames_per_ip, lim.frame_burst_ip)
        self.frames_id = KeyedBuckets(lim.frames_per_identity, lim.frame_burst_identity)
        self.cache = VerifyCache(max_entries=100_000)
        #: Peer relays (Ed25519 keys) trusted to replicate every hosted space.
        self.trusted: set[bytes] = set()
        #: Called with a space id whenever it gained envelopes (peer relay links).
        self.on_changed: list[Callable[[bytes], None]] = []
        self.sessions: dict[bytes, set[MessageSessionDriver]] = {}
        self.metrics = RelayMetrics()
        self.started = clock()

    @property
    def did(self) -> str:
        return self.relay.identity.did

    def origin_for(self, host: str | None) -> str:
        """The origin a request was addressed to (its ``Host`` header), among ours. With one
        origin that one (a reverse proxy may rewrite ``Host``); else ``wrong_origin``."""
        if len(self.origins) == 1:
            return self.origins[0]
        want = (host or "").lower()
        for origin in self.origins:
            parts = urlsplit(origin)
            default = 443 if parts.scheme == "https" else 80
            names = {parts.netloc.lower()}
            if parts.port == default:
                names.add((parts.hostname or "").lower())
            if want in names:
                return origin
        raise BadRequest(f"this relay does not answer as {host!r}", reason="wrong_origin")

    def issuer_for(self, origin: str) -> ChallengeIssuer:
        return self._issuers[origin]

    def relay_for(self, origin: str) -> RelayIdentity:
        return self._relays[origin]

    # -- admission ------------------------------------------------------------------
    def admit_handshake(self, ip: str) -> None:
        """Raise :class:`Limited` when ``ip`` asks for challenges too often."""
        wait = self.handshakes_ip.take(ip, self.clock())
        if wait:
            self.metrics.refuse("rate_limited")
            raise Limited("too many handshakes from this address", retry_after=wait)

    def authenticate(self, response: bytes | str | None, origin: str | None = None) -> bytes:
        """The client's public key from a challenge response (bytes, or base64url text
        from an ``Authorization: Mycelium …`` header); :class:`Unauthenticated` with the
        auth reason otherwise. Also charges the identity's handshake budget."""
        if response is None or response == "":
            self.metrics.refuse("unauthenticated")
            raise Unauthenticated("no challenge response presented")
        if isinstance(response, str):
            try:
                response = base64.urlsafe_b64decode(response + "=" * (-len(response) % 4))
            except ValueError as exc:
                self.metrics.refuse("malformed_auth")
                raise Unauthenticated("auth header is not base64url",
                                      reason="malformed_auth") from exc
        try:
            issuer = self.issuer if origin is None else self._issuers[origin]
            did = issuer.verify(response, self.clock())
            pub = public_key_from_did(did)
        except AuthError as exc:
            self.metrics.refuse(exc.reason)
            raise Unauthenticated(str(exc), reason=exc.reason) from exc
        wait = self.handshakes_id.take(pub, self.clock())
        if wait:
            self.metrics.refuse("rate_limited")
            raise Limited("too many handshakes for this identity", retry_after=wait)
        self.metrics.handshakes_ok += 1
        return pub

    def admit_session(self, pub: bytes) -> None:
        total = sum(len(s) for s in self.sessions.values())
        if total >= self.limits.max_sessions:
            self.metrics.refuse("too_many_sessions")
            raise Unavailable("the relay is at its session limit", retry_after=30)
        if len(self.sessions.get(pub, ())) >= self.limits.max_sessions_per_identity:
            self.metrics.refuse("too_many_sessions")
            raise Limited("too many sessions for this identity", reason="too_many_sessions",
                          retry_after=30)

    def charge_frames(self, pub: bytes, ip: str, n: int = 1) -> float:
        """Seconds to wait (0: go ahead) for ``n`` more frames/requests of this client."""
        now = self.clock()
        return max(self.frames_id.take(pub, now, n), self.frames_ip.take(ip, now, n))

    # -- sessions ---------------------------------------------------------------------
    def new_session(self, pub: bytes) -> SyncSession:
        """A responder session for an authenticated client: only spaces whose control log
        lists it are offered or matched."""
        return SyncSession(
            self.store, local_id=self.relay.identity.public_key, remote_id=pub,
            initiator=False, now=trio.current_time(), cache=self.cache, authorize=self.may_read)

    def may_read(self, space: bytes, pub: bytes) -> bool:
        """Members by the space's control log; trusted peer relays for every hosted space."""
        if pub in self.trusted:
            return self.store.hosts(space)
        return self.store.may_read(space, pub)

    def list_spaces(self, pub: bytes) -> list[dict[str, Any]]:
        if pub in self.trusted:
            return [{"space": s, "genesis": self.store.genesis(s), "kind": "replica",
                     "role": "replica"} for s in self.store.member_spaces()]
        return [{"space": h.space, "genesis": h.genesis, "kind": h.kind, "role": h.role}
                for h in self.store.list_spaces(pub)]

    def register(self, pub: bytes, genesis: bytes, envelopes: list[bytes]) -> tuple[bytes, bool]:
        space, new = self.store.register(genesis, envelopes, pub, replica=pub in self.trusted)
        if envelopes:
            self.changed(space)
        return space, new

    def attach(self, pub: bytes, driver: MessageSessionDriver) -> None:
        self.sessions.setdefault(pub, set()).add(driver)
        self.metrics.sessions_total += 1

    def detach(self, pub: bytes, driver: MessageSessionDriver) -> None:
        drivers = self.sessions.get(pub)
        if drivers is not None:
            drivers.discard(driver)
            if not drivers:
                del self.sessions[pub]
        self.metrics.envelopes_in += driver.session.stats.envelopes_in
        self.metrics.envelopes_out += driver.session.stats.envelopes_out

    def on_session_event(self, pub: bytes, driver: MessageSessionDriver, event: object) -> None:
        if not isinstance(event, EnvelopesIngested):
            return
        reasons = {r for _, r in event.result.rejected}
        if reasons & QUOTA_REASONS:
            log.info("client %s over quota in space %s", _short(pub), event.space.hex()[:12])
            self.metrics.refuse("over_quota")
            driver.abort("over_quota")
        if event.result.accepted:
            self.changed(event.space, exclude=driver)

    def changed(self, space: bytes, *, exclude: MessageSessionDriver | None = None) -> None:
        """New envelopes in ``space``: wake the other sessions and peer relay links; cut
        off clients that are no longer members (a removal just arrived)."""
        for hook in self.on_changed:
            hook(space)
        for pub, drivers in list(self.sessions.items()):
            for driver in list(drivers):
                if driver is exclude or space not in driver.session.shared_spaces:
                    continue
                if not self.may_read(space, pub):
                    driver.abort("not_member")
                    continue
                driver.session.notify_changed(space)
                driver.poke()

    # -- REST helpers ---------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {"did": self.did, "origin": self.relay.origin, "origins": self.origins,
                "protocol": "mycelium-relay/1",
                "sessions": sum(len(s) for s in self.sessions.values()),
                "usage": self.store.usage()}


def _short(pub: bytes) -> str:
    return did_from_public_key(pub)[-8:]
