"""``mycelium run``: the node daemon that ties the store, the sync core and libp2p together.

Everything here is a thin driver (DESIGN.md §5): the sans-IO :class:`SyncSession` decides what
to say, :class:`GossipTracker` decides what gossip means, the store validates. The daemon owns
the tasks — one nursery, cancelled as a whole on SIGINT/SIGTERM — and the policy of *whom* to
talk to: static peers (kept dialled with backoff, so partitions heal by themselves), peers
seen by mDNS, and peers that gossip shows to be ahead of us.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from mycelium.identity.identity import Identity
from mycelium.node.ops import LocalOps
from mycelium.node.peer_exchange import (  # noqa: F401  (pex_topic, PEX_MAX_ADDRS: API)
    PEX_MAX_ADDRS,
    PeerExchange,
    parse_announcement,
    pex_topic,
)
from mycelium.paths import NodePaths
from mycelium.spaces.access import member_policy
from mycelium.sync import (
    CaughtUp,
    Closed,
    EnvelopesIngested,
    GossipIngested,
    GossipOutbox,
    GossipTracker,
    NeedAntiEntropy,
    SessionError,
    SyncSession,
    VerifyCache,
    topic_for_space,
)
from mycelium.sync.session import ForkDetected

log = logging.getLogger("mycelium.node")

#: Backoff bounds for re-dialling a static peer that is unreachable (seconds).
DIAL_BACKOFF = (1.0, 30.0)
#: When both sides see each other on mDNS, the smaller peer id dials at once and the other
#: waits this long before dialling itself (avoids two sessions per pair, and still works when
#: only one side's multicast gets through).
MDNS_YIELD_S = 3.0
MDNS_QUIET_WARNING_S = 10.0
#: Peer keeper tasks (one per peer kept dialled); peers beyond are left to anti-entropy.
MAX_KEEPERS = 64
HOUSEKEEPING_S = 30.0


@dataclass
class NodeConfig:
    """What ``mycelium run`` was asked to do (DESIGN.md §10)."""

    listen: list[str] = field(default_factory=lambda: ["/ip4/0.0.0.0/tcp/0"])
    peers: list[str] = field(default_factory=list)
    mdns: bool = True
    #: Relay URLs (``https://host#did:key:…``); one kept session each (node/relay_link.py).
    relays: list[str] = field(default_factory=list)
    api: str = "127.0.0.1:0"
    name: str | None = None
    anti_entropy_interval: float = 30.0
    gossip: bool = True
    #: HOST:PORT of the web app (mycelium.web.server); None: no web app.
    web: str | None = None


@dataclass
class PeerInfo:
    """What status shows about one peer."""

    peer_id: str
    addrs: list[str] = field(default_factory=list)
    source: str = "static"
    sessions: int = 0
    last_sync: float | None = None
    last_error: str | None = None
    envelopes_in: int = 0
    envelopes_out: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "peer_id": self.peer_id,
            "addr": self.addrs[0] if self.addrs else "",
            "source": self.source,
            "state": "connected" if self.sessions else "idle",
            "last_sync": _iso(self.last_sync),
            "last_error": self.last_error,
            "envelopes_in": self.envelopes_in,
            "envelopes_out": self.envelopes_out,
        }


class Node:
    """One running node. Construct, then ``await node.serve()`` inside trio."""

    def __init__(self, paths: NodePaths, identity: Identity, soil: Any, config: NodeConfig) -> None:
        self.paths = paths
        self.identity = identity
        self.soil = soil
        self.config = config
        self.cache = VerifyCache(max_entries=200_000)
        self.tracker = GossipTracker(soil, cache=self.cache)
        self.outbox = GossipOutbox()
        self.runners: dict[str, set[Any]] = {}
        self.peers: dict[str, PeerInfo] = {}
        self.listen_addrs: list[str] = []
        self.api_url: str | None = None
        self.mdns_status: str | None = None
        self.started_at = time.time()
        self._gossiped: dict[bytes, int] = {}
        self._outbox_wakeup = trio.Event()
        self._host: Any = None
        self.bans: Any = None
        self._gossip: Any = None
        self._nursery: trio.Nursery | None = None
        self._subscribed: set[bytes] = set()
        self.pex: PeerExchange | None = None
        self._kept: set[str] = set()
        self._member_spaces: set[bytes] = set(soil.member_spaces())
        self.relays: Any = None  # RelayLinks when --relay was given
        self.restore: Any = None  # PeerRestore: spaces back from peers after a recovery
        self.ops = LocalOps(soil, status_extra=self._status_extra)
        self.web: Any = None

    # -- lifecycle ------------------------------------------------------------------
    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled (SIGINT/SIGTERM cancel it from :func:`run_node`)."""
        from mycelium.net.host import open_host
        from mycelium.net.peers import PeerManager

        async with open_host(self.identity, self.config.listen) as host:
            self._host = host
            # Misbehaving peers collect strikes (protocol violations, floods) and get banned.
            self.bans = PeerManager(host)
            host.set_peer_gate(self.bans)
            host.set_member_check(self._is_member_peer)  # reserved sync slots (sync.md §6.2)
            host.set_sync_handler(self._inbound)
            from mycelium.node.restore import PeerRestore

            self.restore = PeerRestore(host.libp2p, self.soil, host.is_banned)
            self.listen_addrs = host.addrs()
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    await self._start_services(nursery)
                    log.info(
                        "node ready did=%s listen=%s api=%s",
                        self.identity.did,
                        ",".join(self.listen_addrs),
                        self.api_url,
                    )
                    task_status.started(self)
            finally:
                _unlink_quietly(self.paths.api)

    async def _start_services(self, nursery: trio.Nursery) -> None:
        for space in self.soil.space_ids():
            self._maintain(space)
        self.api_url = await nursery.start(self._serve_api)
        if self.config.web:
            from mycelium.web.server import serve_web

            self.web = await nursery.start(serve_web, self.ops, self.paths, self.config.web)
        nursery.start_soon(self.bans.run)
        nursery.start_soon(self._watch_store)
        for maddr in self.config.peers:
            nursery.start_soon(self._keep_dialing, maddr)
        if self.config.mdns:
            nursery.start_soon(self._mdns_loop)
        nursery.start_soon(self._anti_entropy_loop)
        nursery.start_soon(self._housekeeping_loop)
        if self.config.gossip:
            await self._start_gossip(nursery)
        if self.config.relays:
            from mycelium.node.relay_link import RelayLinks

            self.relays = RelayLinks(self.config.relays, self.soil, self.identity, self.cache,
                                     self.paths.home)
            nursery.start_soon(self.relays.run)

    # -- control API ----------------------------------------------------------------
    async def _serve_api(
        self, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        from hypercorn.config import Config
        from hypercorn.trio import serve

        from mycelium.node.api import make_api
        from mycelium.node.client import write_api_file

        token = secrets.token_hex(32)
        config = Config()
        config.bind = [self.config.api]
        config.accesslog = None
        config.errorlog = logging.getLogger("mycelium.api.http")
        config.graceful_timeout = 1.0
        app = make_api(self.ops, token)
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve, app, config)
            url = str(binds[0])
            if not url.startswith("http://127.") and not url.startswith("http://[::1]"):
                log.warning("control API bound to %s: it should be loopback only", url)
            write_api_file(self.paths.api, url, token)
            task_status.started(url)

    # -- sessions -------------------------------------------------------------------
    async def _inbound(self, peer_id: str, framed: Any) -> None:
        self._peer(peer_id, source="inbound")
        await self._run_session(peer_id, framed, initiator=False)

    async def _run_session(self, peer_id: str, framed: Any, *, initiator: bool) -> str | None:
        from mycelium.identity.didkey import public_key_from_peer_id
        from mycelium.net.sync_driver import SessionRunner

        info = self._peer(peer_id)
        session = SyncSession(
            self.soil,
            local_id=self.identity.public_key,
            remote_id=public_key_from_peer_id(peer_id),
            initiator=initiator,
            now=trio.current_time(),
            cache=self.cache,
            authorize=member_policy(self.soil),  # only current members sync a space
        )
        runner = SessionRunner(
            session, framed, on_event=lambda ev: self._on_session_event(info, ev)
        )
        self.runners.setdefault(peer_id, set()).add(runner)
        info.sessions += 1
        log.info("sync session open peer=%s initiator=%s", _short(peer_id), initiator)
        try:
            await runner.run()
            return runner.close_reason
        finally:
            info.sessions -= 1
            self.runners[peer_id].discard(runner)
            info.envelopes_in += session.stats.envelopes_in
            info.envelopes_out += session.stats.envelopes_out
            log.info(
                "sync session closed peer=%s in=%d out=%d",
                _short(peer_id),
                session.stats.envelopes_in,
                session.stats.envelopes_out,
            )

    def _on_session_event(self, info: PeerInfo, event: object) -> None:
        if self.bans.observe(info.peer_id, event):
            log.warning("peer %s banned after repeated protocol violations", _short(info.peer_id))
        if isinstance(event, EnvelopesIngested):
            if event.accepted or event.result.accepted:
                self._changed(event.space, exclude=info.peer_id)
            for _, reason in event.result.rejected:
                log.warning(
                    "rejected envelope from peer=%s reason=%s", _short(info.peer_id), reason
                )
        elif isinstance(event, CaughtUp):
            info.last_sync = time.time()
        elif isinstance(event, ForkDetected):  # an author signed two chains (sync.md §6a)
            self.soil.record_fork(event.space, event.author, event.seq)
        elif isinstance(event, SessionError):
            info.last_error = event.reason
            log.warning(
                "sync session error peer=%s reason=%s remote=%s: %s",
                _short(info.peer_id),
                event.reason,
                event.remote,
                event.message,
            )
        elif isinstance(event, Closed):
            log.debug("session closed peer=%s reason=%s", _short(info.peer_id), event.reason)

    def _changed(self, space: bytes, *, exclude: str | None = None) -> None:
        """The store gained envelopes of ``space``: let every other live session pump."""
        for peer_id, runners in self.runners.items():
            if peer_id == exclude:
                continue
            for runner in runners:
                runner.session.notify_changed(space)
                runner.poke()

    def has_session(self, peer_id: str) -> bool:
        return bool(self.runners.get(peer_id))

    async def sync_with(self, peer_id: str) -> str | None:
        """Open an outbound session to a connected or known peer and run it to the end;
        returns why it ended (``nothing_shared``: the peer shares no space with us)."""
        if self.restore is not None:
            await self.restore.ask_once(peer_id)  # once per peer: spaces we lost (restore.py)
        framed = await self._host.open_sync_stream(peer_id)
        return await self._run_session(peer_id, framed, initiator=True)

    def _is_member_peer(self, peer_id: str) -> bool:
        """Is ``peer_id`` a member of a space we belong to (from the control logs)?"""
        from mycelium.identity.didkey import public_key_from_peer_id

        try:
            key = public_key_from_peer_id(peer_id)
        except Exception:
            return False
        return any(self.soil.space_state(s).is_member(key) for s in self._member_spaces)

    # -- peers ----------------------------------------------------------------------
    def _peer(
        self, peer_id: str, *, source: str | None = None, addr: str | None = None
    ) -> PeerInfo:
        info = self.peers.get(peer_id)
        if info is None:
            self._make_room()
            info = self.peers[peer_id] = PeerInfo(peer_id, source=source or "static")
        if addr and addr not in info.addrs:
            info.addrs.append(addr)
        return info

    def _make_room(self) -> None:
        """Peers are free to invent: keep at most ``max_known`` (as PeerManager does),
        forgetting the oldest one that is not static, in session or kept dialled."""
        if len(self.peers) < self.bans.policy.max_known:
            return
        for peer_id, info in self.peers.items():
            if (info.source != "static" and not self.has_session(peer_id)
                    and peer_id not in self._kept):
                del self.peers[peer_id]
                return

    async def _keep_dialing(self, maddr: str) -> None:
        """A static peer: learn its PeerID from the first successful dial (with backoff),
        then keep it like any other peer (:meth:`_keep_peer`)."""
        delay = DIAL_BACKOFF[0]
        while True:
            try:
                peer_id = await self._host.connect(maddr)
                break
            except Exception as exc:
                log.info("peer %s unreachable (%s); retry in %.0f s", maddr, _reason(exc), delay)
                await trio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, DIAL_BACKOFF[1])
        self._peer(peer_id, source="static", addr=maddr)
        await self._keep_peer(peer_id, yield_first=False)

    async def _mdns_loop(self) -> None:
        from mycelium.net.mdns import MdnsDiscovery

        async with (
            MdnsDiscovery(self.identity.peer_id, self.listen_addrs) as mdns,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._mdns_watchdog, mdns)
            async for found in mdns.peers():
                state = self.bans.add(found.peer_id, found.addrs, source="mdns")
                if state is None:
                    continue
                info = self._peer(found.peer_id, source="mdns")
                info.addrs = list(state.addrs)  # capped by PeerManager
                log.info("mDNS found peer=%s addrs=%s", _short(found.peer_id), found.addrs)
                if len(self._kept) < MAX_KEEPERS:
                    nursery.start_soon(self._keep_peer, found.peer_id)

    async def _mdns_watchdog(self, mdns: Any) -> None:
        self.mdns_status = "searching"
        await trio.sleep(MDNS_QUIET_WARNING_S)
        self.mdns_status = mdns.status()
        if mdns.seen_count == 0:
            log.warning("%s", self.mdns_status)
        while True:
            await trio.sleep(5)
            self.mdns_status = mdns.status()

    async def _keep_peer(self, peer_id: str, *, yield_first: bool = True) -> None:
        """Keep a session with a peer (static, or found by mDNS or peer exchange): redial
        with backoff whenever it drops, so a healed partition reconnects in seconds. One
        keeper task per peer. Peers found by discovery usually know us too, so the smaller
        PeerID dials and the other waits ``MDNS_YIELD_S`` first (and dials if nothing came);
        a static peer may not know us, so we dial it at once."""
        if peer_id in self._kept:
            return
        self._kept.add(peer_id)
        delay = DIAL_BACKOFF[0]
        try:
            while True:
                if yield_first and peer_id < self.identity.peer_id:
                    await trio.sleep(MDNS_YIELD_S)
                if self.has_session(peer_id):
                    await trio.sleep(1.0)
                    continue
                try:
                    with trio.fail_after(15):
                        await self._connect_known(peer_id)
                    reason = await self.sync_with(peer_id)
                    if reason == "nothing_shared":  # nothing to do: do not redial at once
                        raise ConnectionError("the peer shares no space with us")
                    delay = DIAL_BACKOFF[0]
                except Exception as exc:
                    self._peer(peer_id).last_error = _reason(exc)
                    log.info("peer %s unreachable (%s); retry in %.0f s", _short(peer_id),
                             _reason(exc), delay)
                    await trio.sleep(delay * random.uniform(0.8, 1.2))
                    delay = min(delay * 2, DIAL_BACKOFF[1])
        finally:
            self._kept.discard(peer_id)

    async def _anti_entropy_loop(self) -> None:
        """Periodically sync with a random known peer that has no live session.

        Live sessions already exchange every change; this covers lost gossip, peers whose
        sessions dropped, and peers we only know from gossip.
        """
        rng = random.Random()
        while True:
            await trio.sleep(self.config.anti_entropy_interval * rng.uniform(0.75, 1.25))
            idle = [p for p in self.peers if not self.has_session(p)]
            if idle and self._nursery is not None:
                self._nursery.start_soon(self._try_sync, rng.choice(idle))

    async def _housekeeping_loop(self) -> None:
        """Now and then: apply deltas deferred for clock drift whose time has come, and
        let an admin rotate/grant keys even if no control op arrived recently."""
        while True:
            await trio.sleep(HOUSEKEEPING_S)
            for space in self.soil.space_ids():
                self.soil.retry_deferred(space)
                self._maintain(space)

    async def _try_sync(self, peer_id: str) -> None:
        try:
            with trio.fail_after(30):
                await self._connect_known(peer_id)
            await self.sync_with(peer_id)
        except Exception as exc:
            self._peer(peer_id).last_error = _reason(exc)
            log.debug("anti-entropy with %s failed: %s", _short(peer_id), _reason(exc))

    async def _connect_known(self, peer_id: str) -> None:
        if peer_id in self._host.connected_peers():
            return
        for addr in self._peer(peer_id).addrs:
            try:
                await self._host.connect(addr)
                return
            except Exception as exc:
                self._peer(peer_id).last_error = _reason(exc)
        raise ConnectionError("no reachable address")

    # -- local changes and gossip ---------------------------------------------------
    async def _watch_store(self) -> None:
        """Every commit: wake live sessions; queue our own new envelopes for gossip."""
        changes = self.soil.subscribe(buffer=1024)
        async with changes:
            async for change in changes:
                if change.coll is None:
                    self._maintain(change.space)
                    self._resync_if_new_space()
                self._changed(change.space)
                self._queue_own(change.space)
                self._ensure_subscribed(change.space)

    def _resync_if_new_space(self) -> None:
        """We became a member of a space (joined, or invited while running): sessions
        negotiate their shared spaces at the handshake, so replace every live session with
        a fresh one that offers the new space too."""
        spaces = set(self.soil.member_spaces())
        new = spaces - self._member_spaces
        self._member_spaces = spaces
        if not new or self._nursery is None:
            return
        log.info("new space(s) %s: renewing sync sessions", ",".join(s.hex()[:12] for s in new))
        for space in new:
            self._ensure_subscribed(space)
        for peer_id, runners in list(self.runners.items()):
            for runner in list(runners):
                runner.session.close("renew")
                runner.poke()
            if runners:
                self._nursery.start_soon(self._try_sync, peer_id)
        for peer_id in list(self.peers):  # sessions that shared nothing ended at once
            if not self.runners.get(peer_id):
                self._nursery.start_soon(self._try_sync, peer_id)

    def _maintain(self, space: bytes) -> None:
        """Membership changed: as an admin, rotate keys after a removal, grant new members."""
        from mycelium.errors import MyceliumError
        from mycelium.spaces.service import maintain

        try:
            if maintain(self.soil, space):
                log.info("space %s: rotated or granted keys after a membership change",
                         space.hex()[:12])
        except MyceliumError as exc:
            log.warning("space %s maintenance failed: %s", space.hex()[:12], exc)

    def _queue_own(self, space: bytes) -> None:
        me = self.identity.public_key
        head = self.soil.version_vector(space).get(me, 0)
        sent = self._gossiped.get(space)
        if sent is None:  # first sight of this space since start: only gossip what is new
            self._gossiped[space] = head
            return
        if head <= sent:
            return
        remote = dict(self.soil.version_vector(space))
        remote[me] = sent
        fresh = self.soil.envelopes_since(space, remote, limit=256, max_bytes=1 << 20)
        for raw in fresh:
            self.outbox.queue(space, raw)
        self.tracker.note_local(fresh)
        self._gossiped[space] = head
        self._outbox_wakeup.set()

    async def _start_gossip(self, nursery: trio.Nursery) -> None:
        from mycelium.net.gossip import GossipService

        async def run_gossip(
            *, task_status: Any = trio.TASK_STATUS_IGNORED
        ) -> None:
            async with GossipService(self._host) as gossip:
                self._gossip = gossip
                self.pex = PeerExchange(own_peer_id=self.identity.peer_id, gossip=gossip,
                                        host=self._host, peers=self.bans,
                                        is_member=self._is_member_of, learned=self._pex_learned)
                for space in self.soil.member_spaces():
                    self._gossiped[space] = self.soil.version_vector(space).get(
                        self.identity.public_key, 0
                    )
                    self._ensure_subscribed(space)
                task_status.started()
                async with trio.open_nursery() as inner:
                    inner.start_soon(self.pex.announce_loop,
                                     lambda: list(self._subscribed), lambda: self.listen_addrs)
                    await self._publish_loop()

        await nursery.start(run_gossip)

    def _ensure_subscribed(self, space: bytes) -> None:
        if (self._gossip is None or self.pex is None or space in self._subscribed
                or self._nursery is None):
            return
        if space not in set(self.soil.member_spaces()):
            return
        self._subscribed.add(space)
        self._nursery.start_soon(self._receive_gossip, space)
        self._nursery.start_soon(self.pex.receive, space)

    async def _receive_gossip(self, space: bytes) -> None:
        channel = await self._gossip.subscribe(topic_for_space(space))
        async with channel:
            async for from_peer, data in channel:
                if from_peer == self.identity.peer_id:
                    continue
                for action in self.tracker.on_message(space, data, from_peer, trio.current_time()):
                    self._on_gossip_action(action)

    def _on_gossip_action(self, action: object) -> None:
        if isinstance(action, GossipIngested):
            if action.accepted or action.result.accepted:
                self._changed(action.space)
        elif isinstance(action, NeedAntiEntropy):
            peer_id = str(action.peer)
            self._peer(peer_id, source="gossip")
            if self.has_session(peer_id):
                for runner in self.runners[peer_id]:
                    runner.session.notify_changed(action.space)
                    runner.poke()
            elif self._nursery is not None:
                self._nursery.start_soon(self._try_sync, peer_id)

    async def _publish_loop(self) -> None:
        while True:
            now = trio.current_time()
            for topic, payload in self.outbox.due(now):
                try:
                    await self._gossip.publish(topic, payload)
                except Exception as exc:
                    log.info("gossip publish failed: %s", _reason(exc))
            deadline = self.outbox.next_deadline()
            self._outbox_wakeup = trio.Event()
            with trio.move_on_at(deadline if deadline is not None else now + 3600):
                await self._outbox_wakeup.wait()

    # -- peer exchange --------------------------------------------------------------
    def _pex_learned(self, peer_id: str, addrs: list[str]) -> None:
        """Peer exchange taught us ``peer_id`` (addresses capped by PeerManager): keep it
        dialled if it is new, within ``MAX_KEEPERS`` keeper tasks."""
        fresh = peer_id not in self.peers
        info = self._peer(peer_id, source="pex")
        info.addrs = addrs
        if (fresh and addrs and not self.has_session(peer_id) and self._nursery is not None
                and len(self._kept) < MAX_KEEPERS):
            log.info("peer exchange: learned peer=%s", _short(peer_id))
            self._nursery.start_soon(self._keep_peer, peer_id)

    def _is_member_of(self, space: bytes, peer_id: str) -> bool:
        from mycelium.identity.didkey import public_key_from_peer_id

        try:
            return self.soil.space_state(space).is_member(public_key_from_peer_id(peer_id))
        except Exception:
            return False

    # -- status ---------------------------------------------------------------------
    def _status_extra(self) -> dict[str, Any]:
        last = [p.last_sync for p in self.peers.values() if p.last_sync]
        return {
            "running": True,
            "listen": self.listen_addrs,
            "api": self.api_url,
            "peers": [p.as_dict() for p in sorted(self.peers.values(), key=lambda p: p.peer_id)],
            "mdns": self.mdns_status if self.config.mdns else "off",
            "last_sync": _iso(max(last)) if last else None,
            "uptime_s": round(time.time() - self.started_at, 1),
            "metrics": {**self.soil.metrics(), **_prefixed("net.", self._host.metrics())},
            "bans": self.bans.summary(),
            "relays": self.relays.status() if self.relays is not None else [],
        }


