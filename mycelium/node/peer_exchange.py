"""Peer exchange: how members of a space learn each other's addresses (``protocols/sync.md``
§9a).

Each node announces its own addresses on a per-space "peers" topic. GossipSub signs
messages (strict signing), so an announcement is accepted only from the peer it names;
topics are hashes of space ids, so only members of a space learn its members' addresses.
That is how a node that only knows a hub (or whose Wi-Fi blocks mDNS) meets the others.

What an announcement may make the node dial is limited (issue 16 §3): only senders the
space's control log lists as members are heard, only addresses in the scopes the node is
connected over are kept (:func:`mycelium.net.pex.accept_addresses`), and every learned
address goes through :class:`~mycelium.net.peers.PeerManager`'s caps before the daemon
sees it (``learned``), which also caps its keeper tasks.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import trio

from mycelium.sync import topic_for_space

log = logging.getLogger("mycelium.node.pex")

#: Every member announces its addresses on each shared space's peers topic this often.
PEX_INTERVAL_S = 30.0
PEX_MAX_ADDRS = 8
MAX_ANNOUNCEMENT_BYTES = 4096


class Scopes(Protocol):
    """What the exchange needs from the host (:class:`mycelium.net.host.MyceliumHost`)."""

    def connection_scopes(self) -> set[str]: ...


#: ``learned(peer_id, addrs)``: the daemon's hook for a peer an announcement taught us
#: (all its known addresses, already capped by PeerManager).
Learned = Callable[[str, list[str]], None]


def pex_topic(space: bytes) -> str:
    """The peer-exchange topic of a space (beside its envelope topic)."""
    return topic_for_space(space) + "/peers"


def parse_announcement(data: bytes, from_peer: str) -> list[str] | None:
    """Addresses from a peer announcement, or None unless it is well formed and names
    exactly the (signature-authenticated) sender."""
    from mycelium.codec import cbor
    from mycelium.errors import MyceliumError

    try:
        msg = cbor.decode(data, max_bytes=MAX_ANNOUNCEMENT_BYTES)
    except MyceliumError:
        return None
    if not isinstance(msg, dict) or msg.get("peer") != from_peer:
        return None
    addrs = msg.get("addrs")
    if not isinstance(addrs, list) or not all(isinstance(a, str) and len(a) < 256 for a in addrs):
        return None
    suffix = "/p2p/" + from_peer
    return [a for a in addrs[:PEX_MAX_ADDRS] if a.endswith(suffix)]


class PeerExchange:
    """Announce our addresses and hear members' announcements, for every space we hold.

    ``is_member(space, peer_id)``: does the space's control log list this peer?
    ``peers``: the node's :class:`~mycelium.net.peers.PeerManager` (caps and bans).
    """

    def __init__(self, *, own_peer_id: str, gossip: Any, host: Scopes, peers: Any,
                 is_member: Callable[[bytes, str], bool], learned: Learned) -> None:
        self.own_peer_id = own_peer_id
        self.gossip = gossip
        self.host = host
        self.peers = peers
        self.is_member = is_member
        self.learned = learned

    async def announce_loop(self, spaces: Callable[[], Iterable[bytes]],
                            addrs: Callable[[], list[str]]) -> None:
        """Publish our addresses on every space's peers topic, about every 30 s."""
        from mycelium.codec import cbor

        await trio.sleep(1.0)
        while True:
            payload = cbor.encode({"peer": self.own_peer_id, "addrs": addrs()[:PEX_MAX_ADDRS]})
            for space in list(spaces()):
                try:
                    await self.gossip.publish(pex_topic(space), payload)
                except Exception as exc:  # gossip is best effort
                    log.debug("peer announcement failed: %r", exc)
            await trio.sleep(PEX_INTERVAL_S * random.uniform(0.8, 1.2))

    async def receive(self, space: bytes) -> None:
        """Hear the announcements on ``space``'s peers topic (until cancelled)."""
        channel = await self.gossip.subscribe(pex_topic(space))
        async with channel:
            async for from_peer, data in channel:
                self.on_announcement(space, from_peer, data)

    def on_announcement(self, space: bytes, from_peer: str, data: bytes) -> None:
        """One announcement: checked, filtered, capped, then handed to ``learned``."""
        from mycelium.net.pex import accept_addresses

        announced = parse_announcement(data, from_peer)
        if announced is None or from_peer == self.own_peer_id:
            return
        if not self.is_member(space, from_peer):
            self.peers.metrics["pex_not_member"] += 1
            return
        addrs = accept_addresses(announced, self.host.connection_scopes())
        state = self.peers.add(from_peer, addrs, source="pex")
        if state is not None:
            self.learned(from_peer, list(state.addrs))


__all__ = ["PEX_INTERVAL_S", "PEX_MAX_ADDRS", "PeerExchange", "parse_announcement",
           "pex_topic"]
