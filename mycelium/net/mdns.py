"""LAN discovery with mDNS, per the libp2p mDNS spec, driving zeroconf directly.

Why not py-libp2p's mDNS module (pitfall 6, ``docs/py-libp2p-notes.md``): it binds every
interface, calls back in zeroconf's threads, writes the peer store behind our back,
shares one handler list between all hosts of a process and never connects. Here:

- we announce ``<random 32-63 chars>._p2p._udp.local.`` with one TXT string
  ``dnsaddr=<multiaddr>/p2p/<id>`` per address (the libp2p spec), on the interfaces
  we are given;
- zeroconf's browser thread only *posts* service names into trio
  (``TrioToken.run_sync_soon``) through a bounded memory channel; resolving a name (a
  blocking zeroconf call) runs in ``trio.to_thread`` with a timeout;
- :meth:`MdnsDiscovery.peers` yields each peer once, and again only when its address
  set changes or after it said goodbye and came back; our own announcement is ignored.
  Connecting is the daemon's job.

Many Wi-Fi networks block multicast: :meth:`MdnsDiscovery.status` says so plainly when
nobody has been seen for a while.
"""

from __future__ import annotations

import contextlib
import logging
import random
import string
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import trio

from mycelium.net.errors import NetError

log = logging.getLogger("mycelium.net.mdns")

SERVICE_TYPE = "_p2p._udp.local."
TXT_KEY = b"dnsaddr="
#: Resolving one announced name (SRV+TXT) may take this long before we give up on it.
RESOLVE_TIMEOUT_MS = 3000
#: How long after start ``status()`` waits before blaming the network.
QUIET_AFTER_S = 10.0
MAX_PENDING_NAMES = 1024
MAX_ADDRS_PER_PEER = 16


@dataclass(frozen=True, slots=True)
class DiscoveredPeer:
    """A peer announced on the LAN: its id and the multiaddrs it listed (``/p2p/`` kept)."""

    peer_id: str
    addrs: tuple[str, ...]


def instance_name(rng: random.Random | None = None) -> str:
    """A random service instance label of 32 to 63 characters (libp2p mDNS spec)."""
    rng = rng if rng is not None else random.SystemRandom()
    alphabet = string.ascii_letters + string.digits
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(32, 63)))


def encode_txt(addrs: list[str]) -> bytes:
    """The raw TXT rdata: one length-prefixed ``dnsaddr=<maddr>`` string per address."""
    out = bytearray()
    for addr in addrs:
        item = TXT_KEY + addr.encode()
        if len(item) > 255:
            raise NetError(f"multiaddr too long for a TXT string: {addr}", reason="bad_address")
        out.append(len(item))
        out += item
    return bytes(out)


