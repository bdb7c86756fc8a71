"""After a restore without a running node: sync the tail once from given peers.

``mycelium archive pull CID --peer MULTIADDR`` restores the archive, then dials each peer
(libp2p, loopback or LAN), runs one ordinary sync session (``sync.SyncSession`` through
``net.sync_driver.SessionRunner``, the same path a running node uses) until the peer says
it has sent everything it holds for the restored space (``CaughtUp``), and closes it. With
a running node none of this is needed: the node's own sessions fetch the tail.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import trio

from mycelium.errors import MyceliumError
from mycelium.identity.didkey import public_key_from_peer_id
from mycelium.net.host import open_host
from mycelium.net.sync_driver import SessionRunner
from mycelium.spaces.access import member_policy
from mycelium.sync.session import CaughtUp, Closed, EnvelopesIngested, SyncSession

log = logging.getLogger(__name__)

#: Loopback-only listener: the host only dials out.
LISTEN = ["/ip4/127.0.0.1/tcp/0"]
DEFAULT_TIMEOUT_S = 60.0


async def sync_tail(soil: Any, space_id: bytes, peers: Sequence[str], *,
                    timeout: float = DEFAULT_TIMEOUT_S) -> list[dict[str, Any]]:
    """One session per peer (in turn, each bounded by ``timeout``); a summary per peer:
    ``{"peer", "received", "caught_up", "error"}``. Never raises for an unreachable or
    misbehaving peer: the restore already succeeded, the tail is a bonus."""
    results = []
    async with open_host(soil.identity, LISTEN) as host:
        for maddr in peers:
            results.append(await _one(host, soil, space_id, maddr, timeout))
    return results


async def _one(host: Any, soil: Any, space_id: bytes, maddr: str,
               timeout: float) -> dict[str, Any]:
    summary: dict[str, Any] = {"peer": maddr, "received": 0, "caught_up": False, "error": None}
    done = trio.Event()

    def on_event(event: object) -> None:
        if isinstance(event, EnvelopesIngested) and event.space == space_id:
            summary["received"] += len(event.result.accepted)
        elif isinstance(event, CaughtUp) and event.space == space_id:
            summary["caught_up"] = True
            done.set()
        elif isinstance(event, Closed):
            summary["error"] = summary["error"] or (None if summary["caught_up"] else event.reason)
            done.set()

    with trio.move_on_after(timeout) as scope:
        try:
            peer_id = await host.connect(maddr)
            framed = await host.open_sync_stream(peer_id)
        except MyceliumError as exc:
            summary["error"] = f"{exc.reason}: {exc}"
            return summary
        session = SyncSession(soil, local_id=soil.identity.public_key,
                              remote_id=public_key_from_peer_id(peer_id), initiator=True,
                              now=trio.current_time(), authorize=member_policy(soil))
        runner = SessionRunner(session, framed, on_event=on_event)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.run)
            await done.wait()
            session.close("tail synced")
            runner.poke()
    if scope.cancelled_caught and not summary["caught_up"]:
        summary["error"] = f"timeout after {timeout:g} s"
    log.info("tail sync with %s: %s", maddr, summary)
    return summary
