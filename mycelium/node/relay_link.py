"""How the node talks to relays (``mycelium run --relay URL``, repeatable).

One :class:`RelayLink` per relay keeps a session open: connect (WebSocket, mutual auth,
the relay's DID pinned by ``#did:key:…`` in the URL or trusted on first use and recorded
in ``HOME/relays.json``), make sure the relay hosts every space this node is a member of
(community spaces and the personal space, whose envelopes are ciphertext only this
identity opens), then run the unchanged :class:`~mycelium.sync.session.SyncSession` as
initiator until the connection ends, and reconnect with jittered exponential backoff.
Nothing is lost across a relay restart: the session starts with version vectors, so
whatever either side missed is exchanged again.

:class:`RelayLinks` is the one entry point the daemon starts in its nursery; it also
watches the store so local writes and envelopes from LAN peers reach the relays at once,
and it reports each relay's state, last sync and backlog for ``mycelium status``.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from mycelium.errors import MyceliumError
from mycelium.identity.identity import Identity
from mycelium.log import envelope as envelope_mod
from mycelium.relay.client import RelayUrl, connect
from mycelium.relay.driver import MessageSessionDriver, TransportClosed
from mycelium.relay.handshake import MAX_CONTROL_MESSAGE, HandshakeError
from mycelium.sync import CaughtUp, EnvelopesIngested, SessionError, SyncSession, VerifyCache
from mycelium.sync.ports import VersionVector

log = logging.getLogger("mycelium.node.relay")

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


class TrustStore:
    """``HOME/relays.json``: relay origin -> the DID first seen (trust on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        pins = data.get("pins") if isinstance(data, dict) else None
        return {k: v for k, v in pins.items() if isinstance(v, str)} if isinstance(
            pins, dict) else {}

    def get(self, origin: str) -> str | None:
        return self._read().get(origin)

    def put(self, origin: str, did: str) -> None:
        from mycelium.identity.keystore import write_atomic

        pins = self._read()
        pins[origin] = did
        write_atomic(self.path, json.dumps({"pins": pins}, indent=1, sort_keys=True).encode())


class RelayLink:
    """Keeps one relay in sync with the node's store (see module docstring)."""

    def __init__(self, relay: RelayUrl, soil: Any, identity: Identity, cache: VerifyCache,
                 trust: TrustStore) -> None:
        self.relay = relay
        self.soil = soil
        self.identity = identity
        self.cache = cache
        self.trust = trust
        self.status = RelayState(url=relay.url, did=relay.pinned)
        self.driver: MessageSessionDriver | None = None
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
            if self.status.state != "refused":
                self.status.state = "backoff"
            await trio.sleep(delay * random.uniform(0.75, 1.25))
            delay = min(delay * 2, BACKOFF[1])

    def _failed(self, reason: str, exc: BaseException) -> None:
        self.status.last_error = reason
        self.status.state = "refused" if reason in _STICKY else "backoff"
        log.info("relay %s: %s (%s)", self.relay.url, reason, exc)

    async def connect_once(self) -> None:
        """One connection: handshake, registration, session until it ends."""
        self.status.state = "connecting"
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
        hosted = {s.get("space") for s in await conn.list_spaces() if isinstance(s, dict)}
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

    def notify(self, space: bytes) -> None:
        driver = self.driver
        if driver is not None:
            driver.session.notify_changed(space)
            driver.poke()

    def renew(self) -> None:
        """We joined a space: sessions negotiate spaces at the handshake, so reconnect."""
        driver = self.driver
        if driver is not None:
            driver.session.close("renew")
            driver.poke()

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


class RelayLinks:
    """Every relay of the node: the daemon's single entry point (``run``) and status."""

    def __init__(self, urls: list[str], soil: Any, identity: Identity, cache: VerifyCache,
                 home: Path) -> None:
        trust = TrustStore(home / "relays.json")
        self.links = [RelayLink(RelayUrl.parse(u), soil, identity, cache, trust) for u in urls]
        self.soil = soil
        self._members = set(soil.member_spaces())

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for link in self.links:
                nursery.start_soon(link.run)
            nursery.start_soon(self._watch_store)

    async def _watch_store(self) -> None:
        changes = self.soil.subscribe(buffer=1024)
        async with changes:
            async for change in changes:
                if change.coll is None:
                    members = set(self.soil.member_spaces())
                    if members - self._members:
                        for link in self.links:
                            link.renew()
                    self._members = members
                for link in self.links:
                    link.notify(change.space)

    def status(self) -> list[dict[str, Any]]:
        return [link.status.as_dict(link.backlog()) for link in self.links]


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
