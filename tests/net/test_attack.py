"""Hostile peers against real hosts (issue 16 §1, §2, §4; ``protocols/sync.md`` §6).

Slot exhaustion: many fresh identities holding inbound sync streams must not lock an
honest member out. CPU: what a peer's input costs to process is charged to it.
Outbound: what we send one peer is paced.
"""

from __future__ import annotations

import contextlib

import pytest
import trio
import trio.testing

from mycelium.codec.frames import encode_frame
from mycelium.errors import MyceliumError
from mycelium.net.framing import FramedStream, TokenBucket
from mycelium.net.host import HostLimits
from mycelium.net.sync_driver import SessionRunner
from mycelium.sync.messages import Ack, Hello, Want, encode_message
from mycelium.sync.session import CaughtUp, SyncSession
from tests.sync.hostile import Hostile
from tests.sync.pair import make_nodes

from .syncpeer import SyncPeer, wait_until
from .util import FakeStream, hosts

pytestmark = pytest.mark.timeout(120)

S1 = b"\x01" * 32


def _hello_without_offers() -> bytes:
    return encode_frame(encode_message(Hello(salt=b"\x00" * 16, offers=(),
                                             credit_envelopes=256, credit_bytes=1 << 20)))


async def test_honest_member_syncs_during_a_64_stream_slot_attack() -> None:
    """16 throwaway ids x 4 streams (the default limits) hold every inbound slot, half
    of them silent (handshake), half with a HELLO that shares nothing. Bound: the
    member catches up within 5 s of starting (unattacked: well under 1 s here)."""
    n_attackers = 16
    with trio.fail_after(90):
        async with hosts(n_attackers + 2) as (hs, hm, *attackers), \
                trio.open_nursery() as nursery:
            server, member = SyncPeer(hs), SyncPeer(hm)
            hs.set_member_check(lambda peer_id: peer_id == hm.peer_id)
            for p in (server, member):
                p.store.add_space(S1)
            server.write(S1, 200)
            held: list[FramedStream] = []
            for i, attacker in enumerate(attackers):
                await attacker.connect(hs.addrs()[0])
                for k in range(4):
                    with contextlib.suppress(MyceliumError):
                        framed = await attacker.open_sync_stream(hs.peer_id)
                        if (i + k) % 2:
                            await framed.send(_hello_without_offers())
                        held.append(framed)
            m = hs.metrics()
            # Sessions that share nothing end after the handshake; silent ones hold on.
            await wait_until(lambda: hs.metrics()["sync_streams_active"] <= 32)
            # more silent streams from the attackers: the non-member share fills up
            for attacker in attackers:
                for _ in range(2):
                    with contextlib.suppress(MyceliumError):
                        held.append(await attacker.open_sync_stream(hs.peer_id))
            await trio.sleep(hs.limits.evict_grace_s)  # the attack's streams are settled
            start = trio.current_time()
            nursery.start_soon(member.sync_with, server)
            await wait_until(lambda: any(isinstance(e, CaughtUp) for e in member.events),
                             timeout=5.0)
            took = trio.current_time() - start
            assert member.store.version_vector(S1) == server.store.version_vector(S1)
            m = hs.metrics()
            assert m["sync_streams_active"] <= hs.limits.max_sync_streams
            assert took < 5.0
            nursery.cancel_scope.cancel()


async def test_member_evicts_a_useless_stream_when_slots_are_full() -> None:
    limits = HostLimits(max_sync_streams=4, reserved_member_streams=1, evict_grace_s=0.2)
    with trio.fail_after(60):
        async with hosts(4, limits) as (hs, hm, ha, hb), trio.open_nursery() as nursery:
            server, member = SyncPeer(hs), SyncPeer(hm)
            hs.set_member_check(lambda peer_id: peer_id == hm.peer_id)
            for p in (server, member):
                p.store.add_space(S1)
            server.write(S1, 20)
            for attacker in (ha, hb):
                await attacker.connect(hs.addrs()[0])
                for _ in range(2):
                    with contextlib.suppress(MyceliumError):
                        await attacker.open_sync_stream(hs.peer_id)
            await wait_until(lambda: hs.metrics()["sync_streams_active"] == 3)
            # the non-member share (3 of 4) is full: a fourth non-member stream is refused
            with contextlib.suppress(MyceliumError):
                framed = await hb.open_sync_stream(hs.peer_id)
                await framed.receive_some()
            await trio.sleep(0.3)
            nursery.start_soon(member.sync_with, server)
            await wait_until(lambda: any(isinstance(e, CaughtUp) for e in member.events))
            assert member.store.version_vector(S1) == server.store.version_vector(S1)
            nursery.cancel_scope.cancel()


async def test_cpu_spent_on_a_peer_is_charged_to_its_budget() -> None:
    stream = FakeStream()
    framed = FramedStream(stream, remote_peer_id="peer",
                          cpu_bucket=TokenBucket(1.0, 1.0))
    session = SyncSession(_EmptyStore(), local_id=b"\x01" * 32, remote_id=b"\x02" * 32,
                          initiator=False, now=trio.current_time())
    ticks = iter(range(10_000))
    # every receive_data "costs" 0.4 CPU-s: the third overdraws the 1-s bucket
    runner = SessionRunner(session, framed, on_event=lambda e: None,
                           cpu_clock=lambda: next(ticks) * 0.2)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.run)
            await stream.send.send(_hello_without_offers()[:3])
            for _ in range(5):
                await stream.send.send(b"\x00")
            await wait_until(lambda: runner.close_reason is not None)
    assert runner.close_reason == "rate_limited"
    assert stream.resets >= 1


