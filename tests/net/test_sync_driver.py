"""SessionRunner over real py-libp2p hosts on 127.0.0.1: convergence, live push, and a
host that survives garbage, oversized frames, floods and over-fast peers."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from mycelium.codec.frames import encode_uvarint
from mycelium.identity.identity import Identity
from mycelium.net.errors import NetError
from mycelium.net.framing import FramedStream
from mycelium.net.host import HostLimits
from mycelium.net.sync_driver import SessionRunner
from mycelium.sync.session import CaughtUp, Closed, SessionError, SessionState

from .syncpeer import SyncPeer, wait_until
from .util import FakeStream, hosts

pytestmark = pytest.mark.timeout(60)

S1 = b"\x01" * 32
S2 = b"\x02" * 32


async def test_sync_converges_and_live_push_arrives() -> None:
    with trio.fail_after(30):
        async with hosts(2) as (ha, hb), trio.open_nursery() as nursery:
            a, b = SyncPeer(ha), SyncPeer(hb)
            for p in (a, b):
                p.store.add_space(S1)
                p.store.add_space(S2)
            a.write(S1, 120)
            b.write(S1, 80)
            b.write(S2, 30)
            nursery.start_soon(a.sync_with, b)
            await wait_until(lambda: all(
                a.store.version_vector(s) == b.store.version_vector(s) for s in (S1, S2)
            ))
            assert sum(len(a.store.version_vector(s)) for s in (S1, S2)) == 3
            await wait_until(lambda: any(isinstance(e, CaughtUp) for e in b.events))
            (ra,) = a.runners
            (rb,) = b.runners
            assert ra.session.state is SessionState.LIVE

            # Live push after catch-up: a local write goes out on poke().
            (raw,) = a.write(S1)
            assert ra.session.push_local(S1, raw)
            ra.poke()
            await wait_until(lambda: b.store.version_vector(S1) == a.store.version_vector(S1))
            # ...and the other way round, via notify_changed (as after gossip).
            b.write(S2, 3)
            rb.session.notify_changed(S2)
            rb.poke()
            await wait_until(lambda: b.store.version_vector(S2) == a.store.version_vector(S2))

            ra.session.close()
            ra.poke()
            await wait_until(lambda: ra.close_reason is not None and rb.close_reason is not None)
            assert ra.close_reason == "bye"
            assert rb.close_reason in {"bye", "eof"}
            assert not [e for e in a.events + b.events if isinstance(e, SessionError)]
            assert ra.framed.closed and rb.framed.closed


async def test_peer_gone_ends_session_with_connection_lost() -> None:
    with trio.fail_after(30):
        async with hosts(2) as (ha, hb), trio.open_nursery() as nursery:
            a, b = SyncPeer(ha), SyncPeer(hb)
            for p in (a, b):  # a session sharing nothing ends at once (sync.md §7.1)
                p.store.add_space(S1)
            nursery.start_soon(a.sync_with, b)
            await wait_until(lambda: len(b.runners) == 1 and b.runners[0].session.state
                             is SessionState.LIVE)
            await ha.disconnect(hb.peer_id)
            await wait_until(lambda: b.runners[0].close_reason is not None)
            assert b.runners[0].close_reason in {"eof", "reset"}
            assert any(isinstance(e, Closed) for e in b.events)


@pytest.mark.parametrize(
    ("junk", "reason"),
    [
        (encode_uvarint(1 << 24), "oversized_frame"),  # announces a 16 MiB frame
        (encode_uvarint(5) + b"\xff\xff\xff\xff\xff", "bad_frame"),
    ],
)
async def test_garbage_peer_is_cut_off_while_host_serves_another(
    junk: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mycelium.net")
    with trio.fail_after(30):
        async with hosts(3) as (hs, hr, hh), trio.open_nursery() as nursery:
            server, honest = SyncPeer(hs), SyncPeer(hh)
            server.store.add_space(S1)
            honest.store.add_space(S1)
            server.write(S1, 50)
            await hr.connect(hs.addrs()[0])
            rogue = await hr.open_sync_stream(hs.peer_id)
            nursery.start_soon(honest.sync_with, server)
            await rogue.send(junk)
            await wait_until(lambda: any(isinstance(e, SessionError) for e in server.events))
            errors = [e for e in server.events if isinstance(e, SessionError)]
            assert [e.reason for e in errors] == [reason], errors
            # The server answered with ERR and closed: the rogue sees the end of stream.
            with trio.fail_after(5):
                while True:
                    try:
                        if await rogue.receive_some() is None:
                            break
                    except NetError:
                        break
            await wait_until(lambda: honest.store.version_vector(S1)
                             == server.store.version_vector(S1))
            assert reason in caplog.text
            nursery.cancel_scope.cancel()


async def test_stream_flood_is_limited_and_host_keeps_serving() -> None:
    limits = HostLimits(max_sync_streams=16, max_sync_streams_per_peer=4)
    with trio.fail_after(45):
        async with hosts(3, limits) as (hs, hf, hh), trio.open_nursery() as nursery:
            server, honest = SyncPeer(hs), SyncPeer(hh)
            server.store.add_space(S1)
            honest.store.add_space(S1)
            server.write(S1, 20)
            await hf.connect(hs.addrs()[0])
            opened = 0

            async def open_one() -> None:
                nonlocal opened
                try:
                    await hf.open_sync_stream(hs.peer_id)
                    opened += 1
                except NetError:
                    pass

            async with trio.open_nursery() as flood:
                for _ in range(50):
                    flood.start_soon(open_one)
            m = hs.metrics()
            assert m["sync_streams_in"] <= 4
            assert m["sync_streams_rejected_per_peer"] >= 46
            nursery.start_soon(honest.sync_with, server)
            await wait_until(lambda: honest.store.version_vector(S1)
                             == server.store.version_vector(S1))
            nursery.cancel_scope.cancel()


async def test_fast_peer_is_rate_limited() -> None:
    limits = HostLimits(rate_bytes_s=20_000, burst_bytes=50_000)
    with trio.fail_after(30):
        async with hosts(2, limits) as (hs, hr):
            server = SyncPeer(hs)
            await hr.connect(hs.addrs()[0])
            rogue = await hr.open_sync_stream(hs.peer_id)
            # One legal-sized frame, sent much faster than 20 kB/s.
            try:
                await rogue.send(encode_uvarint(900_000))
                for _ in range(20):
                    await rogue.send(b"\0" * 16_384)
            except NetError:
                pass
            await wait_until(lambda: hs.metrics()["rate_limited"] == 1)
            await wait_until(lambda: server.runners and server.runners[0].close_reason)
            assert server.runners[0].close_reason == "rate_limited"


def _responder(peer: SyncPeer, framed: FramedStream) -> SessionRunner:
    return peer.runner(Identity.generate().peer_id, framed, initiator=False)


async def test_runner_ticks_at_the_session_deadline(autojump_clock: trio.testing.MockClock) -> None:
    """A peer that never says HELLO: the runner wakes at next_deadline(), the session
    times out, the runner ends and closes the stream (virtual time)."""
    fake = FakeStream()
    peer = SyncPeer(_NoHost())  # type: ignore[arg-type]
    runner = _responder(peer, FramedStream(fake, remote_peer_id="peer"))
    t0 = trio.current_time()
    await runner.run()
    assert trio.current_time() - t0 == pytest.approx(runner.session.limits.handshake_timeout)
    assert runner.close_reason == "timeout"
    assert fake.closes == 1 and fake.resets == 0
    assert any(isinstance(e, SessionError) and not e.remote for e in peer.events)


async def test_cancelled_runner_resets_the_stream() -> None:
    fake = FakeStream()
    peer = SyncPeer(_NoHost())  # type: ignore[arg-type]
    runner = _responder(peer, FramedStream(fake, remote_peer_id="peer"))
    with trio.move_on_after(0.2):
        await runner.run()
    assert fake.resets == 1 and fake.closes == 0
    assert runner.close_reason == "cancelled"
    assert any(isinstance(e, Closed) and e.reason == "cancelled" for e in peer.events)


class _NoHost:
    peer_id = Identity.generate().peer_id

    def set_sync_handler(self, handler: object) -> None:
        return None
