"""Real `mycelium run` processes on loopback: convergence, catch-up after restart, removal.

These start actual node processes (py-libp2p over TCP + Noise + Yamux on 127.0.0.1) and
drive them only through the CLI, as a user or operator would.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import trio

from simnet.backends.process import NodeProcess, free_port

from .cluster import community, converged, docs, put, run_args, stop_all, vectors

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def test_three_nodes_write_concurrently_and_converge(tmp_path: Path) -> None:
    nodes, space_id = await community(tmp_path, 3)
    ports = [free_port() for _ in nodes]
    try:
        await nodes[0].start(run_args(ports[0], []))
        await nodes[1].start(run_args(ports[1], [(ports[0], nodes[0])]))
        await nodes[2].start(run_args(ports[2], [(ports[0], nodes[0]), (ports[1], nodes[1])]))

        async def writer(i: int, node: NodeProcess) -> None:
            for k in range(8):
                await put(node, f"n{i}-{k}", f"item {k} from {node.name}")

        async with trio.open_nursery() as nursery:
            for i, node in enumerate(nodes):
                nursery.start_soon(writer, i, node)
        vector = await converged(nodes, space_id, timeout=60)
        assert len(vector) == 3
        expected = sorted(f"n{i}-{k}" for i in range(3) for k in range(8))
        for node in nodes:
            assert await docs(node) == expected
    finally:
        await stop_all(nodes)


async def test_stopped_node_catches_up_after_restart(tmp_path: Path) -> None:
    nodes, space_id = await community(tmp_path, 2)
    ports = [free_port() for _ in nodes]
    try:
        await nodes[0].start(run_args(ports[0], []))
        await nodes[1].start(run_args(ports[1], [(ports[0], nodes[0])]))
        await put(nodes[0], "before", "before the stop")
        await converged(nodes, space_id, timeout=30)
        await nodes[1].kill()  # a crash, not a clean stop
        for k in range(5):
            await put(nodes[0], f"during-{k}", "while n1 was down")
        await nodes[1].start()
        await converged(nodes, space_id, timeout=60)
        assert await docs(nodes[1]) == ["before", *[f"during-{k}" for k in range(5)]]
    finally:
        await stop_all(nodes)


async def test_removed_member_stops_receiving_readable_data(tmp_path: Path) -> None:
    nodes, space_id = await community(tmp_path, 3)
    ports = [free_port() for _ in nodes]
    try:
        await nodes[0].start(run_args(ports[0], []))
        await nodes[1].start(run_args(ports[1], [(ports[0], nodes[0])]))
        await nodes[2].start(run_args(ports[2], [(ports[0], nodes[0])]))
        await put(nodes[0], "shared", "everyone reads this")
        await converged(nodes, space_id, timeout=60)
        assert nodes[2].identity is not None
        await nodes[0].op("space_remove", ["space", "remove", "market", nodes[2].identity.did],
                          space="market", did=nodes[2].identity.did)
        await put(nodes[0], "secret", "only for the remaining members")
        await put(nodes[1], "secret-2", "also only for the remaining members")
        written = time.time()
        vector = await converged(nodes[:2], space_id, timeout=60)
        assert await docs(nodes[1]) == ["secret", "secret-2", "shared"]
        await received_all_it_would(nodes[2], nodes[0], space_id, vector, written)
        docs_c = await docs(nodes[2])
        assert "shared" in docs_c
        assert "secret" not in docs_c and "secret-2" not in docs_c
    finally:
        await stop_all(nodes)


async def received_all_it_would(removed: NodeProcess, admin: NodeProcess, space_id: str,
                                 vector: dict[str, int], written: float) -> None:
    """Wait for a positive sign that ``removed`` got whatever it would get (no sleep that
    passes vacuously on a slow machine): it holds every envelope the members hold (today:
    sessions carry ciphertext to a removed member, who cannot open it), or it knows it
    was removed and completed an anti-entropy round with the admin after the writes."""
    assert admin.identity is not None
    status: dict[str, Any] = {}
    with trio.move_on_after(90):
        while True:
            status = await removed.status()
            if vectors(status, space_id) == vector:
                return
            space = next(s for s in status["spaces"] if s["space_id"] == space_id)
            synced = [p.get("last_sync") for p in status["peers"]
                      if p["peer_id"] == admin.identity.peer_id]
            if space.get("role") is None and synced and synced[0] and datetime.fromisoformat(
                    synced[0].replace("Z", "+00:00")).timestamp() > written + 1:
                return
            await trio.sleep(0.5)
    raise AssertionError(f"the removed node never caught up: {json.dumps(status)[:2000]}")


async def test_two_nodes_find_each_other_with_mdns_on_loopback(tmp_path: Path) -> None:
    """No --peer: the nodes must discover each other by multicast DNS alone."""
    nodes, space_id = await community(tmp_path, 2)
    try:
        for node in nodes:
            await node.start(["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"])
        await put(nodes[0], "found-by-mdns", "no static peer was given")
        await converged(nodes, space_id, timeout=60)
        # Whoever dialled first can only have learned the other by mDNS; the other side
        # may record the peer as "inbound", or as "pex" when the dialler's peer
        # announcement (gossip over that same connection) overtakes the inbound sync
        # stream. So: mDNS on at least one side, and nothing static anywhere.
        seen: dict[tuple[int, int], str] = {}
        for i, node in enumerate(nodes):
            other = nodes[1 - i]
            assert other.identity is not None
            status = await node.status()
            for p in status["peers"]:
                if p["peer_id"] == other.identity.peer_id:
                    seen[(i, 1 - i)] = p["source"]
        assert "mdns" in seen.values(), seen
        assert "static" not in seen.values(), seen
    finally:
        await stop_all(nodes)


async def test_peer_exchange_lets_spokes_meet_and_survive_the_hub(tmp_path: Path) -> None:
    """n1 and n2 only know the hub n0 (no mDNS). Peer exchange introduces them, so after
    the hub goes down a write on n1 still reaches n2."""
    nodes, space_id = await community(tmp_path, 3)
    hub, n1, n2 = nodes
    ports = [free_port() for _ in nodes]
    try:
        await hub.start(run_args(ports[0], []))
        await n1.start(run_args(ports[1], [(ports[0], hub)]))
        await n2.start(run_args(ports[2], [(ports[0], hub)]))
        assert n1.identity is not None and n2.identity is not None
        with trio.fail_after(60):
            while True:
                peers = {p["peer_id"]: p for p in (await n2.status())["peers"]}
                spoke = peers.get(n1.identity.peer_id)
                if spoke is not None and spoke["state"] == "connected":
                    break
                await trio.sleep(0.5)
        await hub.stop()
        await put(n1, "while-hub-down", "travels spoke to spoke")
        await converged([n1, n2], space_id, timeout=60)
        assert "while-hub-down" in await docs(n2)
    finally:
        await stop_all(nodes)


async def test_sigterm_and_sigint_stop_the_node_cleanly(tmp_path: Path) -> None:
    import signal

    nodes, _ = await community(tmp_path, 1)
    node = nodes[0]
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            await node.start(run_args(free_port(), []))
            assert (node.home / "api.json").exists()
            proc = node._proc
            assert proc is not None
            proc.send_signal(signum)
            with trio.fail_after(15):
                await proc.wait()
            assert proc.returncode == 0, node.log_tail()
            assert not (node.home / "api.json").exists()
            assert "node stopped" in node.log_tail()
    finally:
        await stop_all(nodes)


async def test_invite_and_join_while_both_nodes_run(tmp_path: Path) -> None:
    """`space invite` on a running A, `space join CODE` on a running B: B receives the
    space, its key and its data without a restart."""
    nodes = [NodeProcess(f"n{i}", tmp_path / f"n{i}", direct_api=True) for i in range(2)]
    a, b = nodes
    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(node.init)
    ports = [free_port() for _ in nodes]
    try:
        await a.start(run_args(ports[0], []))
        await b.start(run_args(ports[1], [(ports[0], a)]))
        created = await a.cli_json("space", "create", "garden")
        await a.cli("doc", "put", "garden", "products", "seeds", "--data",
                    json.dumps({"title": "bean seeds", "quantity": 100, "unit": "pcs"}))
        assert b.identity is not None
        code = (await a.cli_json("space", "invite", "garden", b.identity.did))["invite"]
        await b.cli("space", "join", code)
        await converged(nodes, created["space_id"], timeout=60)
        got = await b.cli_json("doc", "get", "garden", "products", "seeds")
        assert got["doc"]["title"] == "bean seeds"
    finally:
        await stop_all(nodes)


async def test_first_run_on_an_empty_home_creates_identity_and_personal_space(
    tmp_path: Path,
) -> None:
    """README command 1: `mycelium run` with embedded defaults on a fresh home (loopback only
    here, as tests must not touch other networks)."""
    node = NodeProcess("fresh", tmp_path / "fresh", direct_api=True)
    try:
        await node.start(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
        status = await node.status()
        assert status["running"] and status["did"].startswith("did:key:z6Mk")
        assert [s["name"] for s in status["spaces"]] == ["personal"]
        assert (node.home / "keystore.json").exists()
        ident = await node.read_identity()
        assert ident.did == status["did"] and ident.peer_id == status["peer_id"]
    finally:
        await node.stop()
