"""Real `mycelium run` processes on loopback: convergence, catch-up after restart, removal.

These start actual node processes (py-libp2p over TCP + Noise + Yamux on 127.0.0.1) and
drive them only through the CLI, as a user or operator would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from simnet.backends.process import NodeProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _vectors(status: dict[str, Any], space_id: str) -> dict[str, int] | None:
    for space in status["spaces"]:
        if space["space_id"] == space_id:
            return dict(space["vector"])
    return None


async def _converged(nodes: list[NodeProcess], space_id: str, timeout: float) -> dict[str, int]:
    """Poll until every node reports the same vector for the space; return it."""
    last: list[Any] = []
    with trio.move_on_after(timeout):
        while True:
            last = [_vectors(await n.status(), space_id) for n in nodes]
            if last[0] and all(v == last[0] for v in last):
                return last[0]
            await trio.sleep(0.5)
    logs = "\n".join(f"--- {n.name}\n{n.log_tail(15)}" for n in nodes)
    raise AssertionError(f"no convergence within {timeout} s: {json.dumps(last)}\n{logs}")


async def _community(tmp_path: Path, count: int) -> tuple[list[NodeProcess], str]:
    """``count`` initialised nodes; node 0 created space `market` and invited the others."""
    nodes = [NodeProcess(f"n{i}", tmp_path / f"n{i}", direct_api=True) for i in range(count)]
    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(node.init)
    created = await nodes[0].cli_json("space", "create", "market")
    space_id = created["space_id"]
    for node in nodes[1:]:
        assert node.identity is not None
        code = (await nodes[0].cli_json("space", "invite", "market", node.identity.did))["invite"]
        await node.cli("space", "join", code)
    return nodes, space_id


def _run_args(port: int, peers: list[tuple[int, NodeProcess]]) -> list[str]:
    args = ["--listen", f"/ip4/127.0.0.1/tcp/{port}", "--no-mdns", "--api", "127.0.0.1:0"]
    for peer_port, peer in peers:
        assert peer.identity is not None
        args += ["--peer", f"/ip4/127.0.0.1/tcp/{peer_port}/p2p/{peer.identity.peer_id}"]
    return args


async def _put(node: NodeProcess, doc_id: str, title: str) -> None:
    data = json.dumps({"title": title, "quantity": 1, "unit": "kg"})
    await node.op("doc_put", ["doc", "put", "market", "products", doc_id, "--data", data],
                  space="market", coll="products", doc_id=doc_id,
                  data={"title": title, "quantity": 1, "unit": "kg"})


async def _docs(node: NodeProcess) -> list[str]:
    listed = await node.op("doc_list", ["doc", "list", "market", "products"],
                           space="market", coll="products")
    return sorted(d["_id"] for d in listed["docs"])


async def _stop_all(nodes: list[NodeProcess]) -> None:
    with trio.CancelScope(shield=True):
        for node in nodes:
            await node.stop()


async def test_three_nodes_write_concurrently_and_converge(tmp_path: Path) -> None:
    nodes, space_id = await _community(tmp_path, 3)
    ports = [free_port() for _ in nodes]
    try:
        await nodes[0].start(_run_args(ports[0], []))
        await nodes[1].start(_run_args(ports[1], [(ports[0], nodes[0])]))
        await nodes[2].start(_run_args(ports[2], [(ports[0], nodes[0]), (ports[1], nodes[1])]))

        async def writer(i: int, node: NodeProcess) -> None:
            for k in range(8):
                await _put(node, f"n{i}-{k}", f"item {k} from {node.name}")

        async with trio.open_nursery() as nursery:
            for i, node in enumerate(nodes):
                nursery.start_soon(writer, i, node)
        vector = await _converged(nodes, space_id, timeout=60)
        assert len(vector) == 3
        expected = sorted(f"n{i}-{k}" for i in range(3) for k in range(8))
        for node in nodes:
            assert await _docs(node) == expected
    finally:
        await _stop_all(nodes)


async def test_stopped_node_catches_up_after_restart(tmp_path: Path) -> None:
    nodes, space_id = await _community(tmp_path, 2)
    ports = [free_port() for _ in nodes]
    try:
        await nodes[0].start(_run_args(ports[0], []))
        await nodes[1].start(_run_args(ports[1], [(ports[0], nodes[0])]))
        await _put(nodes[0], "before", "before the stop")
        await _converged(nodes, space_id, timeout=30)
        await nodes[1].kill()  # a crash, not a clean stop
        for k in range(5):
            await _put(nodes[0], f"during-{k}", "while n1 was down")
        await nodes[1].start()
        await _converged(nodes, space_id, timeout=60)
        assert await _docs(nodes[1]) == ["before", *[f"during-{k}" for k in range(5)]]
    finally:
        await _stop_all(nodes)


async def test_removed_member_stops_receiving_readable_data(tmp_path: Path) -> None:
    nodes, space_id = await _community(tmp_path, 3)
    ports = [free_port() for _ in nodes]
    try:
        await nodes[0].start(_run_args(ports[0], []))
        await nodes[1].start(_run_args(ports[1], [(ports[0], nodes[0])]))
        await nodes[2].start(_run_args(ports[2], [(ports[0], nodes[0])]))
        await _put(nodes[0], "shared", "everyone reads this")
        await _converged(nodes, space_id, timeout=60)
        assert nodes[2].identity is not None
        await nodes[0].op("space_remove", ["space", "remove", "market", nodes[2].identity.did],
                          space="market", did=nodes[2].identity.did)
        await _put(nodes[0], "secret", "only for the remaining members")
        await _put(nodes[1], "secret-2", "also only for the remaining members")
        await _converged(nodes[:2], space_id, timeout=60)
        assert await _docs(nodes[1]) == ["secret", "secret-2", "shared"]
        await trio.sleep(3)  # give n2 every chance to receive whatever it would
        docs_c = await _docs(nodes[2])
        assert "shared" in docs_c
        assert "secret" not in docs_c and "secret-2" not in docs_c
    finally:
        await _stop_all(nodes)
