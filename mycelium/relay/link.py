"""Keeping one relay in sync with a local store: the client half of the relay protocol.

:class:`RelayLink` keeps a session open to one relay: connect (WebSocket, mutual auth, the
relay's DID pinned or trusted on first use through a :class:`PinStore`), make sure the
relay hosts every space of the local store (registration: genesis + control log), then
run the unchanged :class:`~mycelium.sync.session.SyncSession` as initiator until the
connection ends, and reconnect with jittered exponential backoff. Nothing is lost across
a relay restart: every session starts by comparing version vectors.

Used by the node (:mod:`mycelium.node.relay_link`, over Soil) and by a relay syncing with
its peer relays (over its :class:`~mycelium.relay.store.RelayStore`): the store only needs
the sync port plus ``genesis`` and ``control_envelopes``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from mycelium.errors import MyceliumError
from mycelium.identity.identity import Identity
from mycelium.log import envelope as envelope_mod
from mycelium.relay.client import RelayUrl, connect
from mycelium.relay.driver import MessageSessionDriver, TransportClosed
from mycelium.relay.handshake import MAX_CONTROL_MESSAGE, HandshakeError
from mycelium.sync import CaughtUp, EnvelopesIngested, SessionError, SyncSession, VerifyCache
from mycelium.sync.ports import VersionVector

log = logging.getLogger("mycelium.relay.link")


class PinStore(Protocol):
    """Where a relay's DID is remembered after first use (origin -> DID)."""

    path: Any

    def get(self, origin: str) -> str | None: ...

    def put(self, origin: str, did: str) -> None: ...


#: Reconnect backoff bounds (seconds); each wait is jittered by ±25 %.
BACKOFF = (0.5, 30.0)
#: Refusals after which retrying soon cannot help (wait the longest backoff).
_STICKY = frozenset({"relay_identity_changed", "bad_relay_proof", "wrong_audience"})


@dataclass
class RelayState:
    """What ``mycelium status`` shows about one relay."""

    url: str
    did: str | None = None
    state: str = "connecting"
    last_sync: float | None = None
    last_error: str | None = None
    connected_since: float | None = None
    spaces: int = 0
    envelopes_in: int = 0
    envelopes_out: int = 0
    reconnects: int = 0

    def as_dict(self, backlog: int) -> dict[str, Any]:
        return {"url": self.url, "did": self.did, "state": self.state,
                "last_sync": _iso(self.last_sync), "last_error": self.last_error,
                "backlog": backlog, "spaces": self.spaces, "envelopes_in": self.envelopes_in,
                "envelopes_out": self.envelopes_out, "reconnects": self.reconnects}


