"""A fresh node restores a community space from one CID, then syncs the tail from a peer.

Real ``mycelium run`` processes on loopback (py-libp2p) and the real IPFS node: the
member never joined by invite code; the archive is all it starts from. The writer keeps
writing after the archive; the running member's node fetches those deltas by sync, and a
member whose node is not running gets them with ``archive pull --peer``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from simnet.backends.process import NodeProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _listen(port: int) -> list[str]:
    return ["--listen", f"/ip4/127.0.0.1/tcp/{port}", "--no-mdns", "--api", "127.0.0.1:0"]


async def _titles(node: NodeProcess) -> dict[str, str]:
    listed = await node.cli_json("doc", "list", "market", "products")
    return {str(d["_id"]): str(d["title"]) for d in listed["docs"]}


async def _put(node: NodeProcess, doc_id: str, title: str) -> None:
    await node.cli("doc", "put", "market", "products", doc_id, "--data",
                   json.dumps({"title": title, "quantity": 1, "unit": "kg"}))


async def test_restore_from_cid_then_sync_the_tail(tmp_path: Path, ipfs_api: str) -> None:
    writer = NodeProcess("writer", tmp_path / "writer", direct_api=True)
    member = NodeProcess("member", tmp_path / "member", direct_api=True)
    offline = NodeProcess("offline", tmp_path / "offline")  # never runs: pull --peer
    await writer.init()
    await writer.cli_json("space", "create", "market")
    for node in (member, offline):
        await writer.cli_json("space", "invite", "market", (await node.init()).did)
    for i in range(5):
        await _put(writer, f"archived-{i}", f"in the archive {i}")
    cid = (await writer.cli_json("archive", "push", "market", "--ipfs-api", ipfs_api))["cid"]
    for i in range(3):
        await _put(writer, f"tail-{i}", f"after the archive {i}")
    expected = await _titles(writer)
    assert len(expected) == 8

    port = free_port()
    assert writer.identity is not None
    try:
        # The member's node runs alone first: were the writer reachable, the member would
        # get the space back from it by sync alone (the restore listing, sync.md §11) and
        # the archive would bring nothing. Then the writer starts and dials the member.
        member_port = free_port()
        assert member.identity is not None
        await member.start(_listen(member_port))
        pulled = await member.cli_json("archive", "pull", cid, "--ipfs-api", ipfs_api)
        assert pulled["name"] == "market" and pulled["accepted"] == pulled["envelopes"]
        assert set(await _titles(member)) == {f"archived-{i}" for i in range(5)}
        await writer.start([*_listen(port), "--peer",
                            f"/ip4/127.0.0.1/tcp/{member_port}/p2p/{member.identity.peer_id}"])
        got: dict[str, str] = {}
        with trio.move_on_after(60):
            while got != expected:
                got = await _titles(member)
                await trio.sleep(0.5)  # polling the positive signal (same docs), bounded
        assert got == expected, (got, member.log_tail(20))

        writer_addr = f"/ip4/127.0.0.1/tcp/{port}/p2p/{writer.identity.peer_id}"
        restored = await offline.cli_json("archive", "pull", cid, "--ipfs-api", ipfs_api,
                                          "--peer", writer_addr, timeout=90)
        assert restored["accepted"] == restored["envelopes"]
        assert restored["tail"] == [{"peer": writer_addr, "received": 3, "caught_up": True,
                                     "error": None}]
        assert await _titles(offline) == expected
    finally:
        with trio.CancelScope(shield=True):
            await member.stop()
            await writer.stop()
