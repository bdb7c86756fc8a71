"""The ``gateway_link`` operation (mycelium.node.ops, used by ``mycelium gateway link`` and
the web app's node page) against the real ``mycelium gateway`` process, restarted between
the "link" message and the answer: the code survives the restart (gateway.db)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import trio

from mycelium.errors import MyceliumError
from mycelium.identity.identity import Identity
from mycelium.node.ops import LocalOps
from mycelium.store.soil import Soil
from tests.gateway.harness import (
    READY_TIMEOUT_S,
    GatewayProcess,
    GraphFake,
    meta_headers,
    serve_app,
    wait_for,
    whatsapp_body,
)

CODE = re.compile(r"mycelium gateway link ([A-Z2-7]{8})")


def _link(db: Path, identity: Identity, code: str, gateway: str) -> dict[str, object]:
    """One op call on a person's own store (opened in the calling thread: SQLite)."""
    with Soil.open(db, identity) as soil:
        return LocalOps(soil).call("gateway_link", code=code, gateway=gateway)


async def test_link_op_against_a_restarted_gateway_process(tmp_path: Path) -> None:
    graph = GraphFake()
    (tmp_path / "gw").mkdir()
    async with trio.open_nursery() as nursery:
        graph_url = await serve_app(nursery, graph.app())
        gw = GatewayProcess(tmp_path / "gw", graph_url)
        try:
            with trio.fail_after(READY_TIMEOUT_S):
                await gw.start()
            raw = whatsapp_body("wamid.LOP1", "link", user_id="BR.OP")
            async with httpx.AsyncClient(timeout=10) as client:
                ack = await client.post(gw.url + "/webhooks/meta", content=raw,
                                        headers=meta_headers(raw))
            assert ack.status_code == 200
            await wait_for(lambda: len(graph.requests) == 1, timeout=20)
            match = CODE.search(str(graph.requests[0]["body"]["text"]["body"]))
            assert match is not None
            gw.kill9()
            with trio.fail_after(READY_TIMEOUT_S):
                await gw.start()
            person = Identity.generate()
            db = tmp_path / "person.db"
            # Refusals first: each is a named reason, nothing is used up.
            for code, url, reason in [("AAAAAAAA", gw.url, "link_code_refused"),
                                      ("not a code", gw.url, "bad_link_code"),
                                      (match.group(1), "ftp://x", "bad_gateway_url")]:
                with pytest.raises(MyceliumError) as refused:
                    await trio.to_thread.run_sync(_link, db, person, code, url)
                assert refused.value.reason == reason
            done = await trio.to_thread.run_sync(_link, db, person, match.group(1).lower(),
                                                 gw.url + "/")
            assert (done["did"], done["member"], done["listings"], done["reissued"]) == (
                person.did, False, 0, 0)
            with pytest.raises(MyceliumError) as again:  # single use, across the restart
                await trio.to_thread.run_sync(_link, db, person, match.group(1), gw.url)
            assert again.value.reason == "link_code_refused"
        finally:
            gw.stop()
        nursery.cancel_scope.cancel()
