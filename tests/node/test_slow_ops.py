"""A running node keeps answering and syncing while a slow operation is in progress.

``archive_push`` against an IPFS API stub on 127.0.0.1 that holds its ``dag/import``
request open until the test releases it: meanwhile the same node answers ``status`` over
its control API within a short timeout and receives a document written on its peer. With
the operation on the node's trio thread (before mycelium/node/phased.py) both would wait
for the stub. Then the same for ``archive_pull`` (``dag/export`` held) and
``gateway_link`` (a gateway stub holding ``GET /link/<code>``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from mycelium.archive import cid as cids
from simnet.backends.process import NodeProcess, free_port
from tests.integration.cluster import community, converged, put, run_args, stop_all

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

#: How long the stub holds a request at most (the IPFS client gives up after 60 s).
HOLD_S = 45.0


class StallingIpfs:
    """An IPFS RPC API (or a gateway) that accepts a request, then answers only once
    :meth:`release` is called (HTTP 500, so the operation ends with a named refusal)."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.released = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.do_GET()

            def do_GET(self) -> None:
                stub.arrived.set()
                stub.released.wait(HOLD_S)
                body = json.dumps({"Message": "released by the test",
                                   "error": "released by the test"}).encode()
                self.send_response(500)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def release(self) -> None:
        self.released.set()


@contextmanager
def stalling_ipfs() -> Iterator[StallingIpfs]:
    stub = StallingIpfs()
    thread = threading.Thread(target=stub.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        stub.release()
        stub.server.shutdown()
        stub.server.server_close()
        thread.join(10)


async def api(node: NodeProcess, name: str, timeout: float, **args: Any) -> httpx.Response:
    """One control-API call with its own timeout (no CLI fallback that would hide a hang)."""
    info = json.loads((node.home / "api.json").read_text())
    async with httpx.AsyncClient(timeout=timeout) as client:
        return await client.post(f"{info['url'].rstrip('/')}/v1/ops/{name}", json=args,
                                 headers={"Authorization": f"Bearer {info['token']}"})


async def answers_while_held(node: NodeProcess, name: str, address_arg: str,
                             **args: Any) -> httpx.Response:
    """Run ``name`` against a stalling stub (its address as ``address_arg``); while the
    stub holds the request, ``status`` must answer within 5 s. The operation's answer."""
    done: list[httpx.Response] = []
    with stalling_ipfs() as stub:

        async def run() -> None:
            done.append(await api(node, name, timeout=120, **{address_arg: stub.url}, **args))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            with trio.fail_after(60):
                while not stub.arrived.is_set():
                    await trio.sleep(0.05)
            status = await api(node, "status", timeout=5)
            assert status.status_code == 200
            assert not done, f"{name} ended before the stub answered"
            stub.release()
    return done[0]


async def test_node_answers_and_syncs_while_slow_operations_wait_on_stubs(
        tmp_path: Path) -> None:
    nodes, space_id = await community(tmp_path, 2)
    ports = [free_port() for _ in nodes]
    pushed: list[httpx.Response] = []
    try:
        await nodes[0].start(run_args(ports[0], []))
        await nodes[1].start(run_args(ports[1], [(ports[0], nodes[0])]))
        await put(nodes[1], "before", "synced before the push")
        await converged(nodes, space_id, timeout=60)
        with stalling_ipfs() as ipfs:

            async def push() -> None:
                pushed.append(await api(nodes[0], "archive_push", timeout=120,
                                        space="market", ipfs_api=ipfs.url))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(push)
                with trio.fail_after(60):
                    while not ipfs.arrived.is_set():
                        await trio.sleep(0.05)
                # node 0 is now inside archive_push, its dag/import held by the stub
                status = await api(nodes[0], "status", timeout=5)
                assert status.status_code == 200
                assert status.json()["did"] == nodes[0].identity.did  # type: ignore[union-attr]
                await put(nodes[1], "during", "written while n0 pushes")
                with trio.fail_after(30):
                    while True:
                        listed = await api(nodes[0], "doc_list", timeout=5, space="market",
                                           coll="products")
                        if "during" in {d["_id"] for d in listed.json()["docs"]}:
                            break
                        await trio.sleep(0.2)
                assert not pushed, "the push ended before the stub answered"
                ipfs.release()
        assert len(pushed) == 1
        assert pushed[0].status_code == 400
        assert pushed[0].json()["reason"] == "ipfs_error"
        assert "released by the test" in pushed[0].json()["error"]
        some_cid = cids.to_text(cids.cid_of(b"no such archive"))
        pulled = await answers_while_held(nodes[0], "archive_pull", "ipfs_api", cid=some_cid)
        assert (pulled.status_code, pulled.json()["reason"]) == (400, "ipfs_error")
        linked = await answers_while_held(nodes[0], "gateway_link", "gateway", code="ABCD2345")
        assert (linked.status_code, linked.json()["reason"]) == (400, "link_code_refused")
    finally:
        await stop_all(nodes)
