"""Taking ownership: "link" over WhatsApp, answered from the person's own node with
``mycelium gateway link CODE`` (signed challenge, mycelium.identity.auth)."""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from pathlib import Path

import trio

from mycelium.identity.auth import Challenge, answer
from mycelium.identity.identity import Identity
from mycelium.spaces import service
from tests.gateway.harness import (
    Running,
    meta_headers,
    running_gateway,
    wait_for,
    whatsapp_body,
)

CODE = re.compile(r"mycelium gateway link ([A-Z2-7]{8})")


async def _say(gw: Running, wamid: str, text: str) -> str:
    raw = whatsapp_body(wamid, text, user_id="BR.LINK")
    await gw.client.post("/webhooks/meta", content=raw, headers=meta_headers(raw))
    n = len(gw.gateway.db.outbox())
    await wait_for(lambda: n > 0 and len(gw.graph.requests) >= n)
    return str(gw.graph.requests[-1]["body"]["text"]["body"])


async def _cli(home: Path, *args: str) -> dict[str, object]:
    env = {**os.environ, "MYCELIUM_HOME": str(home), "MYCELIUM_PASSPHRASE": "pw",
           "MYCELIUM_INSECURE_FAST_KDF": "1"}
    exe = str(Path(sys.executable).parent / "mycelium")
    with trio.fail_after(60):
        done = await trio.run_process([exe, *args, "--json"], env=env, capture_stdout=True,
                                      capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    result: dict[str, object] = json.loads(done.stdout)
    return result


async def test_link_from_own_node_reissues_listings_and_retires_the_key(tmp_path: Path) -> None:
    (tmp_path / "gw").mkdir()
    async with running_gateway(tmp_path / "gw") as gw:
        assert "Listed!" in await _say(gw, "wl1", "I have 5kg of tomatoes")
        match = CODE.search(await _say(gw, "wl2", "link"))
        assert match is not None
        home = tmp_path / "person"
        person = await _cli(home, "init")
        did = str(person["did"])
        invite = service.invite(gw.soil, gw.space, did)
        await _cli(home, "space", "join", invite)
        linked = await _cli(home, "gateway", "link", match.group(1), "--gateway",
                            str(gw.server.url))
        assert linked == {"did": did, "space_id": gw.space.hex(), "listings": 1, "reissued": 1}
        docs = await _cli(home, "doc", "list", "market", "products")
        [doc] = docs["docs"]  # type: ignore[misc]
        assert doc["author"] == did and doc["title"] == "tomatoes"
        row = gw.gateway.db.sender("wa:BR.LINK")
        assert row is not None and row.linked_did == did and row.retired_ms is not None
        # The retired custodial key lists nothing more; the reply points to the own node.
        assert did in await _say(gw, "wl3", "I have 2kg of onions")
        assert len(gw.listings()) == 1
        # The code is single use.
        again = await gw.client.get(f"/link/{match.group(1)}")
        assert again.status_code == 404


async def test_link_answer_must_sign_the_issued_challenge(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        match = CODE.search(await _say(gw, "wl9", "link"))
        assert match is not None
        got = (await gw.client.get(f"/link/{match.group(1)}")).json()
        challenge = Challenge.from_cbor(base64.b64decode(got["challenge"]))
        forged = answer(Identity.generate(), challenge)
        bad = type(forged)(challenge, Identity.generate().did, forged.signature)
        refused = await gw.client.post(f"/link/{match.group(1)}",
                                       content=base64.b64encode(bad.to_cbor()))
        assert refused.status_code == 403 and refused.json()["reason"] == "bad_signature"
        assert gw.gateway.db.sender("wa:BR.LINK") is None
        ok = answer(Identity.generate(), challenge)
        accepted = await gw.client.post(f"/link/{match.group(1)}",
                                        content=base64.b64encode(ok.to_cbor()))
        assert accepted.status_code == 200 and accepted.json()["listings"] == []
        row = gw.gateway.db.sender("wa:BR.LINK")
        assert row is not None and row.linked_did == ok.did
