"""Done-when of issue 12 §1 with real processes: two nodes that share no LAN (no mDNS, no
--peer) converge through a `mycelium relay`; the relay is killed with -9 mid-sync and
restarted, and nothing is lost on either side; a plaintext marker written to a community
space and to the personal space is found nowhere in the relay's files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from simnet.backends.process import NodeProcess, RelayProcess, free_port
from tests.integration.cluster import community, converged, stop_all

pytestmark = pytest.mark.slow


def _relay_args(relay: RelayProcess) -> list[str]:
    return ["--listen", f"/ip4/127.0.0.1/tcp/{free_port()}", "--no-mdns", "--api",
            "127.0.0.1:0", "--web", "off", "--relay", relay.pinned_url]


async def _put(node: NodeProcess, space: str, doc_id: str, title: str) -> None:
    data = {"title": title, "quantity": 1, "unit": "kg"}
    await node.op("doc_put", ["doc", "put", space, "products", doc_id, "--data",
                              json.dumps(data)], space=space, coll="products", doc_id=doc_id,
                  data=data)


async def _relay_status(node: NodeProcess) -> dict:
    status = await node.status()
    assert status["relays"], status
    return dict(status["relays"][0])


async def test_two_nodes_converge_through_a_relay_that_crashes(tmp_path: Path) -> None:
    relay = RelayProcess("relay", tmp_path / "relay")
    nodes, space_id = await community(tmp_path, 2)
    a, b = nodes
    try:
        await relay.start()
        await a.start(_relay_args(relay))
        await b.start(_relay_args(relay))
        await _put(a, "market", "before", "tomatoes")
        await converged(nodes, space_id, timeout=30)
        state = await _relay_status(a)
        assert state["state"] == "connected" and state["did"] == relay.did

        # A burst, and the relay dies with -9 while it is being synced.
        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(_put, a, "market", f"burst-{i}", f"crate {i}")
            await trio.sleep(0.3)
            await relay.kill()
        for i in range(5):  # written while the relay is down
            await _put(b, "market", f"offline-{i}", f"beans {i}")
        await relay.start()
        vector = await converged(nodes, space_id, timeout=60)
        assert sum(vector.values()) >= 46
        listed = await b.op("doc_list", ["doc", "list", "market", "products"],
                            space="market", coll="products")
        ids = {d["_id"] for d in listed["docs"]}
        assert {"before", *(f"burst-{i}" for i in range(40))} <= ids
        listed = await a.op("doc_list", ["doc", "list", "market", "products"],
                            space="market", coll="products")
        assert {f"offline-{i}" for i in range(5)} <= {d["_id"] for d in listed["docs"]}
        with trio.fail_after(20):
            while (await _relay_status(a))["backlog"] != 0:
                await trio.sleep(0.3)
    finally:
        await stop_all(nodes)
        await relay.stop()


async def test_relay_files_hold_no_plaintext(tmp_path: Path) -> None:
    relay = RelayProcess("relay", tmp_path / "relay")
    nodes, _ = await community(tmp_path, 1)
    (a,) = nodes
    marker_c = "MARKER-community-4f1d9e"
    marker_p = "MARKER-personal-8c2b7a"
    try:
        await relay.start()
        await a.start(_relay_args(relay))
        await _put(a, "market", "m1", marker_c)
        await a.op("doc_put", ["doc", "put", "personal", "diary", "d1", "--data",
                               json.dumps({"body": marker_p})],
                   space="personal", coll="diary", doc_id="d1", data={"body": marker_p})
        with trio.fail_after(30):  # both spaces reach the relay
            while True:
                st = await _relay_status(a)
                if st["state"] == "connected" and st["backlog"] == 0 and st["spaces"] >= 2:
                    break
                await trio.sleep(0.3)
        await relay.stop()
        files = [p for p in (tmp_path / "relay").rglob("*") if p.is_file()]
        assert any(p.name.startswith("relay.db") for p in files)
        blob = b"".join(p.read_bytes() for p in files)
        assert len(blob) > 4096  # the envelopes are there ...
        for marker in (marker_c, marker_p):  # ... but not their plaintext
            assert marker.encode() not in blob
            assert marker.encode("utf-16-le") not in blob
    finally:
        await stop_all(nodes)
        await relay.stop()
