"""MyceliumHost over real py-libp2p hosts on 127.0.0.1: identity, dialling, sync streams,
and one test pinned to each py-libp2p pitfall the host works around."""

from __future__ import annotations

import logging
import socket

import pytest
import trio

from mycelium.identity.identity import Identity
from mycelium.net.errors import ConnectError, NetError, StreamOpenError
from mycelium.net.framing import FramedStream
from mycelium.net.host import HostLimits, local_ipv4_addresses, open_host

from .util import LOOPBACK, hosts

pytestmark = pytest.mark.timeout(60)


async def test_peer_id_is_identity_and_addrs_are_dialable() -> None:
    identity = Identity.generate()
    with trio.fail_after(20):
        async with open_host(identity, LOOPBACK) as host:
            assert host.peer_id == identity.peer_id
            (addr,) = host.addrs()
            assert addr.startswith("/ip4/127.0.0.1/tcp/")
            assert addr.endswith(f"/p2p/{identity.peer_id}")
            assert "/tcp/0/" not in addr


async def test_wildcard_listen_expands_to_interface_addresses() -> None:
    with trio.fail_after(20):
        async with open_host(Identity.generate(), ["/ip4/0.0.0.0/tcp/0"]) as host:
            addrs = host.addrs()
            assert addrs and not any("0.0.0.0" in a for a in addrs)
            ips = [a.split("/")[2] for a in addrs]
            assert ips == local_ipv4_addresses()
            assert "127.0.0.1" in ips
            assert len({a.split("/")[4] for a in addrs}) == 1  # one port


async def test_connect_and_echo_over_sync_stream() -> None:
    async def echo(peer_id: str, framed: FramedStream) -> None:
        seen.append(peer_id)
        while (frame := await framed.receive_frame()) is not None:
            await framed.send_frame(frame[::-1])

    seen: list[str] = []
    with trio.fail_after(20):
        async with hosts(2) as (a, b):
            b.set_sync_handler(echo)
            assert await a.connect(b.addrs()[0]) == b.peer_id
            assert b.peer_id in a.connected_peers()
            framed = await a.open_sync_stream(b.peer_id)
            assert framed.remote_peer_id == b.peer_id
            await framed.send_frame(b"hello")
            assert await framed.receive_frame() == b"olleh"
            await framed.close()
            assert seen == [a.peer_id]
            assert a.metrics()["sync_streams_out"] == 1
            with trio.fail_after(5):
                while b.metrics()["sync_streams_active"]:
                    await trio.sleep(0.01)
            assert b.metrics()["sync_streams_in"] == 1
            await a.disconnect(b.peer_id)
            with trio.fail_after(5):
                while b.peer_id in a.connected_peers():
                    await trio.sleep(0.01)


async def test_handler_sees_clean_eof_as_none() -> None:
    """Pitfall 4: py-libp2p raises StreamEOF at end of stream; FramedStream returns None."""
    got: list[bytes | None] = []
    done = trio.Event()

    async def drain(peer_id: str, framed: FramedStream) -> None:
        while True:
            data = await framed.receive_some()
            got.append(data)
            if data is None:
                done.set()
                return

    with trio.fail_after(20):
        async with hosts(2) as (a, b):
            b.set_sync_handler(drain)
            await a.connect(b.addrs()[0])
            framed = await a.open_sync_stream(b.peer_id)
            await framed.send(b"abc")
            await framed.close()
            await done.wait()
    assert got[-1] is None and b"".join(g for g in got if g) == b"abc"


@pytest.mark.parametrize(
    ("addr", "reason"),
    [
        ("/ip4/127.0.0.1/tcp/1", "no_peer_id"),
        ("not a multiaddr", "no_peer_id"),
        ("/ip4/127.0.0.1/tcp/1/p2p/notbase58!", "bad_address"),
    ],
)
async def test_connect_rejects_bad_addresses(addr: str, reason: str) -> None:
    with trio.fail_after(20):
        async with hosts(1) as (a,):
            with pytest.raises(ConnectError) as info:
                await a.connect(addr)
            assert info.value.reason == reason


