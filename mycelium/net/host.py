"""The py-libp2p host, configured for Mycelium (DESIGN.md §5, ``docs/py-libp2p-notes.md``).

:func:`open_host` builds a host whose key is the identity key (so the PeerID is the
user's DID), with exactly TCP + Noise + Yamux: py-libp2p offers plaintext and SECIO
beside Noise unless ``sec_opt`` is given (pitfall 2), and dials wait a fixed ~250 ms
unless ``max_connections_per_peer=1`` (pitfall 1). Identify and ping are py-libp2p's
defaults and stay on.

:class:`MyceliumHost` is what the daemon sees: string peer ids (base58, never
multibase: pitfall 5), typed errors with reasons, timeouts on every dial and stream
open, and limits on inbound ``/mycelium/sync/1`` streams (total and per peer; excess
streams are reset, logged and counted in :meth:`MyceliumHost.metrics`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from mycelium.identity.identity import Identity
from mycelium.net.errors import ConnectError, StreamOpenError
from mycelium.net.framing import (
    DEFAULT_BURST_BYTES,
    DEFAULT_BURST_CPU,
    DEFAULT_BURST_FRAMES,
    DEFAULT_RATE_BYTES_S,
    DEFAULT_RATE_CPU_S,
    DEFAULT_RATE_FRAMES_S,
    DEFAULT_READ_TIMEOUT,
    FramedStream,
    TokenBucket,
)
from mycelium.sync.messages import PROTOCOL_ID

log = logging.getLogger("mycelium.net")

#: Called for each accepted inbound sync stream: (remote peer id, stream). The stream is
#: closed (or reset) by the host once the handler returns.
SyncHandler = Callable[[str, FramedStream], Awaitable[None]]


class PeerGate(Protocol):
    """Per-peer policy the host consults (:class:`~mycelium.net.peers.PeerManager`)."""

    def is_banned(self, peer_id: str) -> bool: ...

    def report(self, peer_id: str, reason: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class HostLimits:
    """Limits and timeouts of one host (defaults fit a home node with tens of peers)."""

    connect_timeout: float = 10.0
    open_stream_timeout: float = 10.0
    #: An inbound connection must finish Noise + Yamux within this (py-libp2p's default
    #: is 10 s): stalled handshakes hold inbound connection slots until it expires.
    inbound_handshake_timeout: float = 5.0
    #: Inbound connections (handshaking or established) from one IP address: a flood of
    #: stalled handshakes from one machine cannot take every inbound slot. Loopback is
    #: exempt unless ``per_ip_loopback`` (local tools and tests share 127.0.0.1).
    max_connections_per_ip: int = 32
    per_ip_loopback: bool = False
    #: Of ``max_connections``, inbound connections only members may hold (at most a
    #: quarter): a non-member's inbound connection beyond the rest is closed right after
    #: the handshake (which is when its peer id is known). Needs a member check.
    reserved_member_connections: int = 32
    #: Concurrent inbound sync streams, all peers together and per peer. A peer needs one
    #: session; a few more cover reconnect races.
    max_sync_streams: int = 64
    max_sync_streams_per_peer: int = 4
    #: Of ``max_sync_streams``, slots only peers known as members of a shared space
    #: (from the control logs, :meth:`MyceliumHost.set_member_check`) may take. When
    #: slots run short, a new stream evicts a useless one (handshake, nothing shared)
    #: or, for a member, a non-member's; idle ones first (``protocols/sync.md`` §6.2).
    reserved_member_streams: int = 16
    #: A stream younger than this is not evicted for another (it is still handshaking).
    evict_grace_s: float = 2.0
    max_connections: int = 256
    max_frame: int = 1 << 20
    read_timeout: float = DEFAULT_READ_TIMEOUT
    rate_bytes_s: float = DEFAULT_RATE_BYTES_S
    burst_bytes: float = DEFAULT_BURST_BYTES
    rate_frames_s: float = DEFAULT_RATE_FRAMES_S
    burst_frames: float = DEFAULT_BURST_FRAMES
    rate_cpu_s: float = DEFAULT_RATE_CPU_S
    burst_cpu: float = DEFAULT_BURST_CPU
    #: What we send to one peer, all its streams together (paced, not cut off).
    rate_out_bytes_s: float = DEFAULT_RATE_BYTES_S
    burst_out_bytes: float = DEFAULT_BURST_BYTES


_Buckets = tuple[TokenBucket, TokenBucket, TokenBucket, TokenBucket]


@dataclass(slots=True)
class _Became:
    """What an accepted TCP connection became: set by the ``connected`` notification
    (py-libp2p 0.8.1's layering: SwarmConn -> Yamux -> SecureSession -> Noise
    read-writer -> RawConnection -> our TCP stream)."""

    event: trio.Event = field(default_factory=trio.Event)
    swarm_conn: Any = None
    evict: bool = False  # a non-member beyond its share: close it (reserve for members)


class _ConnectionShare:
    """A py-libp2p notifee: hands each new connection to :meth:`MyceliumHost._on_connected`
    (the other notifications are not needed)."""

    def __init__(self, host: MyceliumHost) -> None:
        self.host = host

    async def connected(self, network: Any, conn: Any) -> None:
        await self.host._on_connected(network, conn)

    async def disconnected(self, network: Any, conn: Any) -> None:
        return None

    async def opened_stream(self, network: Any, stream: Any) -> None:
        return None

    async def closed_stream(self, network: Any, stream: Any) -> None:
        return None

    async def listen(self, network: Any, multiaddr: Any) -> None:
        return None

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        return None


@dataclass(slots=True)
class _Slot:
    """One inbound sync stream being served (what eviction chooses among)."""

    id: int
    peer_id: str
    member: bool
    framed: FramedStream
    scope: trio.CancelScope
    opened: float


class MyceliumHost:
    """A running host; obtain one from :func:`open_host`."""

    def __init__(self, libp2p_host: Any, limits: HostLimits) -> None:
        self.libp2p = libp2p_host
        self.limits = limits
        self.peer_id: str = libp2p_host.get_id().to_base58()
        self._sync_handler: SyncHandler | None = None
        self._gate: PeerGate | None = None
        self._inbound: dict[str, int] = {}
        self._slots: dict[int, _Slot] = {}
        self._slot_ids = 0
        self._member_check: Callable[[str], bool] | None = None
        self._buckets: dict[str, _Buckets] = {}
        self._metrics: dict[str, int] = {
            "connects_ok": 0,
            "connects_failed": 0,
            "sync_streams_in": 0,
            "sync_streams_out": 0,
            "sync_streams_rejected": 0,
            "sync_streams_rejected_per_peer": 0,
            "sync_streams_no_handler": 0,
            "sync_streams_banned": 0,
            "sync_handler_errors": 0,
            "sync_streams_evicted": 0,
            "rate_limited": 0,
        }
        from libp2p.custom_types import TProtocol

        libp2p_host.set_stream_handler(TProtocol(PROTOCOL_ID), self._on_sync_stream)
        self._per_ip: dict[str, int] = {}
        self._awaiting: dict[int, _Became] = {}
        self._metrics["connections_rejected_per_ip"] = 0
        network: Any = libp2p_host.get_network()
        # The swarm looks this method up for every accepted TCP connection, before any
        # handshake: the one place to count connections per remote IP.
        network._handle_inbound_connection = self._per_ip_gate(
            network._handle_inbound_connection)
        self._metrics["connections_closed_for_members"] = 0
        network.register_notifee(_ConnectionShare(self))

    async def _on_connected(self, network: Any, conn: Any) -> None:
        """A connection is up: tell its inbound handler (:meth:`_until_closed`), and keep
        ``reserved_member_connections`` free for members: an inbound connection from a
        non-member beyond the others' share is closed once its peer id is known."""
        from libp2p.rcmgr import Direction

        try:
            raw = conn.muxed_conn.secured_conn.conn.conn.stream
        except AttributeError:
            raw = None
        became = self._awaiting.get(id(raw)) if raw is not None else None
        if became is not None:
            became.swarm_conn = conn
            became.event.set()
        if self._member_check is None or getattr(conn, "direction", None) != Direction.INBOUND:
            return
        peer_id = conn.muxed_conn.peer_id.to_base58()
        if self._is_member(peer_id):
            return
        lim = self.limits
        share = lim.max_connections - min(lim.reserved_member_connections,
                                          lim.max_connections // 4)
        others = 0
        for conns in list(getattr(network, "connections", {}).values()):
            for other in conns if isinstance(conns, list) else [conns]:
                if getattr(other, "direction", None) != Direction.INBOUND:
                    continue
                if not self._is_member(other.muxed_conn.peer_id.to_base58()):
                    others += 1
        if others > share and became is not None:
            # Closed by its handler (:meth:`_until_closed`), not inside this notification,
            # which py-libp2p sends while it is still registering the connection.
            became.evict = True
            log.info("inbound connection from %s closed: non-members hold %d of %d "
                     "connections (the rest is kept for members)", peer_id[-8:], others - 1,
                     lim.max_connections)

    def _per_ip_gate(
        self, handle: Callable[[Any, Any], Awaitable[None]]
    ) -> Callable[[Any, Any], Awaitable[None]]:
        """Wrap the swarm's inbound handler: ``max_connections_per_ip``, and an end to
        the handler when its connection closes (pitfall 16: py-libp2p keeps the handler,
        and with it a slot of its inbound limiter, until the whole swarm stops)."""
        from mycelium.net.pex import LOOPBACK, ip_scope

        network: Any = self.libp2p.get_network()

        async def gated(conn: Any, maddr: Any) -> None:
            try:
                ip = conn.get_remote_address()[0]
            except Exception:  # no address to count by: the swarm's own limits apply
                ip = None
            if ip is None or (ip_scope(ip) == LOOPBACK and not self.limits.per_ip_loopback):
                await self._until_closed(network, handle, conn, maddr)
                return
            count = self._per_ip.get(ip, 0)
            if count >= self.limits.max_connections_per_ip:
                self._metrics["connections_rejected_per_ip"] += 1
                log.info("inbound connection from %s refused: %d open from that address",
                         ip, count)
                with contextlib.suppress(Exception):
                    await conn.close()
                return
            self._per_ip[ip] = count + 1
            try:
                await self._until_closed(network, handle, conn, maddr)
            finally:
                left = self._per_ip[ip] - 1
                if left:
                    self._per_ip[ip] = left
                else:
                    del self._per_ip[ip]

        return gated

    async def _until_closed(self, network: Any, handle: Callable[[Any, Any], Awaitable[None]],
                            conn: Any, maddr: Any) -> None:
        """Run the swarm's handler for ``conn`` until the connection it became closes (or
        its handshake failed, which ends the handler by itself)."""
        became = _Became()
        self._awaiting[id(conn)] = became
        try:
            async with trio.open_nursery() as nursery:

                async def run() -> None:
                    await handle(conn, maddr)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(run)
                # The notifee (``_ConnectionShare.connected``) names the swarm connection;
                # past py-libp2p's handshake timeout there is none to wait for.
                with trio.move_on_after(self.limits.inbound_handshake_timeout + 1.0):
                    await became.event.wait()
                if became.swarm_conn is not None:
                    if became.evict:
                        self._metrics["connections_closed_for_members"] += 1
                        with contextlib.suppress(Exception):
                            await became.swarm_conn.close()
                    await became.swarm_conn.event_closed.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._awaiting.pop(id(conn), None)

    # -- addresses and peers --------------------------------------------------------
    def addrs(self) -> list[str]:
        """Dialable listen multiaddrs ending in ``/p2p/<id>``.

        A wildcard listen address (``0.0.0.0``, ``::``) is expanded to one address per
        local interface address, non-loopback first, because a wildcard is not dialable.
        IPv6 link-local addresses are left out (they need a zone a multiaddr cannot carry).
        """
        out: list[str] = []
        for maddr in self.libp2p.get_transport_addrs():
            text = str(maddr)
            if text.startswith("/ip4/0.0.0.0/"):
                rest = text[len("/ip4/0.0.0.0"):]
                out.extend(f"/ip4/{ip}{rest}" for ip in local_ipv4_addresses())
            elif text.startswith("/ip6/::/"):
                rest = text[len("/ip6/::"):]
                out.extend(f"/ip6/{ip}{rest}" for ip in local_ipv6_addresses())
            else:
                out.append(text)
        suffix = f"/p2p/{self.peer_id}"
        return [a if a.endswith(suffix) else a + suffix for a in dict.fromkeys(out)]

    def connected_peers(self) -> list[str]:
        return [p.to_base58() for p in self.libp2p.get_connected_peers()]

    def connection_scopes(self) -> set[str]:
        """Scopes (:func:`mycelium.net.pex.ip_scope`) of the remote addresses of our
        current connections: the networks a peer-exchange address may be in."""
        from mycelium.net.pex import ip_scope

        scopes: set[str] = set()
        network: Any = self.libp2p.get_network()
        for conns in list(getattr(network, "connections", {}).values()):
            for conn in conns if isinstance(conns, list) else [conns]:
                try:
                    remote = conn.muxed_conn.get_remote_address()
                except Exception:  # a closing connection, another muxer
                    continue
                scope = ip_scope(remote[0]) if remote else None
                if scope is not None:
                    scopes.add(scope)
        return scopes

    def metrics(self) -> dict[str, int]:
        """Counters (and the ``sync_streams_active`` gauge) for status output."""
        return {**self._metrics, "sync_streams_active": sum(self._inbound.values()),
                "peers_connected": len(self.libp2p.get_connected_peers())}

    async def connect(self, maddr: str) -> str:
        """Dial ``maddr`` (must end in ``/p2p/<id>``); return the peer id.

        Raises :class:`ConnectError` with reason ``bad_address``, ``no_peer_id``,
        ``self_dial``, ``timeout`` or ``dial_failed`` (refused, unreachable, or the
        remote key does not match the ``/p2p/`` id: Noise checks it).
        """
        from libp2p.peer.peerinfo import info_from_p2p_addr
        from multiaddr import Multiaddr

        try:
            info = info_from_p2p_addr(Multiaddr(maddr))
        except Exception as exc:
            self._metrics["connects_failed"] += 1
            reason = "no_peer_id" if "/p2p/" not in maddr else "bad_address"
            raise ConnectError(f"cannot dial {maddr!r}: {exc}", reason=reason) from exc
        peer_id = info.peer_id.to_base58()
        if peer_id == self.peer_id:
            self._metrics["connects_failed"] += 1
            raise ConnectError("refusing to dial ourselves", reason="self_dial")
        if self.is_banned(peer_id):
            self._metrics["connects_failed"] += 1
            raise ConnectError(f"peer {peer_id[-8:]} is banned", reason="banned")
        try:
            with trio.fail_after(self.limits.connect_timeout):
                await self.libp2p.connect(info)
        except trio.TooSlowError as exc:
            self._metrics["connects_failed"] += 1
            raise ConnectError(
                f"no connection to {maddr} within {self.limits.connect_timeout} s",
                reason="timeout",
            ) from exc
        except trio.Cancelled:
            raise
        except Exception as exc:
            self._metrics["connects_failed"] += 1
            raise ConnectError(f"dial {maddr} failed: {exc}", reason="dial_failed") from exc
        self._metrics["connects_ok"] += 1
        return peer_id

    async def disconnect(self, peer_id: str) -> None:
        """Close every connection to ``peer_id`` (no-op if none)."""
        from libp2p.peer.id import ID

        with trio.move_on_after(self.limits.connect_timeout):
            with contextlib.suppress(Exception):
                await self.libp2p.disconnect(ID.from_base58(peer_id))

    # -- peer policy ----------------------------------------------------------------
    def set_peer_gate(self, gate: PeerGate | None) -> None:
        """Consult ``gate`` before serving or dialling a peer, and report misbehaviour
        the host detects itself to it (``rate_limited``, ``stream_flood``)."""
        self._gate = gate

    def is_banned(self, peer_id: str) -> bool:
        return self._gate is not None and self._gate.is_banned(peer_id)

    def _report(self, peer_id: str, reason: str) -> None:
        if self._gate is not None:
            self._gate.report(peer_id, reason)

    async def ping(self, peer_id: str, *, timeout: float = 5.0) -> float:
        """Round-trip time to a connected peer in seconds (libp2p ping protocol).

        Raises :class:`ConnectError` (``timeout``, ``ping_failed``).
        """
        from libp2p.host.ping import PingService
        from libp2p.peer.id import ID

        try:
            with trio.fail_after(timeout):
                (rtt_us,) = await PingService(self.libp2p).ping(ID.from_base58(peer_id))
        except trio.TooSlowError as exc:
            raise ConnectError(f"no ping answer within {timeout} s", reason="timeout") from exc
        except trio.Cancelled:
            raise
        except Exception as exc:
            raise ConnectError(f"ping {peer_id[-8:]} failed: {exc}", reason="ping_failed") from exc
        return rtt_us / 1e6

    # -- sync streams ---------------------------------------------------------------
    def set_sync_handler(self, handler: SyncHandler) -> None:
        """Serve inbound ``/mycelium/sync/1`` streams with ``handler``."""
        self._sync_handler = handler

    async def open_sync_stream(self, peer_id: str) -> FramedStream:
        """Open a sync stream to a connected (or peer-store known) peer.

        Raises :class:`StreamOpenError` (``bad_peer_id``, ``timeout``, ``open_failed``).
        """
        from libp2p.custom_types import TProtocol
        from libp2p.peer.id import ID

        try:
            pid = ID.from_base58(peer_id)
        except Exception as exc:
            raise StreamOpenError(f"bad peer id {peer_id!r}", reason="bad_peer_id") from exc
        try:
            with trio.fail_after(self.limits.open_stream_timeout):
                stream = await self.libp2p.new_stream(pid, [TProtocol(PROTOCOL_ID)])
        except trio.TooSlowError as exc:
            raise StreamOpenError(
                f"no sync stream to {peer_id[-8:]} within {self.limits.open_stream_timeout} s",
                reason="timeout",
            ) from exc
        except trio.Cancelled:
            raise
        except Exception as exc:
            raise StreamOpenError(f"sync stream to {peer_id[-8:]}: {exc}") from exc
        self._metrics["sync_streams_out"] += 1
        return self._framed(stream, peer_id)

    def _framed(self, stream: Any, peer_id: str) -> FramedStream:
        buckets = self._bucket(peer_id)
        return FramedStream(
            stream,
            max_frame=self.limits.max_frame,
            read_timeout=self.limits.read_timeout,
            bucket=buckets[0],
            frame_bucket=buckets[1],
            cpu_bucket=buckets[2],
            out_bucket=buckets[3],
            remote_peer_id=peer_id,
            on_rate_limited=self._count_rate_limited,
        )

    def _bucket(self, peer_id: str) -> _Buckets:
        """The peer's (bytes in, frames, CPU, bytes out) buckets, shared by all its
        streams."""
        buckets = self._buckets.get(peer_id)
        if buckets is None:
            if len(self._buckets) > 4 * self.limits.max_connections:
                # Forget peers whose buckets are full again: they cost nothing to recreate.
                self._buckets = {
                    p: b for p, b in self._buckets.items()
                    if any(x.tokens < x.burst for x in b)
                }
            lim = self.limits
            buckets = self._buckets[peer_id] = (
                TokenBucket(lim.rate_bytes_s, lim.burst_bytes),
                TokenBucket(lim.rate_frames_s, lim.burst_frames),
                TokenBucket(lim.rate_cpu_s, lim.burst_cpu),
                TokenBucket(lim.rate_out_bytes_s, lim.burst_out_bytes),
            )
        return buckets

    def set_member_check(self, check: Callable[[str], bool] | None) -> None:
        """``check(peer_id)``: is this peer a member of a space we hold (from the control
        logs)? Members may use the reserved sync slots and evict non-members' streams."""
        self._member_check = check

    def _is_member(self, peer_id: str) -> bool:
        if self._member_check is None:
            return False
        try:
            return self._member_check(peer_id)
        except Exception as exc:  # a policy bug must not take the host down
            log.warning("member check for %s failed: %r", peer_id[-8:], exc)
            return False

    def _room(self, member: bool) -> tuple[bool, _Slot | None]:
        """Is there room for a new inbound stream (and which stream must make way)?
        Useless streams go first, then idle ones; a non-member never displaces a
        member's useful stream, and non-members share what the reserve leaves."""
        lim = self.limits
        now = trio.current_time()
        slots = list(self._slots.values())
        others = [s for s in slots if not s.member]
        reserve = 0 if self._member_check is None else min(
            lim.reserved_member_streams, lim.max_sync_streams // 4)
        full = len(slots) >= lim.max_sync_streams
        over_share = not member and len(others) >= lim.max_sync_streams - reserve
        if not (full or over_share):
            return True, None
        if member:
            candidates = [s for s in slots if not s.member or not s.framed.useful]
        else:
            candidates = [s for s in others if not s.framed.useful]
        candidates = [s for s in candidates if now - s.opened >= lim.evict_grace_s]
        if not candidates:
            return False, None
        return True, min(candidates,
                         key=lambda s: (s.framed.useful, s.member, s.framed.last_progress))

    def _evict(self, victim: _Slot, peer_id: str) -> None:
        log.info("sync stream from %s evicted for one from %s (%s)", victim.peer_id[-8:],
                 peer_id[-8:], "useful" if victim.framed.useful else "useless")
        self._metrics["sync_streams_evicted"] += 1
        del self._slots[victim.id]
        victim.scope.cancel()

    def _count_rate_limited(self, peer_id: str) -> None:
        self._metrics["rate_limited"] += 1
        self._report(peer_id, "rate_limited")

    async def _on_sync_stream(self, stream: Any) -> None:
        """py-libp2p calls this in its own per-stream task after protocol negotiation."""
        peer_id = stream.muxed_conn.peer_id.to_base58()
        framed = self._framed(stream, peer_id)
        handler = self._sync_handler
        active = sum(self._inbound.values())
        mine = self._inbound.get(peer_id, 0)
        if self.is_banned(peer_id):
            self._metrics["sync_streams_banned"] += 1
            log.info("sync stream from %s reset: peer is banned", peer_id[-8:])
            await framed.reset()
            await self.disconnect(peer_id)
            return
        if handler is None:
            self._metrics["sync_streams_no_handler"] += 1
            log.info("sync stream from %s reset: no handler yet", peer_id[-8:])
            await framed.reset()
            return
        member = self._is_member(peer_id)
        ok, victim = self._room(member)
        if not ok:
            self._metrics["sync_streams_rejected"] += 1
            log.warning(
                "sync stream from %s reset: %d streams open (limit %d, some reserved for "
                "members)", peer_id[-8:], active, self.limits.max_sync_streams,
            )
            await framed.reset()
            return
        if mine >= self.limits.max_sync_streams_per_peer:
            self._metrics["sync_streams_rejected_per_peer"] += 1
            log.warning(
                "sync stream from %s reset: peer has %d streams open (limit %d)",
                peer_id[-8:], mine, self.limits.max_sync_streams_per_peer,
            )
            self._report(peer_id, "stream_flood")
            await framed.reset()
            return
        if victim is not None:
            self._evict(victim, peer_id)
        self._inbound[peer_id] = mine + 1
        self._metrics["sync_streams_in"] += 1
        self._slot_ids += 1
        slot = _Slot(self._slot_ids, peer_id, member, framed, trio.CancelScope(),
                     trio.current_time())
        self._slots[slot.id] = slot
        try:
            with slot.scope:
                await handler(peer_id, framed)
        except Exception as exc:  # one peer's failure must not reach py-libp2p's tasks
            self._metrics["sync_handler_errors"] += 1
            log.warning(
                "sync handler for %s failed: %s", peer_id[-8:],
                getattr(exc, "reason", None) or repr(exc),
            )
            await framed.reset()
        finally:
            self._slots.pop(slot.id, None)
            left = self._inbound[peer_id] - 1
            if left:
                self._inbound[peer_id] = left
            else:
                del self._inbound[peer_id]
            if slot.scope.cancelled_caught:
                await framed.reset()
            await framed.close()


def build_libp2p_host(identity: Identity, limits: HostLimits) -> Any:
    """A py-libp2p host with our key and exactly TCP + Noise + Yamux (pitfalls 1, 2)."""
    from libp2p import new_host
    from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
    from libp2p.custom_types import TProtocol
    from libp2p.network.config import ConnectionConfig
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
    from libp2p.security.noise.transport import Transport as NoiseTransport
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
    from libp2p.stream_muxer.yamux.yamux import Yamux

    key_pair = identity.libp2p_key_pair()
    # The Noise static key is a fresh X25519 key per run; the identity key signs it
    # in the handshake payload, which is what binds the connection to the PeerID.
    security = {
        TProtocol(NOISE_PROTOCOL_ID): NoiseTransport(
            key_pair, noise_privkey=new_x25519_key_pair().private_key
        )
    }
    muxers = {TProtocol(YAMUX_PROTOCOL_ID): Yamux}
    config = ConnectionConfig(
        max_connections_per_peer=1,
        max_connections=limits.max_connections,
        high_watermark=limits.max_connections,
        # No auto-dialling of peer-store entries: whom to talk to is the daemon's policy.
        min_connections=0,
        low_watermark=0,
        dial_timeout=limits.connect_timeout,
        inbound_upgrade_timeout=limits.inbound_handshake_timeout,
    )
    host = new_host(
        key_pair=key_pair,
        sec_opt=security,
        muxer_opt=muxers,
        connection_config=config,
        enable_mDNS=False,  # we drive zeroconf ourselves (mycelium.net.mdns, pitfall 6)
    )
    # Pitfall 10: the swarm's AutoConnector dials peer-store entries (every address that
    # identify or a past connect() taught it) until it holds (low+high watermark)/2
    # connections, and again after every disconnect. Whom to dial is the daemon's policy.
    network: Any = host.get_network()
    network.auto_connector.maybe_connect = _no_auto_dial
    return host


async def _no_auto_dial() -> None:
    return None


@contextlib.asynccontextmanager
async def open_host(
    identity: Identity, listen: list[str], *, limits: HostLimits | None = None
) -> AsyncIterator[MyceliumHost]:
    """Run a host listening on ``listen`` (e.g. ``["/ip4/0.0.0.0/tcp/0"]``) until exit.

    Raises :class:`~mycelium.net.errors.NetError` (``bad_address``) for an unparsable
    listen address; bind errors surface from py-libp2p as they are.
    """
    from multiaddr import Multiaddr

    from mycelium.net.errors import NetError

    try:
        maddrs = [Multiaddr(a) for a in listen]
    except Exception as exc:
        raise NetError(f"bad listen address in {listen!r}: {exc}", reason="bad_address") from exc
    limits = limits if limits is not None else HostLimits()
    libp2p_host = build_libp2p_host(identity, limits)
    host = MyceliumHost(libp2p_host, limits)
    if host.peer_id != identity.peer_id:  # pitfalls 5 and 9 would show up here
        raise AssertionError("libp2p PeerID differs from the identity's peer id")
    try:
        async with libp2p_host.run(listen_addrs=maddrs):
            log.info("libp2p host %s listening on %s", host.peer_id, ", ".join(host.addrs()))
            yield host
    except BaseExceptionGroup as group:
        # py-libp2p nests the body in three nurseries; a single error (including the
        # caller's own) would come out wrapped three deep. Hand it back as it was raised.
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def local_ipv4_addresses() -> list[str]:
    """IPv4 addresses of the up interfaces, non-loopback first (via ``ifaddr``, which
    zeroconf already depends on)."""
    import ifaddr

    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                found.append(ip.ip)
    unique = list(dict.fromkeys(found))
    return sorted(unique, key=lambda a: ipaddress.IPv4Address(a).is_loopback)


def local_ipv6_addresses() -> list[str]:
    """IPv6 addresses of the up interfaces except link-local, non-loopback first."""
    import ifaddr

    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, tuple):
                addr = ipaddress.IPv6Address(ip.ip[0].split("%")[0])
                if not addr.is_link_local:
                    found.append(str(addr))
    unique = list(dict.fromkeys(found))
    return sorted(unique, key=lambda a: ipaddress.IPv6Address(a).is_loopback)