def decode_txt(raw: bytes) -> list[str]:
    """Every ``dnsaddr=`` value in raw TXT rdata (malformed strings are skipped)."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        n = raw[i]
        item = raw[i + 1 : i + 1 + n]
        i += 1 + n
        if item.startswith(TXT_KEY):
            try:
                out.append(item[len(TXT_KEY):].decode())
            except UnicodeDecodeError:
                continue
    return out


def peer_from_addrs(addrs: list[str]) -> DiscoveredPeer | None:
    """Group announced addresses by their ``/p2p/`` id; None if they name none or several."""
    ids = {a.rsplit("/p2p/", 1)[1] for a in addrs if "/p2p/" in a}
    if len(ids) != 1:
        return None
    (peer_id,) = ids
    good = [a for a in addrs if a.endswith("/p2p/" + peer_id)][:MAX_ADDRS_PER_PEER]
    # Announced order, loopback last: callers dial the first address first.
    good.sort(key=_is_loopback)
    return DiscoveredPeer(peer_id, tuple(dict.fromkeys(good)))


class MdnsDiscovery:
    """Announce ``addrs`` for ``peer_id`` and browse for others; an async context manager.

    ``interfaces``: IPv4 addresses of the interfaces to use (None: those of ``addrs``,
    or every interface if ``addrs`` name none). Loopback addresses are announced only
    when there is nothing else.
    """

    def __init__(
        self,
        peer_id: str,
        addrs: list[str],
        *,
        interfaces: list[str] | None = None,
        quiet_after: float = QUIET_AFTER_S,
    ) -> None:
        self.peer_id = peer_id
        full = [a if "/p2p/" in a else f"{a}/p2p/{peer_id}" for a in addrs]
        # Loopback addresses mean nothing to another machine (a peer dialling them would
        # reach itself): announce them only when they are all we have.
        routable = [a for a in full if not _is_loopback(a)]
        self.addrs = routable or full
        if interfaces is None:
            # The interfaces that carry our addresses, so a node listening on one
            # interface (or on loopback only) does not multicast on the others.
            ips = list(dict.fromkeys(_ip4(a) for a in self.addrs if _ip4(a)))
            interfaces = [ip for ip in ips if ip != "0.0.0.0"] or None
        self.interfaces = interfaces
        self.quiet_after = quiet_after
        self.name = f"{instance_name()}.{SERVICE_TYPE}"
        self.seen_count = 0
        self.dropped = 0
        self._known: dict[str, tuple[str, ...]] = {}
        self._zc: Any = None
        self._browser: Any = None
        self._info: Any = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._started = 0.0
        # (service name, removed?) posted from zeroconf's thread
        self._send, self._receive = trio.open_memory_channel[tuple[str, bool]](
            MAX_PENDING_NAMES
        )
        self._names: dict[str, str] = {}  # service name -> peer id, to forget on goodbye
        self._limiter = trio.CapacityLimiter(4)

    async def __aenter__(self) -> MdnsDiscovery:
        self._token = trio.lowlevel.current_trio_token()
        self._started = trio.current_time()
        try:
            await trio.to_thread.run_sync(self._start)
        except BaseException:
            await self._stop_in_thread()
            raise
        log.info("mDNS announcing %s with %d address(es)", self.name, len(self.addrs))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._send.close()
        await self._stop_in_thread()

    async def _stop_in_thread(self) -> None:
        # Shielded: also runs while the daemon is being cancelled; zeroconf's close is
        # bounded (it sends goodbyes and joins its loop thread).
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._stop)

    def _start(self) -> None:
        """Blocking zeroconf setup, run in a worker thread."""
        from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, ServiceInfo, Zeroconf

        ips = sorted({a.split("/")[2] for a in self.addrs if a.startswith("/ip4/")})
        port = _first_port(self.addrs)
        self._zc = Zeroconf(
            interfaces=self.interfaces if self.interfaces is not None else InterfaceChoice.All,
            ip_version=IPVersion.V4Only,
        )
        self._info = ServiceInfo(
            SERVICE_TYPE,
            self.name,
            port=port,
            properties=encode_txt(self.addrs),
            server=self.name.split(".")[0] + ".local.",
            parsed_addresses=ips,
        )
        self._browser = ServiceBrowser(self._zc, SERVICE_TYPE, handlers=[self._on_change])
        self._zc.register_service(self._info, allow_name_change=True)

    def _stop(self) -> None:
        zc, self._zc = self._zc, None
        if zc is None:
            return
        try:
            if self._browser is not None:
                self._browser.cancel()
            if self._info is not None:
                zc.unregister_service(self._info)
        except Exception as exc:
            log.debug("mDNS unregister failed: %r", exc)
        finally:
            zc.close()

    # -- zeroconf thread -> trio ----------------------------------------------------
    def _on_change(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        """Runs in zeroconf's thread: hand the name to trio, nothing else."""
        from zeroconf import ServiceStateChange

        if name == self.name:
            return
        token = self._token
        if token is None:
            return
        removed = state_change is ServiceStateChange.Removed
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(self._post, name, removed)

    def _post(self, name: str, removed: bool) -> None:
        """Runs in trio's thread."""
        try:
            self._send.send_nowait((name, removed))
        except trio.WouldBlock:
            self.dropped += 1
        except trio.ClosedResourceError:
            pass

    # -- trio side ------------------------------------------------------------------
    async def peers(self) -> AsyncIterator[DiscoveredPeer]:
        """Peers as they are found (forever, until the context exits)."""
        async for name, removed in self._receive:
            if removed:
                # Goodbye (a restart, or the peer left): yield it again when it returns,
                # even with the same addresses.
                gone = self._names.pop(name, None)
                if gone is not None:
                    self._known.pop(gone, None)
                continue
            peer = await self._resolve(name)
            if peer is None or peer.peer_id == self.peer_id:
                continue
            self._names[name] = peer.peer_id
            if self._known.get(peer.peer_id) == peer.addrs:
                continue
            if peer.peer_id not in self._known:
                self.seen_count += 1
            self._known[peer.peer_id] = peer.addrs
            yield peer

    async def _resolve(self, name: str) -> DiscoveredPeer | None:
        zc = self._zc
        if zc is None:
            return None

        def lookup() -> bytes | None:
            info = zc.get_service_info(SERVICE_TYPE, name, timeout=RESOLVE_TIMEOUT_MS)
            return None if info is None else bytes(info.text or b"")

        try:
            raw = await trio.to_thread.run_sync(lookup, limiter=self._limiter)
        except Exception as exc:
            log.debug("mDNS resolve of %s failed: %r", name, exc)
            return None
        if raw is None:
            return None
        return peer_from_addrs(decode_txt(raw))

    def status(self) -> str:
        """One line for ``mycelium status``."""
        elapsed = trio.current_time() - self._started if self._started else 0.0
        if self.seen_count:
            return f"mDNS: {self.seen_count} peer(s) seen"
        if elapsed < self.quiet_after:
            return "mDNS: searching"
        return (
            f"mDNS sees nobody after {elapsed:.0f} s: multicast may be blocked on this "
            "network; use --peer or a relay"
        )


def _ip4(addr: str) -> str:
    parts = addr.split("/")
    return parts[2] if len(parts) > 2 and parts[1] == "ip4" else ""


def _is_loopback(addr: str) -> bool:
    return _ip4(addr).startswith("127.") or addr.startswith("/ip6/::1/")


def _first_port(addrs: list[str]) -> int:
    for addr in addrs:
        parts = addr.split("/")
        if "tcp" in parts:
            return int(parts[parts.index("tcp") + 1])
    return 0
