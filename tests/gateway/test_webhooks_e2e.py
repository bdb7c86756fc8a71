"""Webhook -> inbox -> listing -> reply, over real HTTP on loopback (issue 18 "done when")."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.gateway.harness import (
    ACCESS_TOKEN,
    PUBLIC_URL,
    VERIFY_TOKEN,
    instagram_body,
    meta_headers,
    running_gateway,
    twilio_params,
    twilio_signature,
    wait_for,
    whatsapp_body,
)

TWILIO_URL = PUBLIC_URL + "/webhooks/twilio"
LINK = re.compile(re.escape(PUBLIC_URL) + r"/p/([a-z2-7]+)")


async def test_twilio_tomatoes_listing_reply_and_page(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        params = twilio_params("SM0001", "I have 5kg of tomatoes")
        headers = {"X-Twilio-Signature": twilio_signature(TWILIO_URL, params)}
        first = await gw.client.post("/webhooks/twilio", data=params, headers=headers)
        assert first.status_code == 200, first.text
        assert first.headers["content-type"].startswith("application/xml")
        match = LINK.search(first.text)
        assert match is not None and "Listed!" in first.text
        [listing] = gw.listings()
        assert listing["_id"] == match.group(1)
        assert (listing["title"], listing["quantity"], listing["unit"]) == ("tomatoes", 5.0, "kg")
        assert listing["shared"] is True and listing["author"].startswith("did:key:")
        # Twilio retries the same MessageSid: same answer, still one listing.
        again = await gw.client.post("/webhooks/twilio", data=params, headers=headers)
        assert again.text == first.text
        assert len(gw.listings()) == 1
        assert gw.gateway.db.metrics()["inbox.duplicates"] == 1
        page = await gw.client.get(f"/p/{match.group(1)}")
        assert page.status_code == 200 and "tomatoes" in page.text
        assert 'property="og:title"' in page.text
        assert "5511999990001" not in page.text  # the seller's number stays private
        assert "wa.me/14155238886" in page.text  # contact goes through the business number


async def test_twilio_signature_must_use_public_url_and_all_params(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        params = twilio_params("SM0002", "I have eggs")
        loopback_sig = twilio_signature(str(gw.server.url) + "/webhooks/twilio", params)
        refused = await gw.client.post("/webhooks/twilio", data=params,
                                       headers={"X-Twilio-Signature": loopback_sig})
        assert refused.status_code == 403
        sig = twilio_signature(TWILIO_URL, params)
        extra = {**params, "Latitude": "1.0"}  # a parameter outside the signature
        assert (await gw.client.post("/webhooks/twilio", data=extra,
                                     headers={"X-Twilio-Signature": sig})).status_code == 403
        missing = await gw.client.post("/webhooks/twilio", data=params)
        assert missing.status_code == 401
        assert gw.gateway.db.inbox_row("SM0002") is None
        metrics = gw.gateway.db.metrics()
        assert metrics["refused.bad_signature"] == 2
        assert metrics["refused.missing_signature"] == 1


async def test_meta_whatsapp_message_reply_via_graph(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        raw = whatsapp_body("wamid.AAA1", "tengo 3 docenas de huevos a 2 euros",
                            user_id="BR.123456")
        ok = await gw.client.post("/webhooks/meta", content=raw, headers=meta_headers(raw))
        assert ok.status_code == 200
        await wait_for(lambda: len(gw.graph.requests) == 1)
        sent = gw.graph.requests[0]
        assert sent["path"] == "/v21.0/PN1/messages"
        assert sent["auth"] == f"Bearer {ACCESS_TOKEN}"
        body = sent["body"]
        assert body["messaging_product"] == "whatsapp" and body["to"] == "5511988887777"
        assert "¡Publicado!" in body["text"]["body"] and LINK.search(body["text"]["body"])
        [listing] = gw.listings()
        assert (listing["unit"], listing["price"], listing["currency"]) == ("dozen", 200, "EUR")
        assert gw.gateway.db.sender("wa:BR.123456") is not None  # keyed on the user id
        # Meta retries the same wamid (up to 7 days): no second listing, no second reply.
        again = await gw.client.post("/webhooks/meta", content=raw, headers=meta_headers(raw))
        assert again.status_code == 200
        other = whatsapp_body("wamid.AAA2", "¿quién tiene huevos?", user_id="BR.999")
        await gw.client.post("/webhooks/meta", content=other, headers=meta_headers(other))
        await wait_for(lambda: len(gw.graph.requests) == 2)
        search_reply = gw.graph.requests[1]["body"]["text"]["body"]
        assert "huevos" in search_reply and LINK.search(search_reply)
        assert len(gw.listings()) == 1
        assert [r["state"] for r in gw.gateway.db.outbox()] == ["sent", "sent"]


async def test_instagram_dm_reply_to_sender_echo_skipped(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        echo = instagram_body("mid.echo", "I have honey", echo=True)
        await gw.client.post("/webhooks/meta", content=echo, headers=meta_headers(echo))
        raw = instagram_body("mid.1", "I have 2 jars of honey for 5 dollars")
        assert (await gw.client.post("/webhooks/meta", content=raw,
                                     headers=meta_headers(raw))).status_code == 200
        await wait_for(lambda: len(gw.graph.requests) == 1)
        sent = gw.graph.requests[0]
        assert sent["path"] == "/v21.0/IGBIZ1/messages"
        assert sent["body"]["recipient"] == {"id": "IGSID42"}
        assert "Listed!" in sent["body"]["message"]["text"]
        [listing] = gw.listings()
        assert (listing["unit"], listing["price"], listing["currency"]) == ("jar", 500, "USD")
        assert gw.gateway.db.inbox_row("mid.echo") is None


async def test_meta_refusals_store_nothing(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        raw = whatsapp_body("wamid.BAD", "I have 5kg of tomatoes")
        assert (await gw.client.post("/webhooks/meta", content=raw)).status_code == 401
        wrong = meta_headers(raw, secret="not-the-secret")
        assert (await gw.client.post("/webhooks/meta", content=raw, headers=wrong)).status_code \
            == 403
        tampered = raw.replace(b"tomatoes", b"potatoes")
        assert (await gw.client.post("/webhooks/meta", content=tampered,
                                     headers=meta_headers(raw))).status_code == 403
        junk = b'{"object": "whatsapp_business_account", "entry": ['
        assert (await gw.client.post("/webhooks/meta", content=junk,
                                     headers=meta_headers(junk))).status_code == 400
        shape = b'{"object": "whatsapp_business_account", "entry": [{"changes": [1]}]}'
        assert (await gw.client.post("/webhooks/meta", content=shape,
                                     headers=meta_headers(shape))).status_code == 400
        assert gw.gateway.db.inbox_row("wamid.BAD") is None
        assert gw.listings() == []
        metrics = gw.gateway.db.metrics()
        assert (metrics["refused.missing_signature"], metrics["refused.bad_signature"],
                metrics["refused.malformed_body"]) == (1, 2, 2)


async def test_meta_subscription_handshake(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        ok = await gw.client.get("/webhooks/meta", params={
            "hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158"})
        assert (ok.status_code, ok.text) == (200, "1158")
        bad = await gw.client.get("/webhooks/meta", params={
            "hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1158"})
        assert bad.status_code == 403


async def test_search_cancel_help_unknown_replies(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        async def say(wamid: str, text: str, user: str = "U1") -> str:
            raw = whatsapp_body(wamid, text, user_id=user)
            await gw.client.post("/webhooks/meta", content=raw, headers=meta_headers(raw))
            n = len(gw.gateway.db.outbox())
            await wait_for(lambda: len(gw.graph.requests) >= n and n > 0)
            return str(gw.graph.requests[-1]["body"]["text"]["body"])

        assert "Listed!" in await say("w1", "I have 5kg of tomatoes")
        assert "tomatoes" in await say("w2", "who has tomatoes?", user="U2")
        assert "sold" in await say("w3", "sold out of tomatoes")
        assert gw.listings()[0]["status"] == "sold"
        assert "Nobody offers" in await say("w4", "who has tomatoes?", user="U2")
        assert "Offer" in await say("w6", "help", user="U3")
        unknown = await say("w7", "el perro come pan", user="U4")
        assert "no entendí" in unknown
        gone = await gw.client.get(f"/p/{gw.listings()[0]['_id']}")
        assert gone.status_code == 200 and "Sold" in gone.text
        assert (await gw.client.get("/p/nonexistent")).status_code == 404
        assert (await gw.client.get("/p/..%2Fetc")).status_code == 404


async def test_graph_down_delays_the_reply_without_duplicates(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        gw.graph.script = [(503, {"error": {"code": 2, "message": "Service unavailable"}})]
        raw = whatsapp_body("wamid.R1", "I have 5kg of tomatoes")
        assert (await gw.client.post("/webhooks/meta", content=raw,
                                     headers=meta_headers(raw))).status_code == 200
        await wait_for(lambda: gw.gateway.db.outbox()[0]["state"] == "sent")
        [row] = gw.gateway.db.outbox()
        assert (row["attempts"], len(gw.graph.requests)) == (2, 2)
        assert len(gw.listings()) == 1


async def test_closed_reply_window_is_recorded_with_the_providers_error(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        gw.graph.script = [(400, {"error": {"code": 131047, "message": "Re-engagement message"}})]
        raw = whatsapp_body("wamid.W1", "help")
        await gw.client.post("/webhooks/meta", content=raw, headers=meta_headers(raw))
        await wait_for(lambda: gw.gateway.db.outbox()[:1] != []
                       and gw.gateway.db.outbox()[0]["state"] == "failed")
        [row] = gw.gateway.db.outbox()
        assert "131047" in row["last_error"] and len(gw.graph.requests) == 1


async def test_oversized_body_and_a_failing_message_do_not_stop_the_gateway(
        tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        huge = b"{" + b" " * (300 * 1024) + b"}"
        refused = await gw.client.post("/webhooks/meta", content=huge, headers=meta_headers(huge))
        assert refused.status_code == 400 and refused.text == "malformed_body"

        def broken(*args: object) -> None:
            raise RuntimeError("a bug in the market code")

        gw.gateway.market.offer = broken  # type: ignore[assignment,method-assign]
        raw = whatsapp_body("wamid.P1", "I have 5kg of tomatoes")
        await gw.client.post("/webhooks/meta", content=raw, headers=meta_headers(raw))
        await wait_for(lambda: len(gw.graph.requests) == 1)
        assert "internal_error" in gw.graph.requests[0]["body"]["text"]["body"]
        assert gw.gateway.db.metrics()["process.internal_error"] == 1
        later = whatsapp_body("wamid.P2", "help")
        await gw.client.post("/webhooks/meta", content=later, headers=meta_headers(later))
        await wait_for(lambda: len(gw.graph.requests) == 2)


async def test_whatsapp_delivery_statuses_are_recorded(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        raw = json.dumps({"object": "whatsapp_business_account", "entry": [{"changes": [{
            "value": {"metadata": {"phone_number_id": "PN1"}, "statuses": [{
                "id": "wamid.out1", "status": "failed", "recipient_id": "5511988887777",
                "timestamp": "1764979300",
                "errors": [{"code": 131047, "title": "Re-engagement message"}]}]}}]}]}).encode()
        ok = await gw.client.post("/webhooks/meta", content=raw, headers=meta_headers(raw))
        assert ok.status_code == 200
        row = gw.gateway.db.conn.execute(
            "SELECT status, recipient, error FROM statuses WHERE provider_id='wamid.out1'"
        ).fetchone()
        assert row[0] == "failed" and row[1] == "5511988887777" and "131047" in row[2]
        assert gw.gateway.db.metrics()["statuses"] == 1


async def test_private_and_withdrawn_listings_are_not_public(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        soil, space = gw.soil, gw.space
        soil.put_doc(space, "products", "private1", {"title": "jam", "status": "available"})
        soil.put_doc(space, "products", "gone1", {"title": "jam", "status": "withdrawn",
                                                  "shared": True})
        soil.put_doc(space, "products", "shown1", {"title": "jam", "status": "available",
                                                   "shared": True})
        for doc, status in (("private1", 404), ("gone1", 404), ("shown1", 200)):
            page = await gw.client.get(f"/p/{doc}")
            assert page.status_code == status, doc
        private = await gw.client.get("/p/private1")
        unknown = await gw.client.get("/p/neverexisted")
        assert private.text == unknown.text  # a private listing is indistinguishable
