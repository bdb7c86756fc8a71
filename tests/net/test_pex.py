"""Peer-exchange address filtering (issue 16 §3, ``protocols/sync.md`` §9a)."""

from __future__ import annotations

import itertools
from pathlib import Path

from mycelium.net.peers import PeerManager, PeerPolicy
from mycelium.net.pex import LOOPBACK, PRIVATE, PUBLIC, accept_addresses, address_scope

PEER = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"


def a(addr: str) -> str:
    return f"{addr}/p2p/{PEER}"


def test_scopes() -> None:
    assert address_scope(a("/ip4/127.0.0.1/tcp/4001")) == ("ip4", LOOPBACK)
    assert address_scope(a("/ip4/10.1.2.3/tcp/4001")) == ("ip4", PRIVATE)
    assert address_scope(a("/ip4/192.168.1.9/tcp/4001")) == ("ip4", PRIVATE)
    assert address_scope(a("/ip6/fd00::1/tcp/4001")) == ("ip6", PRIVATE)
    assert address_scope(a("/ip4/8.8.8.8/tcp/4001")) == ("ip4", PUBLIC)
    for bad in ("/dns4/intranet-1.corp/tcp/80", "/ip4/10.0.0.1/udp/4001/quic",
                "/ip4/10.0.0.1/tcp/0", "/ip4/224.0.0.1/tcp/4001", "/ip4/0.0.0.0/tcp/1",
                "/ip6/10.0.0.1/tcp/1", "/ip4/::1/tcp/1", "/ip4/10.0.0.1/tcp/99999"):
        assert address_scope(a(bad)) is None, bad
    assert address_scope("/ip4/10.0.0.1/tcp/1") is None  # no /p2p/


def test_only_scopes_we_are_connected_over_and_one_per_family() -> None:
    announced = [a("/dns4/intranet-1.corp/tcp/80"), a("/ip4/10.0.0.5/tcp/22"),
                 a("/ip4/127.0.0.1/tcp/4001"), a("/ip4/127.0.0.2/tcp/4001"),
                 a("/ip6/::1/tcp/4001"), a("/ip4/8.8.8.8/tcp/1")]
    assert accept_addresses(announced, {LOOPBACK}) == [a("/ip4/127.0.0.1/tcp/4001"),
                                                       a("/ip6/::1/tcp/4001")]
    assert accept_addresses(announced, {PRIVATE}) == [a("/ip4/10.0.0.5/tcp/22")]
    assert accept_addresses(announced, set()) == []


class _Dialer:
    peer_id = "me"

    async def connect(self, maddr: str) -> str:
        raise AssertionError("not dialled here")

    async def disconnect(self, peer_id: str) -> None:
        return None

    def connected_peers(self) -> list[str]:
        return []


def test_two_thousand_announcement_rounds_stay_within_the_caps() -> None:
    # Issue 16 §3: 2 000 rounds of 8 fresh addresses gave 16 000 dial targets for one id.
    pm = PeerManager(_Dialer(), PeerPolicy(), clock=itertools.count().__next__)
    for round_ in range(2000):
        announced = [a(f"/ip4/10.{round_ % 250}.{i}.{round_ // 250}/tcp/22") for i in range(8)]
        pm.add(PEER, accept_addresses(announced, {PRIVATE}), source="pex")
    state = pm.get(PEER)
    assert state is not None and len(state.addrs) <= PeerPolicy().max_addrs_per_peer


def test_node_hears_only_members_and_keeps_within_the_caps(tmp_path: Path) -> None:
    """The node's announcement path (``PeerExchange`` wired as the daemon wires it, with a
    real store): a non-member's announcements are ignored; a member's 2 000 rounds of
    fresh addresses leave at most ``max_addrs_per_peer`` dial targets, all in a connected
    scope."""
    from mycelium.codec import cbor
    from mycelium.identity.identity import Identity
    from mycelium.node.daemon import Node, NodeConfig
    from mycelium.node.peer_exchange import PeerExchange
    from mycelium.paths import NodePaths
    from mycelium.spaces import service
    from mycelium.store.soil import Soil

    class Host:
        def connection_scopes(self) -> set[str]:
            return {PRIVATE}

    member, stranger = Identity.generate(), Identity.generate()
    with Soil.open(tmp_path / "soil.db", Identity.generate()) as soil:
        space = service.create_space(soil, "market")
        service.invite(soil, space, member.did)
        node = Node(NodePaths(tmp_path), soil.identity, soil, NodeConfig())
        node.bans = PeerManager(_Dialer(), PeerPolicy(), clock=itertools.count().__next__)
        pex = PeerExchange(own_peer_id=node.identity.peer_id, gossip=None, host=Host(),
                           peers=node.bans, is_member=node._is_member_of,
                           learned=node._pex_learned)
        for who, rounds in ((member, 2000), (stranger, 200)):
            suffix = f"/p2p/{who.peer_id}"
            for r in range(rounds):
                addrs = [f"/ip4/10.{r % 250}.{i}.{r // 250}/tcp/22{suffix}" for i in range(7)]
                addrs.append(f"/dns4/intranet-{r}.corp/tcp/80{suffix}")
                pex.on_announcement(space, who.peer_id,
                                    cbor.encode({"peer": who.peer_id, "addrs": addrs}))
        assert stranger.peer_id not in node.peers
        assert node.bans.metrics["pex_not_member"] == 200
        addrs = node.peers[member.peer_id].addrs
        assert 0 < len(addrs) <= PeerPolicy().max_addrs_per_peer
        assert all(a.startswith("/ip4/10.") for a in addrs)
