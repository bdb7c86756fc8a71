"""kill -9 between the webhook's acknowledgement and the reply: after a restart the reply
is sent exactly once and the listing exists once (the real ``mycelium gateway`` process)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import trio

from tests.gateway.harness import (
    READY_TIMEOUT_S,
    GatewayProcess,
    GraphFake,
    free_port,
    meta_headers,
    serve_app,
    wait_for,
    whatsapp_body,
)


def outbox(home: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(home / "gateway.db") as conn:
        return conn.execute("SELECT state, attempts FROM outbox").fetchall()


async def test_kill_9_before_the_reply_then_exactly_one_reply(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here yet: the Graph API is "down"
    graph_url = f"http://127.0.0.1:{port}"
    gw = GatewayProcess(tmp_path, graph_url)
    try:
        with trio.fail_after(READY_TIMEOUT_S):
            await gw.start()
        raw = whatsapp_body("wamid.KILL1", "I have 5kg of tomatoes")
        async with httpx.AsyncClient(timeout=10) as client:
            ack = await client.post(gw.url + "/webhooks/meta", content=raw,
                                    headers=meta_headers(raw))
        assert ack.status_code == 200
        # Acknowledged, processed, reply attempted and not delivered: kill it now.
        await wait_for(lambda: any(a >= 1 for _, a in outbox(tmp_path)), timeout=20)
        gw.kill9()
        assert [s for s, _ in outbox(tmp_path)] == ["pending"]
        graph = GraphFake()
        async with trio.open_nursery() as nursery:
            await serve_app(nursery, graph.app(), bind=f"127.0.0.1:{port}")
            with trio.fail_after(READY_TIMEOUT_S):
                await gw.start()
            await wait_for(lambda: outbox(tmp_path) == [("sent", 2)], timeout=20)
            assert len(graph.requests) == 1
            assert graph.requests[0]["body"]["to"] == "5511988887777"
            assert "/p/" in graph.requests[0]["body"]["text"]["body"]
            # Meta retries the same wamid after the restart: still one reply, one listing.
            async with httpx.AsyncClient(timeout=10) as client:
                again = await client.post(gw.url + "/webhooks/meta", content=raw,
                                          headers=meta_headers(raw))
                health = (await client.get(gw.url + "/healthz")).json()
            assert again.status_code == 200
            assert health["metrics"]["inbox.duplicates"] == 1
            assert health["metrics"]["inbox.accepted"] == 1
            assert len(graph.requests) == 1
            nursery.cancel_scope.cancel()
    finally:
        gw.stop()
    with sqlite3.connect(tmp_path / "gateway.db") as conn:
        assert conn.execute("SELECT count(*) FROM listings").fetchone()[0] == 1
