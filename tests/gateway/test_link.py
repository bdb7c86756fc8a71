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


def test_link_code_survives_a_restart_single_use_and_expiry_kept(tmp_path: Path) -> None:
    """The challenge behind a code lives in gateway.db: a restart between "link" and the
    answer does not lose it; after the restart it is still single use and still expires."""
    from mycelium.gateway.db import GatewayDB
    from mycelium.gateway.market import Market, ensure_market
    from mycelium.gateway.service import LINK_TTL_S, Gateway, GatewayConfig, LinkError
    from mycelium.gateway.webhooks import parse_meta
    from mycelium.identity.auth import ChallengeExpired
    from mycelium.store.soil import Soil

    identity = Identity.generate()
    config = GatewayConfig(public_url="https://m.example.org", meta_app_secret="s")

    def open_gateway() -> tuple[Gateway, Soil, GatewayDB]:
        soil = Soil.open(tmp_path / "soil.db", identity)
        db = GatewayDB(tmp_path / "gateway.db")
        return Gateway(config, db, Market(soil, ensure_market(soil, "market"))), soil, db

    def code_for(wamid: str, user: str, now_ms: int) -> str:
        gateway, soil, db = open_gateway()
        messages, _ = parse_meta(whatsapp_body(wamid, "link", user_id=user))
        db.accept(messages, [], now_ms)
        gateway.process_received(now_ms)
        match = CODE.search(str(db.outbox()[-1]["body"]))
        db.close()  # the gateway restarts between the code and the answer
        soil.close()
        assert match is not None
        return match.group(1)

    code = code_for("wamid.R1", "BR.R1", 1_000)
    late = code_for("wamid.R2", "BR.R2", 2_000)
    gateway, soil, db = open_gateway()
    try:
        challenge = Challenge.from_cbor(gateway.link_challenge(code, 5_000))
        person = Identity.generate()
        signed = answer(person, challenge).to_cbor()
        assert gateway.finish_link(code, signed, 6_000)["did"] == person.did
        row = db.sender("wa:BR.R1")
        assert row is not None and row.linked_did == person.did
        try:
            gateway.finish_link(code, signed, 7_000)
            raise AssertionError("a code was accepted twice")
        except LinkError:
            pass
        expired_at = 2_000 + int(LINK_TTL_S * 1000)
        late_challenge = Challenge.from_cbor(gateway.link_challenge(late, expired_at - 1))
        late_signed = answer(person, late_challenge).to_cbor()
        try:
            gateway.finish_link(late, late_signed, expired_at)
            raise AssertionError("an expired code was accepted")
        except (LinkError, ChallengeExpired):
            pass
        assert db.sender("wa:BR.R2") is None
    finally:
        db.close()
        soil.close()