# -- entry point ------------------------------------------------------------------------


def unlock_or_create(
    paths: NodePaths, name: str | None, get_passphrase: Callable[..., str]
) -> Identity:
    """Embedded defaults: the first ``run`` on a fresh home creates the identity."""
    from mycelium.identity.keystore import create_keystore, load_keystore

    paths.ensure()
    if paths.keystore.exists():
        return load_keystore(paths.keystore, get_passphrase())
    log.info("no identity in %s: creating one", paths.home)
    identity = create_keystore(paths.keystore, get_passphrase(confirm=True), name=name)
    return identity


def run_node(paths: NodePaths, config: NodeConfig, get_passphrase: Callable[..., str]) -> None:
    """Blocking entry point of ``mycelium run``."""
    from mycelium.spaces.service import ensure_personal_space
    from mycelium.store.soil import Soil

    configure_logging()
    identity = unlock_or_create(paths, config.name, get_passphrase)
    with Soil.open(paths.soil, identity, device_chains=True) as soil:
        ensure_personal_space(soil)
        node = Node(paths, identity, soil, config)
        trio.run(_main, node)


async def _main(node: Node) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_signal, nursery.cancel_scope)
        started = await nursery.start(node.serve)
        _print_banner(started)
    log.info("node stopped")


async def _cancel_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            scope.cancel()
            return


