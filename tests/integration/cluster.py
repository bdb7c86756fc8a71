"""Helpers for tests that run real `mycelium run` processes (see test_nodes.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from simnet.backends.process import NodeProcess


def vectors(status: dict[str, Any], space_id: str) -> dict[str, int] | None:
    for space in status["spaces"]:
        if space["space_id"] == space_id:
            return dict(space["vector"])
    return None


async def converged(nodes: list[NodeProcess], space_id: str, timeout: float) -> dict[str, int]:
    """Poll until every node reports the same vector for the space; return it."""
    last: list[Any] = []
    with trio.move_on_after(timeout):
        while True:
            last = [vectors(await n.status(), space_id) for n in nodes]
            if last[0] and all(v == last[0] for v in last):
                return last[0]
            await trio.sleep(0.5)
    logs = "\n".join(f"--- {n.name}\n{n.log_tail(15)}" for n in nodes)
    raise AssertionError(f"no convergence within {timeout} s: {json.dumps(last)}\n{logs}")


async def community(tmp_path: Path, count: int) -> tuple[list[NodeProcess], str]:
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


def run_args(port: int, peers: list[tuple[int, NodeProcess]]) -> list[str]:
    args = ["--listen", f"/ip4/127.0.0.1/tcp/{port}", "--no-mdns", "--api", "127.0.0.1:0"]
    for peer_port, peer in peers:
        assert peer.identity is not None
        args += ["--peer", f"/ip4/127.0.0.1/tcp/{peer_port}/p2p/{peer.identity.peer_id}"]
    return args


async def put(node: NodeProcess, doc_id: str, title: str) -> None:
    data = json.dumps({"title": title, "quantity": 1, "unit": "kg"})
    await node.op("doc_put", ["doc", "put", "market", "products", doc_id, "--data", data],
                  space="market", coll="products", doc_id=doc_id,
                  data={"title": title, "quantity": 1, "unit": "kg"})


async def docs(node: NodeProcess) -> list[str]:
    listed = await node.op("doc_list", ["doc", "list", "market", "products"],
                           space="market", coll="products")
    return sorted(d["_id"] for d in listed["docs"])


async def stop_all(nodes: list[NodeProcess]) -> None:
    with trio.CancelScope(shield=True):
        for node in nodes:
            await node.stop()
