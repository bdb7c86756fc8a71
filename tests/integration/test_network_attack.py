"""A running ``mycelium run`` process under network attack (issue 16 §2).

Throwaway identities hold every inbound sync stream (silent, or with a HELLO that shares
nothing), and a flood of connections from fresh ids plus stalled handshakes (raw TCP that
never finishes multistream/Noise) hits the listener. Bound stated in ``protocols/sync.md``
§6.2: an honest member that starts syncing during the attack converges within 30 s, the
node's connection count stays within its limit and its memory grows by less than 64 MiB.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import trio

from mycelium.codec.frames import encode_frame
from mycelium.errors import MyceliumError
from mycelium.identity.identity import Identity
from mycelium.net.host import HostLimits, open_host
from mycelium.sync.messages import Hello, encode_message
from simnet.backends.process import NodeProcess, free_port

from .cluster import community, converged, put, run_args, stop_all

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ATTACKERS = 16
STALLED = 120


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _hold_streams(target: NodeProcess, port: int, stop: trio.Event) -> None:
    """One throwaway id: 4 sync streams, re-opened as the node ends them."""
    assert target.identity is not None
    hello = encode_frame(encode_message(Hello(salt=b"\x00" * 16, offers=(),
                                              credit_envelopes=256, credit_bytes=1 << 20)))
    async with open_host(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"]) as host:
        with contextlib.suppress(MyceliumError):
            await host.connect(f"/ip4/127.0.0.1/tcp/{port}/p2p/{target.identity.peer_id}")
        k = 0
        while not stop.is_set():
            with contextlib.suppress(MyceliumError):
                framed = await host.open_sync_stream(target.identity.peer_id)
                k += 1
                if k % 2:
                    await framed.send(hello)
            await trio.sleep(0.25)


async def _stall_handshakes(port: int, stop: trio.Event) -> None:
    """Raw TCP connections that start multistream and never finish the handshake."""
    socks: list[trio.SocketStream] = []
    try:
        while not stop.is_set():
            socks = [s for s in socks if s.socket.fileno() != -1]
            while len(socks) < STALLED:
                try:
                    s = await trio.open_tcp_stream("127.0.0.1", port)
                    await s.send_all(b"\x13/multistream/1.0.0\n")
                except OSError:
                    break
                socks.append(s)
            await trio.sleep(1.0)
    finally:
        for s in socks:
            with contextlib.suppress(Exception):
                await s.aclose()


async def test_member_syncs_while_slots_and_connections_are_flooded(tmp_path: Path) -> None:
    nodes, space_id = await community(tmp_path, 2)
    target, honest = nodes
    ports = [free_port(), free_port()]
    try:
        await put(target, "seed", "from the target")
        await target.start(run_args(ports[0], []))
        assert target.pid is not None
        rss_before = _rss_kib(target.pid)
        stop = trio.Event()
        async with trio.open_nursery() as attack:
            for _ in range(ATTACKERS):
                attack.start_soon(_hold_streams, target, ports[0], stop)
            attack.start_soon(_stall_handshakes, ports[0], stop)
            await trio.sleep(3.0)  # the attack is in full swing
            metrics = (await target.status())["metrics"]
            assert metrics["net.peers_connected"] <= HostLimits().max_connections
            start = trio.current_time()
            await honest.start(run_args(ports[1], [(ports[0], target)]))
            await put(honest, "honest-1", "during the attack")
            await converged([target, honest], space_id, timeout=30)
            took = trio.current_time() - start
            metrics = (await target.status())["metrics"]
            rss_during = _rss_kib(target.pid)
            stop.set()
        assert took < 30
        assert metrics["net.peers_connected"] <= HostLimits().max_connections
        assert rss_during - rss_before < 64 * 1024, (rss_before, rss_during)
        log = target.log_path.read_text()
        assert "nothing_shared" in log or metrics.get("net.sync_streams_evicted", 0) > 0 \
            or metrics.get("net.sync_streams_rejected", 0) > 0, metrics
    finally:
        await stop_all(nodes)
