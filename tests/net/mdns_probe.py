"""One node for the mDNS namespace test: ``python -m tests.net.mdns_probe --ip 10.231.0.1``.

Runs a libp2p host on ``--ip``, announces it with :class:`MdnsDiscovery` (only on that
interface) and prints one JSON line per event: ``{"self": id}``, ``{"found": id,
"addrs": [...]}``, and with ``--sync N`` (N envelopes of its own in a shared test space):
after discovery the smaller peer id dials, the two sync over ``/mycelium/sync/1``, and
``{"synced": {author_hex: seq}}`` is printed once the space holds ``--expect`` authors.
Exits after ``--seconds`` or when done.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import trio

from mycelium.identity.identity import Identity
from mycelium.net.host import open_host
from mycelium.net.mdns import MdnsDiscovery

SPACE = b"\x07" * 32


def emit(**item: object) -> None:
    print(json.dumps(item), flush=True)


async def main(args: argparse.Namespace) -> None:
    from tests.net.syncpeer import SyncPeer

    identity = Identity.generate()
    with trio.move_on_after(args.seconds):
        async with open_host(identity, [f"/ip4/{args.ip}/tcp/0"]) as host:
            peer = SyncPeer(host)
            peer.store.add_space(SPACE)
            if args.sync:
                peer.write(SPACE, args.sync)
            emit(self=host.peer_id, addrs=host.addrs())
            async with (
                MdnsDiscovery(host.peer_id, host.addrs(), interfaces=[args.ip]) as mdns,
                trio.open_nursery() as nursery,
            ):
                async for found in mdns.peers():
                    emit(found=found.peer_id, addrs=list(found.addrs), seen=mdns.seen_count)
                    if not args.sync:
                        if mdns.seen_count >= args.expect - 1:
                            # Stay announced a little: the others may not have seen us yet.
                            nursery.start_soon(stop_after, 3.0, nursery)
                        continue
                    if found.peer_id > host.peer_id:  # the smaller id dials
                        nursery.start_soon(dial, peer, found.addrs[0], found.peer_id)
                    nursery.start_soon(report_when_synced, peer, args.expect, nursery)


async def stop_after(seconds: float, nursery: trio.Nursery) -> None:
    await trio.sleep(seconds)
    nursery.cancel_scope.cancel()


async def dial(peer: object, addr: str, peer_id: str) -> None:
    from tests.net.syncpeer import SyncPeer

    assert isinstance(peer, SyncPeer)
    await peer.host.connect(addr)
    framed = await peer.host.open_sync_stream(peer_id)
    await peer.runner(peer_id, framed, initiator=True).run()


async def report_when_synced(peer: object, expect: int, nursery: trio.Nursery) -> None:
    from tests.net.syncpeer import SyncPeer

    assert isinstance(peer, SyncPeer)
    while len(peer.store.version_vector(SPACE)) < expect:
        await trio.sleep(0.05)
    emit(synced={k.hex(): v for k, v in peer.store.version_vector(SPACE).items()})
    await trio.sleep(2.0)  # let the other side finish too
    nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--ip", required=True)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--expect", type=int, default=2, help="nodes on the LAN, self included")
    parser.add_argument("--sync", type=int, default=0)
    sys.path.insert(0, os.getcwd())
    trio.run(main, parser.parse_args())
