"""A userspace TCP fault proxy for simnet's process backend (trio, loopback only).

Every directed link ``src -> dst`` gets its own listening port on 127.0.0.1. Node ``src``
is told to dial ``dst`` at that port; the proxy forwards to ``dst``'s real port and injects
the faults of :class:`simnet.faults.LinkParams` (latency + jitter, loss as RTO stalls,
resets, bandwidth) on each direction separately: bytes from the dialer to the target use
link ``(src, dst)``, the replies use link ``(dst, src)``. Partitions reset live connections
across the cut and refuse new ones (accept, then reset), which is what a peer sees when a
Wi-Fi link drops and the NAT/AP forgets it.

Why a proxy and not ``tc netem``: this kernel has no netem (see NOTES.md), and a proxy
works without root. Its limits: it models TCP behaviour at chunk granularity, not
packets; and it only sees connections the node makes to the addresses it was given (a
node dialing a peer's real port directly, e.g. learned from identify, bypasses it).

Usage::

    async with FaultProxy(seed=7) as proxy:
        proxy.set_target("b", "127.0.0.1", 4001)
        port = await proxy.open_route("a", "b")      # tell node a: b is at 127.0.0.1:port
        proxy.set_link("a", "b", LinkParams(latency_s=0.05))
        proxy.partition([{"a"}, {"b"}]); ...; proxy.heal()
        proxy.bytes_per_link()                         # {("a", "b"): 1234, ("b", "a"): 99}
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import trio

from simnet.faults import (
    PERFECT,
    LinkParams,
    SimnetError,
    TokenBucket,
    cuts_between,
    cuts_for_partition,
)

#: Bytes read per chunk; the unit at which latency, loss and resets are applied.
CHUNK = 16 * 1024
#: SO_MARK of the transparent proxy's outgoing sockets (its redirect rule skips them).
PROXY_MARK = 0x231
#: getsockopt(SOL_IP, SO_ORIGINAL_DST): where a redirected connection was going.
SO_ORIGINAL_DST = 80
#: Transparent mode only forwards inside simnet's namespace LAN (or loopback).
TRANSPARENT_NETS = ("10.231.0.", "127.")
#: Chunks queued per direction before the proxy stops reading (back-pressure to sender).
MAX_QUEUED = 256

Link = tuple[str, str]


@dataclass
class LinkStats:
    """Counters for one directed link (bytes delivered from ``src`` to ``dst``)."""

    bytes: int = 0
    chunks: int = 0
    connections: int = 0
    refused: int = 0
    resets: int = 0
    stalls: int = 0


@dataclass(eq=False)
class _Conn:
    """One proxied TCP connection; ``pair`` is the unordered {dialer, target}."""

    src: str
    dst: str
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    reset: bool = False

    @property
    def pair(self) -> frozenset[str]:
        return frozenset((self.src, self.dst))

    def abort(self) -> None:
        """Tear the connection down with RST on both sides."""
        self.reset = True
        self.scope.cancel()


class FaultProxy:
    """Per-link TCP fault injection between named nodes; see the module docstring.

    Must be used as ``async with``: the listeners and connections live in its nursery and
    are all closed when the block exits (also on error or cancellation).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        host: str = "127.0.0.1",
        connect_timeout: float = 5.0,
    ) -> None:
        if not host.startswith("127."):
            raise SimnetError(f"the fault proxy only listens on loopback, not {host!r}")
        self._rng = random.Random(seed)
        self._host = host
        self._connect_timeout = connect_timeout
        self._targets: dict[str, tuple[str, int]] = {}
        self._links: dict[Link, LinkParams] = {}
        self._default = PERFECT
        self._buckets: dict[Link, tuple[LinkParams, TokenBucket]] = {}
        self._stats: dict[Link, LinkStats] = {}
        self._routes: dict[Link, int] = {}
        self._names: dict[str, str] = {}
        self._cuts: set[frozenset[str]] = set()
        self._conns: set[_Conn] = set()
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: Any = None

    async def __aenter__(self) -> FaultProxy:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        try:
            return bool(await self._nursery_cm.__aexit__(exc_type, exc, tb))
        finally:
            self._nursery = None
            self._routes.clear()
            self._conns.clear()

    # -- topology -------------------------------------------------------------------------

    def set_target(self, node: str, host: str | None, port: int | None = None) -> None:
        """Where ``node`` really listens; ``None`` means down (new connections are reset)."""
        if host is None or port is None:
            self._targets.pop(node, None)
            return
        if not host.startswith("127."):
            raise SimnetError(f"proxy targets must be on loopback, not {host!r}")
        self._targets[node] = (host, port)

    async def open_route(self, src: str, dst: str) -> int:
        """Listen for ``src``'s connections to ``dst``; returns the 127.0.0.1 port to dial.

        Idempotent: a second call for the same link returns the same port.
        """
        if self._nursery is None:
            raise SimnetError("FaultProxy is not running: use it as `async with FaultProxy()`")
        if src == dst:
            raise SimnetError(f"a route from {src!r} to itself makes no sense")
        if (src, dst) in self._routes:
            return self._routes[(src, dst)]
        listeners = await trio.open_tcp_listeners(0, host=self._host)
        listener = listeners[0]
        for extra in listeners[1:]:
            await extra.aclose()
        port = int(listener.socket.getsockname()[1])
        self._routes[(src, dst)] = port
        self._nursery.start_soon(self._serve, src, dst, listener)
        return port

    async def open_transparent(
        self,
        src: str,
        port: int = 0,
        *,
        names: Mapping[str, str] | None = None,
        mark: int = PROXY_MARK,
    ) -> int:
        """Listen on 127.0.0.1:``port`` for connections redirected by the kernel (nft
        ``redirect``) from node ``src``; each goes to its original destination, with
        the proxy's own socket marked ``mark`` so the redirect rule skips it. ``names``
        maps destination IPs to node names (for link parameters and counters).

        For use inside a network namespace simnet created (the netns backend); needs
        CAP_NET_ADMIN for SO_MARK.
        """
        if self._nursery is None:
            raise SimnetError("FaultProxy is not running: use it as `async with FaultProxy()`")
        self._names.update(names or {})
        listeners = await trio.open_tcp_listeners(port, host=self._host)
        listener = listeners[0]
        for extra in listeners[1:]:
            await extra.aclose()
        self._nursery.start_soon(self._serve, src, None, listener, mark)
        return int(listener.socket.getsockname()[1])

    def route_port(self, src: str, dst: str) -> int:
        """The port of an already opened route."""
        try:
            return self._routes[(src, dst)]
        except KeyError:
            raise SimnetError(f"no route {src} -> {dst}: call open_route first") from None

    # -- faults ---------------------------------------------------------------------------

    def set_link(self, src: str, dst: str, params: LinkParams) -> None:
        """Faults for bytes flowing ``src -> dst``; applies to live connections at once."""
        self._links[(src, dst)] = params

    def set_default(self, params: LinkParams) -> None:
        """Faults for every link without its own :meth:`set_link`."""
        self._default = params

    def link(self, src: str, dst: str) -> LinkParams:
        return self._links.get((src, dst), self._default)

    def partition(self, groups: Sequence[Collection[str]]) -> None:
        """Split nodes into ``groups`` (replacing earlier cuts); see ``cuts_for_partition``."""
        self._cuts = cuts_for_partition(groups)
        self._enforce_cuts()

    def cut(self, group_a: Iterable[str], group_b: Iterable[str]) -> None:
        """Additionally cut every node of ``group_a`` from every node of ``group_b``."""
        self._cuts |= cuts_between(group_a, group_b)
        self._enforce_cuts()

    def heal(self) -> None:
        """Remove every cut (link parameters stay as they are)."""
        self._cuts.clear()

    def is_cut(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self._cuts

    def reset_node(self, node: str) -> int:
        """Reset every live connection to or from ``node`` (e.g. it crashed); returns count."""
        victims = [c for c in self._conns if node in (c.src, c.dst)]
        for conn in victims:
            conn.abort()
        return len(victims)

    def _enforce_cuts(self) -> None:
        for conn in list(self._conns):
            if conn.pair in self._cuts:
                conn.abort()

    # -- accounting -----------------------------------------------------------------------

    def stats(self, src: str, dst: str) -> LinkStats:
        return self._stats.setdefault((src, dst), LinkStats())

    def all_stats(self) -> dict[Link, LinkStats]:
        return dict(self._stats)

    def bytes_per_link(self) -> dict[Link, int]:
        """Bytes delivered per directed link (only links that carried or tried traffic)."""
        return {link: s.bytes for link, s in self._stats.items()}

    @property
    def live_connections(self) -> int:
        return len(self._conns)

    # -- internals ------------------------------------------------------------------------

    def _bucket(self, src: str, dst: str) -> TokenBucket | None:
        params = self.link(src, dst)
        if params.bandwidth_bps is None:
            self._buckets.pop((src, dst), None)
            return None
        cached = self._buckets.get((src, dst))
        if cached is None or cached[0] != params:
            cached = (params, TokenBucket(params.bandwidth_bps, params.burst_bytes))
            self._buckets[(src, dst)] = cached
        return cached[1]

    async def _serve(
        self, src: str, dst: str | None, listener: trio.SocketListener, mark: int | None = None
    ) -> None:
        """Accept loop; ``dst`` None means transparent (target from SO_ORIGINAL_DST)."""
        async with listener, trio.open_nursery() as nursery:
            while True:
                try:
                    client = await listener.accept()
                except OSError:
                    # EMFILE and friends: back off instead of spinning.
                    await trio.sleep(0.05)
                    continue
                nursery.start_soon(self._handle, src, dst, client, mark)

    async def _handle(
        self, src: str, dst: str | None, client: trio.SocketStream, mark: int | None = None
    ) -> None:
        target: tuple[str, int] | None
        if dst is None:
            try:
                target = original_destination(client.socket)
            except (OSError, SimnetError):
                await _close(client, reset=True)
                return
            dst = self._names.get(target[0], target[0])
        else:
            target = self._targets.get(dst)
        stats = self.stats(src, dst)
        stats.connections += 1
        if target is None or self.is_cut(src, dst):
            stats.refused += 1
            await _close(client, reset=True)
            return
        try:
            with trio.fail_after(self._connect_timeout):
                server = await _connect(target, mark)
        except (OSError, trio.TooSlowError):
            stats.refused += 1
            await _close(client, reset=True)
            return
        conn = _Conn(src, dst)
        self._conns.add(conn)
        try:
            with conn.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, client, server, src, dst, conn)
                    nursery.start_soon(self._pump, server, client, dst, src, conn)
        finally:
            self._conns.discard(conn)
            if conn.reset:
                stats.resets += 1
            with trio.CancelScope(shield=True):
                await _close(client, reset=conn.reset)
                await _close(server, reset=conn.reset)

    async def _pump(
        self,
        reader: trio.SocketStream,
        writer: trio.SocketStream,
        src: str,
        dst: str,
        conn: _Conn,
    ) -> None:
        """Copy one direction, delaying each chunk; EOF is forwarded after the last chunk."""
        send, recv = trio.open_memory_channel[tuple[float, bytes]](MAX_QUEUED)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._deliver, recv, writer, src, dst, conn)
            await self._read(reader, send, src, dst, conn)

    async def _read(
        self,
        reader: trio.SocketStream,
        send: trio.MemorySendChannel[tuple[float, bytes]],
        src: str,
        dst: str,
        conn: _Conn,
    ) -> None:
        stats = self.stats(src, dst)
        async with send:
            last_due = 0.0
            try:
                while True:
                    data = await reader.receive_some(CHUNK)
                    if not data:
                        return
                    params = self.link(src, dst)
                    if params.reset and self._rng.random() < params.reset:
                        conn.abort()
                        return
                    delay, lost = params.sample_delay(self._rng)
                    if lost:
                        stats.stalls += 1
                    # TCP delivers in order: a chunk never overtakes its predecessor.
                    last_due = max(trio.current_time() + delay, last_due)
                    await send.send((last_due, data))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                conn.abort()

    async def _deliver(
        self,
        recv: trio.MemoryReceiveChannel[tuple[float, bytes]],
        writer: trio.SocketStream,
        src: str,
        dst: str,
        conn: _Conn,
    ) -> None:
        stats = self.stats(src, dst)
        try:
            async with recv:
                async for due, data in recv:
                    await trio.sleep_until(due)
                    bucket = self._bucket(src, dst)
                    if bucket is None:
                        await writer.send_all(data)
                    else:
                        step = int(bucket.burst)
                        for start in range(0, len(data), step):
                            piece = data[start : start + step]
                            await bucket.take(len(piece))
                            await writer.send_all(piece)
                    stats.bytes += len(data)
                    stats.chunks += 1
            await writer.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            conn.abort()


