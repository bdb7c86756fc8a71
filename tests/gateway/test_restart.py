"""kill -9 between the webhook's acknowledgement and the reply: after a restart the reply
is sent exactly once and the listing exists once (the real ``mycelium gateway`` process)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import trio

from simnet.backends.process import free_port
from tests.gateway.harness import (
    READY_TIMEOUT_S,
    GatewayProcess,
    GraphFake,
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


def test_acknowledged_but_unprocessed_messages_are_processed_once_after_restart(
        tmp_path: Path) -> None:
    from mycelium.gateway.db import GatewayDB
    from mycelium.gateway.market import Market, ensure_market
    from mycelium.gateway.service import Gateway, GatewayConfig
    from mycelium.gateway.webhooks import parse_meta
    from mycelium.identity.identity import Identity
    from mycelium.store.soil import Soil

    identity = Identity.generate()
    config = GatewayConfig(public_url="https://m.example.org", meta_app_secret="s")

    def open_gateway() -> tuple[Gateway, Soil, GatewayDB]:
        soil = Soil.open(tmp_path / "soil.db", identity)
        db = GatewayDB(tmp_path / "gateway.db")
        return Gateway(config, db, Market(soil, ensure_market(soil, "market"))), soil, db

    gateway, soil, db = open_gateway()
    messages, _ = parse_meta(whatsapp_body("wamid.U1", "I have 5kg of tomatoes"))
    assert db.accept(messages, [], 1_000) == ["wamid.U1"]  # what happens before the 200
    db.close()  # the process dies here, before processing
    soil.close()
    for _ in range(2):  # two restarts: the second finds nothing left to do
        gateway, soil, db = open_gateway()
        gateway.process_received(2_000)
        assert len(soil.list_docs(gateway.market.space, "products")) == 1
        assert [r["state"] for r in db.outbox()] == ["pending"]
        db.close()
        soil.close()