async def test_connect_failures_have_reasons() -> None:
    limits = HostLimits(connect_timeout=3.0)
    with trio.fail_after(30):
        async with hosts(2, limits) as (a, b):
            with pytest.raises(ConnectError) as info:
                await a.connect(a.addrs()[0])
            assert info.value.reason == "self_dial"
            # b's address with somebody else's peer id:
            other = Identity.generate().peer_id
            with pytest.raises(ConnectError) as info:
                await a.connect(b.addrs()[0].replace(b.peer_id, other))
            # b answers, but its key does not match the /p2p/ id: Noise refuses.
            assert info.value.reason in {"dial_failed", "timeout"}
            # Nobody listens on a port we just closed: refused.
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            sock.close()
            with pytest.raises(ConnectError) as info:
                await a.connect(f"/ip4/127.0.0.1/tcp/{port}/p2p/{b.peer_id}")
            assert info.value.reason == "dial_failed"
            assert a.metrics()["connects_failed"] == 3
            with pytest.raises(StreamOpenError):
                await a.open_sync_stream("garbage")


async def test_connect_is_fast_pitfall_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pitfall 1: without max_connections_per_peer=1 py-libp2p's connect() waits out its
    happy-eyeballs delay (250 ms) after the first dial succeeded. The delay is stretched
    to 10 minutes here: connect() returning at all proves it was not waited, with no
    wall-clock bound that a loaded machine could break."""
    from libp2p.network import swarm

    monkeypatch.setattr(swarm, "_HAPPY_EYEBALLS_DELAY", 600.0)
    with trio.fail_after(60):
        async with hosts(2) as (a, b):
            await a.connect(b.addrs()[0])
            assert b.peer_id in a.connected_peers()


async def test_only_noise_is_offered_pitfall_2() -> None:
    """Pitfall 2: py-libp2p offers plaintext and SECIO by default; our host refuses a
    plaintext-only dialer, and the security protocol it speaks is Noise."""
    from libp2p import new_host
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
    from multiaddr import Multiaddr

    with trio.fail_after(30):
        async with hosts(2) as (a, b):
            await a.connect(b.addrs()[0])
            upgrader = b.libp2p.get_network().upgrader
            assert list(upgrader.security_multistream.transports) == ["/noise"]
            assert list(upgrader.muxer_multistream.transports) == ["/yamux/1.0.0"]
            (conn,) = a.libp2p.get_network().connections[b.libp2p.get_id()]
            assert type(conn.muxed_conn).__name__ == "Yamux"
            kp = Identity.generate().libp2p_key_pair()
            plain = new_host(
                key_pair=kp, sec_opt={TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(kp)}
            )
            async with plain.run(listen_addrs=[Multiaddr(LOOPBACK[0])]):
                with pytest.raises(Exception), trio.fail_after(10):  # noqa: B017
                    await plain.connect(info_from_p2p_addr(Multiaddr(b.addrs()[0])))
            assert plain.get_id() not in b.libp2p.get_connected_peers()


def test_peer_ids_are_base58_pitfall_5() -> None:
    """Pitfall 5: ID.to_multibase loses the leading zero byte; we only use base58."""
    from libp2p.peer.id import ID

    identity = Identity.generate()
    pid = ID.from_base58(identity.peer_id)
    assert pid.to_base58() == identity.peer_id
    assert pid.to_bytes()[:6] == bytes.fromhex("002408011220")
    assert pid.to_bytes()[6:] == identity.public_key


def test_libp2p_key_is_the_identity_seed_pitfall_9() -> None:
    """Pitfall 9: py-libp2p's private key bytes are the 32-byte seed, not the 64-byte form."""
    identity = Identity.generate()
    kp = identity.libp2p_key_pair()
    assert kp.private_key.to_bytes() == identity.seed
    assert kp.public_key.to_bytes() == identity.public_key


def test_no_module_named_examples_pitfall_8() -> None:
    """Pitfall 8: the libp2p wheel installs a top-level ``examples`` package."""
    import pathlib

    import mycelium

    root = pathlib.Path(mycelium.__file__).parent
    assert not [p for p in root.rglob("examples*") if p.suffix in {"", ".py"}]


