"""Per-peer frame budget over real hosts: bytes alone do not bound a peer's cost (a
flood of tiny frames is cheap to send and costs a decode each), so frames are charged
to a second token bucket, both by ``FramedStream.receive_frame`` and by the sync driver."""

from __future__ import annotations

import contextlib

import pytest
import trio

from mycelium.codec.frames import encode_frame
from mycelium.errors import MyceliumError
from mycelium.net.framing import FramedStream
from mycelium.net.host import HostLimits
from mycelium.net.peers import PeerManager, PeerPolicy
from mycelium.sync.messages import Ack, encode_message
from mycelium.sync.session import CaughtUp

from .syncpeer import SyncPeer, wait_until
from .util import hosts

pytestmark = pytest.mark.timeout(60)

S1 = b"\x01" * 32
LIMITS = HostLimits(rate_frames_s=50, burst_frames=200)


async def test_tiny_frame_flood_is_cut_off_by_the_frame_budget() -> None:
    got: list[int] = []
    failures: list[str] = []

    async def count(peer_id: str, framed: FramedStream) -> None:
        try:
            while await framed.receive_frame() is not None:
                got.append(1)
        except MyceliumError as exc:
            failures.append(exc.reason)

    with trio.fail_after(20):
        async with hosts(2, LIMITS) as (server, client):
            server.set_sync_handler(count)
            pm = PeerManager(server, PeerPolicy(strikes_to_ban=1))
            server.set_peer_gate(pm)
            await client.connect(server.addrs()[0])
            framed = await client.open_sync_stream(server.peer_id)
            await framed.send(encode_frame(b"\xa0") * 150)  # within the burst
            await wait_until(lambda: len(got) == 150)
            assert not failures
            with contextlib.suppress(MyceliumError):
                await framed.send(encode_frame(b"\xa0") * 1000)
            await wait_until(lambda: bool(failures))
            assert failures == ["rate_limited"]
            assert len(got) < 150 + 1000  # cut off before the flood is delivered
            assert server.metrics()["rate_limited"] == 1
            assert pm.is_banned(client.peer_id)


async def test_sync_driver_charges_decoded_frames() -> None:
    """An honest sync stays within the budget; a keepalive flood on the live session
    then ends it with ``rate_limited`` on the receiving side."""
    with trio.fail_after(30):
        async with hosts(2, LIMITS) as (ha, hb), trio.open_nursery() as nursery:
            a, b = SyncPeer(ha), SyncPeer(hb)
            for p in (a, b):
                p.store.add_space(S1)
            a.write(S1, 60)
            b.write(S1, 40)
            nursery.start_soon(a.sync_with, b)
            await wait_until(lambda: any(isinstance(e, CaughtUp) for e in a.events)
                             and any(isinstance(e, CaughtUp) for e in b.events))
            assert a.store.version_vector(S1) == b.store.version_vector(S1)
            assert hb.metrics()["rate_limited"] == 0
            (ra,) = a.runners
            keepalive = encode_frame(encode_message(Ack(0, 0)))
            with contextlib.suppress(MyceliumError):
                await ra.framed.send(keepalive * 1000)
            await wait_until(lambda: b.runners[0].close_reason is not None)
            assert b.runners[0].close_reason == "rate_limited"
            assert hb.metrics()["rate_limited"] == 1
            nursery.cancel_scope.cancel()