def original_destination(sock: Any) -> tuple[str, int]:
    """(ip, port) a connection redirected by nft/iptables was originally sent to."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, packed = struct.unpack("!2xH4s8x", raw)
    ip = socket.inet_ntoa(packed)
    if not ip.startswith(TRANSPARENT_NETS):
        raise SimnetError(f"refusing to forward to {ip}: outside simnet's networks")
    return ip, int(port)


async def _connect(target: tuple[str, int], mark: int | None) -> trio.SocketStream:
    """Connect to ``target``; with ``mark``, set SO_MARK before connecting."""
    if mark is None:
        return await trio.open_tcp_stream(*target)
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        await sock.connect(target)
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def _close(stream: trio.SocketStream, *, reset: bool) -> None:
    """Close ``stream``; with ``reset`` the peer gets an RST instead of a FIN."""
    if reset:
        with contextlib.suppress(OSError):
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


async def serve_transparent(
    src: str, port: int, params: LinkParams, *, seed: int = 0,
    names: Mapping[str, str] | None = None,
) -> None:
    """Run a transparent proxy for node ``src`` until cancelled; prints ``ready PORT``."""
    async with FaultProxy(seed=seed) as proxy:
        proxy.set_default(params)
        bound = await proxy.open_transparent(src, port, names=names)
        print(f"ready {bound}", flush=True)
        await trio.sleep_forever()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simnet.proxy transparent --src NAME --port P --params JSON [--seed N]
    [--name IP=NAME]…``: the per-namespace delay proxy of the netns backend."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m simnet.proxy")
    sub = parser.add_subparsers(dest="mode", required=True)
    tp = sub.add_parser("transparent", help="serve connections redirected by nft")
    tp.add_argument("--src", required=True)
    tp.add_argument("--port", type=int, default=15001)
    tp.add_argument("--params", default="{}", help="LinkParams fields as a JSON object")
    tp.add_argument("--seed", type=int, default=0)
    tp.add_argument("--name", action="append", default=[], help="IP=NODE (repeatable)")
    args = parser.parse_args(argv)
    try:
        params = LinkParams(**json.loads(args.params))
        names = dict(item.split("=", 1) for item in args.name)
    except (TypeError, ValueError, SimnetError) as exc:
        parser.error(f"bad --params/--name: {exc}")
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(lambda: serve_transparent(args.src, args.port, params, seed=args.seed,
                                           names=names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