async def test_inbound_stream_limits(caplog: pytest.LogCaptureFixture) -> None:
    """Excess inbound streams are reset, logged and counted; the host keeps serving."""
    limits = HostLimits(max_sync_streams=6, max_sync_streams_per_peer=2)
    release = trio.Event()

    async def hold(peer_id: str, framed: FramedStream) -> None:
        await framed.send_frame(b"ok")
        await release.wait()

    caplog.set_level(logging.WARNING, logger="mycelium.net")
    with trio.fail_after(30):
        async with hosts(5, limits) as (server, *clients):
            server.set_sync_handler(hold)
            opened: list[FramedStream] = []
            answered = 0
            for client in clients:
                await client.connect(server.addrs()[0])
                for _ in range(3):  # sequential, so which streams are refused is exact
                    try:  # a refused stream fails in open or in the first read
                        framed = await client.open_sync_stream(server.peer_id)
                        opened.append(framed)
                        if await framed.receive_frame() == b"ok":
                            answered += 1
                    except NetError:
                        pass
            m = server.metrics()
            assert (answered, m["sync_streams_active"]) == (6, 6), m
            # the third stream of clients 1 and 2; client 3's third stream already meets
            # the total limit, as do all of client 4's
            assert m["sync_streams_rejected_per_peer"] == 2, m
            assert m["sync_streams_rejected"] == 4, m
            assert "limit" in caplog.text
            release.set()
            for framed in opened:
                await framed.close()
            with trio.fail_after(5):
                while server.metrics()["sync_streams_active"]:
                    await trio.sleep(0.01)
            # still serving
            release = trio.Event()
            framed = await clients[0].open_sync_stream(server.peer_id)
            assert await framed.receive_frame() == b"ok"
            release.set()
            await framed.close()


async def test_stream_without_handler_is_reset() -> None:
    with trio.fail_after(20):
        async with hosts(2) as (a, b):
            await a.connect(b.addrs()[0])
            framed = await a.open_sync_stream(b.peer_id)
            try:
                await framed.send(b"x")
                assert await framed.receive_some() is None  # py-libp2p: reset can read as EOF
            except NetError as exc:
                assert exc.reason in {"reset", "write_failed"}
            assert b.metrics()["sync_streams_no_handler"] == 1


@pytest.mark.parametrize("patched", [True, False])
async def test_no_auto_dial_of_peer_store_entries_pitfall_10(patched: bool) -> None:
    """Pitfall 10: py-libp2p's AutoConnector dials every peer-store entry with addresses
    (periodically and after disconnects). Our host switches it off; the unpatched run
    calls the library's own method to show the habit we avoid."""
    from libp2p.network.auto_connector import AutoConnector
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    with trio.fail_after(20):
        async with hosts(2) as (a, b):
            info = info_from_p2p_addr(Multiaddr(b.addrs()[0]))
            a.libp2p.get_peerstore().add_addrs(info.peer_id, info.addrs, 600)
            connector = a.libp2p.get_network().auto_connector
            if patched:
                await connector.maybe_connect()
            else:
                await AutoConnector.maybe_connect(connector)
            with trio.move_on_after(1.0):
                while b.peer_id not in a.connected_peers():
                    await trio.sleep(0.02)
            assert (b.peer_id in a.connected_peers()) is (not patched)


async def test_identify_and_ping_run() -> None:
    """Identify tells the dialer which protocols the peer serves; ping measures RTT."""
    from libp2p.peer.id import ID

    with trio.fail_after(20):
        async with hosts(2) as (a, b):
            await a.connect(b.addrs()[0])
            rtt = await a.ping(b.peer_id)
            assert 0 < rtt < 1.0
            store = a.libp2p.get_peerstore()
            with trio.fail_after(5):
                while "/mycelium/sync/1" not in store.get_protocols(ID.from_base58(b.peer_id)):
                    await trio.sleep(0.02)
            with pytest.raises(ConnectError):
                await a.ping(Identity.generate().peer_id, timeout=2)


async def test_ipv6_wildcard_expands_and_is_dialable() -> None:
    from mycelium.net.host import local_ipv6_addresses

    if "::1" not in local_ipv6_addresses():
        pytest.skip("no IPv6 loopback on this machine")
    with trio.fail_after(20):
        async with (
            open_host(Identity.generate(), ["/ip6/::/tcp/0"]) as a,
            open_host(Identity.generate(), LOOPBACK) as b,
        ):
            addrs = a.addrs()
            assert not [x for x in addrs if x.startswith("/ip6/::/")]
            assert not [x for x in addrs if "/ip6/fe80" in x]
            (loop6,) = [x for x in addrs if x.startswith("/ip6/::1/")]
            assert await b.connect(loop6) == a.peer_id
