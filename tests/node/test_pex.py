"""Peer-exchange announcements: accepted only for the authenticated sender's own addresses."""

from __future__ import annotations

from mycelium.codec import cbor
from mycelium.node.daemon import PEX_MAX_ADDRS, parse_announcement, pex_topic
from mycelium.sync.gossip import topic_for_space

ME = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
OTHER = "12D3KooWSqHGaZwoJLZtStrr82BtuU7z51RNNVw7E7CHjFqq5f2G"
ADDR = f"/ip4/10.0.0.5/tcp/4001/p2p/{ME}"


def test_well_formed_announcement_gives_the_senders_addresses() -> None:
    data = cbor.encode({"peer": ME, "addrs": [ADDR, f"/ip4/10.0.0.6/tcp/1/p2p/{OTHER}"]})
    assert parse_announcement(data, ME) == [ADDR]


def test_announcement_naming_someone_else_is_ignored() -> None:
    assert parse_announcement(cbor.encode({"peer": OTHER, "addrs": [ADDR]}), ME) is None


def test_garbage_and_wrong_shapes_are_ignored() -> None:
    assert parse_announcement(b"\xff\x00", ME) is None
    assert parse_announcement(cbor.encode([ME]), ME) is None
    assert parse_announcement(cbor.encode({"peer": ME, "addrs": "x"}), ME) is None
    assert parse_announcement(cbor.encode({"peer": ME, "addrs": [1]}), ME) is None
    assert parse_announcement(b"\x00" * 5000, ME) is None


def test_address_count_is_bounded_and_topic_is_per_space() -> None:
    data = cbor.encode({"peer": ME, "addrs": [ADDR] * 20})
    assert len(parse_announcement(data, ME) or []) == PEX_MAX_ADDRS
    space = bytes(32)
    assert pex_topic(space) == topic_for_space(space) + "/peers"