class RelayLink:
    """Keeps one relay in sync with the node's store (see module docstring)."""

    def __init__(self, relay: RelayUrl, soil: Any, identity: Identity, cache: VerifyCache,
                 trust: PinStore) -> None:
        self.relay = relay
        self.soil = soil
        self.identity = identity
        self.cache = cache
        self.trust = trust
        self.status = RelayState(url=relay.url, did=relay.pinned)
        self.driver: MessageSessionDriver | None = None
        #: Called with the space id when the session stored new envelopes (a relay uses
        #: it to wake its other sessions; a node's Soil announces changes by itself).
        self.on_ingested: Callable[[bytes], None] | None = None
        self._wake = trio.Event()
        self._stale = False  # a space appeared while connecting (see renew)
        self._last_view: dict[bytes, VersionVector] = {}

    def expected_did(self) -> str | None:
        """The pinned DID (URL fragment) beats the one recorded on first use."""
        return self.relay.pinned or self.trust.get(self.relay.origin)

    async def run(self) -> None:
        delay = BACKOFF[0]
        while True:
            synced = self.status.last_sync
            try:
                await self.connect_once()
                if self.status.last_sync != synced:  # it did sync: reconnect soon
                    delay = BACKOFF[0]
            except HandshakeError as exc:
                self._failed(exc.reason, exc)
                if exc.reason in _STICKY:
                    log.error("RELAY %s: %s", self.relay.url, exc)
                    delay = BACKOFF[1]
                retry = getattr(exc, "retry_after", None)
                if retry:
                    delay = max(delay, min(float(retry), 3600.0))
            except (OSError, TransportClosed, trio.TooSlowError, MyceliumError) as exc:
                self._failed(getattr(exc, "reason", type(exc).__name__), exc)
            except Exception as exc:  # trio_websocket's handshake/connection errors
                self._failed(type(exc).__name__, exc)
            self.status.reconnects += 1
            if self.status.last_error == "renew":  # we closed it to offer a new space
                self.status.last_error = None
                continue
            if self.status.state != "refused":
                self.status.state = "backoff"
            # The relay was reachable but the session shared nothing: a new space of ours
            # (notify) is worth a reconnect at once; failures wait out the backoff.
            idle = self.status.last_error == "nothing_shared"
            self._wake = trio.Event()
            with trio.move_on_after(delay * random.uniform(0.75, 1.25)):
                if idle:
                    await self._wake.wait()
                else:
                    await trio.sleep_forever()
            delay = min(delay * 2, BACKOFF[1])

    def _failed(self, reason: str, exc: BaseException) -> None:
        self.status.last_error = reason
        self.status.state = "refused" if reason in _STICKY else "backoff"
        log.info("relay %s: %s (%s)", self.relay.url, reason, exc)

    async def connect_once(self) -> None:
        """One connection: handshake, registration, session until it ends."""
        self.status.state = "connecting"
        self._stale = False
        expected = self.expected_did()
        async with connect(self.relay, self.identity, expected_did=expected) as conn:
            if expected is None:
                log.warning("relay %s: trusting %s on first use (recorded in %s)",
                            self.relay.url, conn.relay_did, self.trust.path)
                self.trust.put(self.relay.origin, conn.relay_did)
            self.status.did = conn.relay_did
            await self._register_missing(conn)
            await conn.start_sync()
            relay_pub = _pub(conn.relay_did)
            session = SyncSession(self.soil, local_id=self.identity.public_key,
                                  remote_id=relay_pub, initiator=True,
                                  now=trio.current_time(), cache=self.cache)
            driver = MessageSessionDriver(session, conn, on_event=self._on_event,
                                          label=self.relay.url)
            self.driver = driver
            if self._stale:
                session.close("renew")
            self.status.state = "connected"
            self.status.connected_since = time.time()
            try:
                await driver.run()
            finally:
                self._last_view = {s: v for s in session.shared_spaces
                                   if (v := session.peer_vector(s)) is not None}
                self.driver = None
                self.status.envelopes_in += session.stats.envelopes_in
                self.status.envelopes_out += session.stats.envelopes_out
                if driver.close_reason:
                    self.status.last_error = driver.close_reason
                self.status.state = "backoff"

    async def _register_missing(self, conn: Any) -> None:
        """Make the relay host every space we are a member of (first use, or a relay
        that lost its data)."""
        listed = [s for s in await conn.list_spaces() if isinstance(s, dict)]
        hosted = {s.get("space") for s in listed}
        restore_listed_spaces(self.soil, listed, self.relay.url)
        mine = list(self.soil.member_spaces())
        for space in mine:
            if space in hosted:
                continue
            ok, reason = await conn.register(self.soil.genesis(space),
                                             registration_envelopes(self.soil, space))
            if ok:
                log.info("relay %s now hosts space %s", self.relay.url, space.hex()[:12])
            else:
                log.warning("relay %s refused space %s: %s", self.relay.url,
                            space.hex()[:12], reason)
        self.status.spaces = len(mine)

    def _on_event(self, event: object) -> None:
        if isinstance(event, CaughtUp):
            self.status.last_sync = time.time()
        elif isinstance(event, SessionError):
            self.status.last_error = event.reason
            if event.reason in ("over_quota", "rate_limited"):
                log.warning("relay %s: %s", self.relay.url, event.reason)
        elif isinstance(event, EnvelopesIngested) and event.result.accepted:
            self.status.last_sync = time.time()
            if self.on_ingested is not None:
                self.on_ingested(event.space)

    def notify(self, space: bytes) -> None:
        """``space`` gained envelopes locally: push them (or reconnect now if the last
        session ended because it shared nothing)."""
        driver = self.driver
        if driver is not None:
            if space in driver.session.shared_spaces:
                driver.session.notify_changed(space)
                driver.poke()
        else:
            self._wake.set()

    def renew(self) -> None:
        """We joined a space: sessions negotiate spaces at the handshake, so reconnect."""
        driver = self.driver
        if driver is not None:
            driver.session.close("renew")
            driver.poke()
        else:  # connecting: the registration may have missed it; renew once it runs
            self._stale = True

    def backlog(self) -> int:
        """Envelopes we hold that the relay is not known to hold."""
        driver = self.driver
        views = ({s: v for s in driver.session.shared_spaces
                  if (v := driver.session.peer_vector(s)) is not None}
                 if driver is not None else self._last_view)
        total = 0
        for space in self.soil.member_spaces():
            view = views.get(space, {})
            for author, seq in self.soil.version_vector(space).items():
                total += max(0, seq - view.get(author, 0))
        return total


#: Most spaces one relay listing may add to the store (a relay is not trusted).
MAX_RESTORED_PER_LISTING = 256


def restore_listed_spaces(soil: Any, listed: list[dict[str, Any]], label: str) -> list[bytes]:
    """Add every listed space this node does not hold yet, by its genesis (issue 12 §2):
    after a recovery the node holds none of its community spaces, and the relay's list
    names the spaces whose control log lists this identity. The genesis is verified
    (its hash is the space id); the control log, and with it the membership, then comes
    by sync, which the relay only answers for members. A genesis the listing lies about
    costs one inert row (never offered to anyone whose log does not list us)."""
    from mycelium.errors import MyceliumError

    held = set(soil.space_ids())
    added: list[bytes] = []
    for entry in listed[:MAX_RESTORED_PER_LISTING]:
        space, genesis = entry.get("space"), entry.get("genesis")
        if space in held or not isinstance(genesis, bytes):
            continue
        try:
            added_id = soil.add_space(genesis)
        except MyceliumError as exc:
            log.warning("relay %s listed an invalid genesis: %s", label, exc)
            continue
        if added_id != space:
            log.warning("relay %s listed a genesis under another id", label)
        held.add(added_id)
        added.append(added_id)
        log.info("relay %s: restoring space %s", label, added_id.hex()[:12])
    return added


def registration_envelopes(soil: Any, space: bytes) -> list[bytes]:
    """The space's control log with the chain prefixes it needs: each control author's
    envelopes from seq 1 to its last control op (data envelopes in between stay
    ciphertext), within the size of one register message."""
    last: dict[bytes, int] = {}
    for raw in soil.control_envelopes(space):
        env = envelope_mod.decode(raw)
        last[env.author] = max(last.get(env.author, 0), env.seq)
    if not last:
        return []
    skip = {a: s for a, s in soil.version_vector(space).items() if a not in last}
    budget = MAX_CONTROL_MESSAGE - 64 * 1024
    out: list[bytes] = []
    for raw in soil.envelopes_since(space, skip, limit=50_000, max_bytes=budget):
        env = envelope_mod.decode(raw)
        if env.seq <= last.get(env.author, 0):
            out.append(raw)
    return out


def _pub(did: str) -> bytes:
    from mycelium.identity.didkey import public_key_from_did

    return public_key_from_did(did)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