async def test_outbound_bytes_are_paced(autojump_clock: trio.testing.MockClock) -> None:
    stream = FakeStream()
    framed = FramedStream(stream, remote_peer_id="peer",
                          out_bucket=TokenBucket(1000.0, 1000.0), write_timeout=100)
    start = trio.current_time()
    for _ in range(4):
        await framed.send(b"x" * 1000)
    assert trio.current_time() - start >= 2.9  # 4000 bytes at 1000/s after a 1000 burst
    assert sum(map(len, stream.written)) == 4000


class _EmptyStore:
    """A store with no spaces (the CPU test never gets past the handshake)."""

    def member_spaces(self) -> list[bytes]:
        return []


async def test_connection_flood_from_fresh_ids_keeps_the_connection_limit() -> None:
    limits = HostLimits(max_connections=8)
    with trio.fail_after(60):
        async with hosts(1, limits) as (server,), hosts(20) as clients:
            ok = 0
            for client in clients:
                with contextlib.suppress(MyceliumError):
                    await client.connect(server.addrs()[0])
                    ok += 1
            assert ok <= 8
            assert len(server.connected_peers()) <= 8


async def test_stalled_handshakes_from_one_address_leave_room_for_others() -> None:
    """Raw TCP from 127.0.0.2 that never finishes the handshake would hold every inbound
    slot until the handshake timeout; the per-IP cap keeps them to a few."""
    limits = HostLimits(max_connections=16, max_connections_per_ip=4, per_ip_loopback=True)
    with trio.fail_after(60):
        async with hosts(1, limits) as (server,), hosts(1) as (honest,):
            port = int(server.addrs()[0].split("/")[4])
            stalled: list[trio.SocketStream] = []
            for _ in range(30):
                sock = trio.socket.socket()
                await sock.bind(("127.0.0.2", 0))
                await sock.connect(("127.0.0.1", port))
                stream = trio.SocketStream(sock)
                with contextlib.suppress(trio.BrokenResourceError):
                    await stream.send_all(b"\x13/multistream/1.0.0\n")
                stalled.append(stream)
            await wait_until(lambda: server.metrics()["connections_rejected_per_ip"] >= 26)
            with trio.fail_after(5):
                assert await honest.connect(server.addrs()[0]) == server.peer_id
            for stream in stalled:
                await stream.aclose()


def test_amplification_faults_are_strikes() -> None:
    """stale_want and want_flood end the session as the peer's fault: a strike each, and
    three ban the peer id (sync.md §6.1, §6.3)."""
    from mycelium.net.peers import PeerManager, PeerPolicy
    from mycelium.sync.session import SessionError

    class Dialer:
        peer_id = "me"

        async def connect(self, maddr: str) -> str:
            raise AssertionError

        async def disconnect(self, peer_id: str) -> None:
            return None

        def connected_peers(self) -> list[str]:
            return []

    pm = PeerManager(Dialer(), PeerPolicy(), clock=lambda: 0.0)
    for reason in ("stale_want", "want_flood", "stale_want"):
        (node,) = make_nodes(1)
        node.store.add_space(S1)
        node.write(S1, *((20, 100) if reason == "stale_want" else (600, 4000)))
        h = Hostile(node.store, node.id, spaces=(S1,))
        h.drain()
        if reason == "stale_want":
            for _ in range(5):
                h.send(Want(0, {}))
                h.victim.frames_to_send()
        else:
            h.send(Ack(1 << 20, 1 << 30))
            for _ in range(5):
                h.send(Want(0, {}))
                h.drain()
        errors = [e for e in h.victim.events() if isinstance(e, SessionError)]
        assert [e.reason for e in errors] == [reason]
        pm.observe("hostile", errors[0])
    assert pm.is_banned("hostile")


async def test_fresh_ids_cannot_take_the_connections_kept_for_members() -> None:
    """With the member check set, non-members' inbound connections beyond
    ``max_connections - reserve`` are closed after the handshake: a member still gets in
    when fresh ids have flooded the listener."""
    limits = HostLimits(max_connections=8, reserved_member_connections=2)
    with trio.fail_after(60):
        async with hosts(1, limits) as (server,), hosts(9) as (member, *fresh):
            server.set_member_check(lambda peer_id: peer_id == member.peer_id)
            for client in fresh:
                with contextlib.suppress(MyceliumError):
                    await client.connect(server.addrs()[0])
            await wait_until(lambda: server.metrics()["connections_closed_for_members"] >= 2)
            await wait_until(lambda: len(server.connected_peers()) <= 6)
            assert await member.connect(server.addrs()[0]) == server.peer_id
            await wait_until(lambda: member.peer_id in server.connected_peers())
            assert len(server.connected_peers()) <= 8


async def test_connections_that_closed_give_their_slot_back_pitfall_16() -> None:
    """py-libp2p 0.8.1 holds an inbound-limiter slot per inbound connection until the
    whole swarm stops: after ``max_connections`` connect/disconnect cycles (a flood of
    fresh ids, or just reconnects over days) no inbound connection was ever accepted
    again. The host ends the handler when its connection closes."""
    limits = HostLimits(max_connections=4)
    with trio.fail_after(90):
        async with hosts(1, limits) as (server,), hosts(1) as (client,):
            network = server.libp2p.get_network()
            for _ in range(10):
                assert await client.connect(server.addrs()[0]) == server.peer_id
                await wait_until(lambda: client.peer_id in server.connected_peers())
                await client.disconnect(server.peer_id)
                await wait_until(lambda: client.peer_id not in server.connected_peers())
            await wait_until(lambda: network._inbound_limiter.borrowed_tokens == 0, timeout=15)
            assert await client.connect(server.addrs()[0]) == server.peer_id