def configure_logging() -> None:
    level = os.environ.get("MYCELIUM_LOG", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    for noisy in ("libp2p", "multiaddr", "zeroconf", "hypercorn", "async_service"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("libp2p.transport.tcp.tcp").addFilter(_handled_dial_errors)


def _handled_dial_errors(record: logging.LogRecord) -> bool:
    """Drop py-libp2p's ERROR line for a failed TCP dial: it re-raises the failure, and
    the peer keeper logs it once, with its retry delay ("peer … unreachable …")."""
    return not (record.levelno == logging.ERROR
                and str(record.msg).startswith("Failed to open TCP stream"))


def _print_banner(node: Node) -> None:
    from rich.console import Console

    console = Console(stderr=True, emoji=False, soft_wrap=True)
    console.print("[bold green]mycelium node running[/]", node.identity.did, markup=True)
    for addr in node.listen_addrs:
        console.print(f"  listening {addr}")
    console.print(f"  control API {node.api_url}  (mycelium status --home {node.paths.home})")
    if node.web is not None:
        console.print(f"  web app {node.web.url}  one-time sign-in link (or `mycelium open`):")
        console.print(f"    {node.web.login_link()}")
    console.print("  mDNS " + ("on" if node.config.mdns else "off") + "; Ctrl-C to stop")


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _short(peer_id: str) -> str:
    return peer_id[-8:]


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return f"{reason}: {exc}" if reason else f"{type(exc).__name__}: {exc}"


def _prefixed(prefix: str, data: dict[str, int]) -> dict[str, int]:
    return {prefix + k: v for k, v in data.items()}


def _unlink_quietly(path: os.PathLike[str]) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
