"""The gateway's behaviour, between the HTTP driver and the stores.

* :meth:`Gateway.accept_twilio` / :meth:`Gateway.accept_meta`: verify, parse, write to the
  durable inbox — all before the HTTP answer, so an acknowledged message is never lost.
* :meth:`Gateway.process_received`: each received message once: parse the intent, act on
  the market (listing, search, sold), queue exactly one reply (same transaction as "done").
* :meth:`Gateway.deliver_due`: one round of Graph API sends from the outbox, with the
  lifecycle of :mod:`mycelium.gateway.core` deciding retries and failures.

Time comes in as ``now_ms``; the only I/O besides SQLite is the HTTP send, done through
an injected async ``post`` callable, so tests and the benchmark swap the transport.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mycelium.errors import MyceliumError
from mycelium.gateway import core, replies, webhooks
from mycelium.gateway.custody import Custody
from mycelium.gateway.db import GatewayDB
from mycelium.gateway.intent import Parsed, parse
from mycelium.gateway.market import Market, listing_id
from mycelium.identity.auth import (
    Challenge,
    ChallengeExpired,
    ChallengeIssuer,
    ChallengeResponse,
    check_signature,
)
from mycelium.identity.identity import Identity

log = logging.getLogger("mycelium.gateway")

GRAPH_VERSION = "v21.0"
LINK_TTL_S = 900.0

#: ``post(url, json_body, headers) -> (status or None, decoded body or error text)``
Post = Callable[[str, dict[str, Any], dict[str, str]], Awaitable[tuple[int | None, Any]]]


@dataclass(frozen=True)
class GatewayConfig:
    """Secrets and addresses (DESIGN.md §10: read from the environment by the CLI)."""

    public_url: str
    twilio_auth_token: str = ""
    meta_app_secret: str = ""
    meta_verify_token: str = ""
    meta_access_token: str = ""
    graph_url: str = "https://graph.facebook.com"

    @classmethod
    def from_env(cls, public_url: str, env: dict[str, str] | None = None) -> GatewayConfig:
        e = dict(os.environ if env is None else env)
        return cls(public_url=public_url.rstrip("/"),
                   twilio_auth_token=e.get("TWILIO_AUTH_TOKEN", ""),
                   meta_app_secret=e.get("META_APP_SECRET", ""),
                   meta_verify_token=e.get("META_VERIFY_TOKEN", ""),
                   meta_access_token=e.get("META_ACCESS_TOKEN", ""),
                   graph_url=e.get("META_GRAPH_URL", "https://graph.facebook.com").rstrip("/"))


class NotConfigured(webhooks.WebhookError):
    """A provider's secret is not set: its webhook is refused rather than trusted blindly."""

    reason = "provider_not_configured"
    status = 503


class LinkError(MyceliumError):
    reason = "link_failed"


class Gateway:
    """One gateway: its inbox/outbox database and the market it writes to."""

    def __init__(self, config: GatewayConfig, db: GatewayDB, market: Market) -> None:
        self.config = config
        self.db = db
        self.market = market
        self.identity: Identity = market.soil.identity
        self.custody = Custody(self.identity)
        self.links = ChallengeIssuer(audience=config.public_url + "/link", ttl_s=LINK_TTL_S)
        self.inbox_wakeup: Callable[[], None] = lambda: None

    # -- webhooks ---------------------------------------------------------------------
    def accept_twilio(self, raw: bytes, signature: str | None, now_ms: int) -> str:
        """Verify and store a Twilio callback; the TwiML answer (the reply, processed inline
        because Twilio takes the reply in the response; a retry gets the same reply)."""
        if not self.config.twilio_auth_token:
            raise NotConfigured("TWILIO_AUTH_TOKEN is not set")
        params = webhooks.parse_form(raw)
        url = self.config.public_url + "/webhooks/twilio"
        webhooks.verify_twilio(self.config.twilio_auth_token, url, params, signature)
        message = webhooks.parse_twilio(params, now_ms)
        self.db.accept([message], [], now_ms)
        reply = self.db.reply_for(message.provider_id)
        if reply is None:
            self.process_received(now_ms)
            reply = self.db.reply_for(message.provider_id)
        return twiml(reply)

    def accept_meta(self, raw: bytes, signature: str | None, now_ms: int) -> int:
        """Verify and store a Meta callback; the number of new messages. Processing and
        replies happen afterwards, from the inbox."""
        if not self.config.meta_app_secret:
            raise NotConfigured("META_APP_SECRET is not set")
        if len(raw) > webhooks.MAX_BODY_BYTES:
            raise webhooks.MalformedBody("body too large")
        webhooks.verify_meta(self.config.meta_app_secret, raw, signature)
        messages, statuses = webhooks.parse_meta(raw)
        fresh = self.db.accept(messages, statuses, now_ms)
        if fresh:
            self.inbox_wakeup()
        return len(fresh)

    def verify_subscription(self, params: dict[str, str]) -> str:
        return webhooks.meta_verify_challenge(params, self.config.meta_verify_token)

    # -- processing -------------------------------------------------------------------
    def process_received(self, now_ms: int, limit: int = 100) -> int:
        """Process stored messages not yet answered; returns how many."""
        rows = self.db.received(limit)
        for row in rows:
            try:
                self._process(row.message, now_ms)
            except Exception:  # a bug on one message must not stop the inbox (or loop on it)
                log.exception("message %s could not be processed", row.message.provider_id[-12:])
                self.db.finish(row.message, intent="error", lang="en", listing=None,
                               reply=replies.reply_text("not_listed", "en",
                                                        reason="internal_error"),
                               now_ms=now_ms)
                self.db.count("process.internal_error")
        return len(rows)

    def _process(self, msg: webhooks.Inbound, now_ms: int) -> None:
        parsed = parse(msg.text)
        lang, intent = parsed.lang, parsed.intent
        listing: str | None = None
        try:
            if intent == "offer" and parsed.item:
                listing, text = self._offer(msg, parsed, now_ms)
            elif intent in ("request", "search"):
                text = self._search(parsed.item, lang)
            elif intent == "cancel":
                text = self._cancel(msg, parsed.item, lang, now_ms)
            elif intent == "help":
                text = replies.reply_text("help", lang)
            elif intent == "link":
                text = self._start_link(msg, lang, now_ms)
            else:
                intent = "unknown"
                text = replies.reply_text("unknown", lang)
        except MyceliumError as exc:
            reason = getattr(exc, "reason", type(exc).__name__)
            log.warning("message %s not acted on: %s (%s)", msg.provider_id[-12:], reason, exc)
            self.db.count(f"process.error.{reason}")
            text = replies.reply_text("not_listed", lang, reason=reason)
        self.db.finish(msg, intent=intent, lang=lang, listing=listing,
                       reply=core.fit_text(msg.channel, text), now_ms=now_ms)

    def custodial(self, sender: str, now_ms: int) -> Identity:
        """The custodial identity of ``sender``, created and sealed on first use."""
        row = self.db.sender(sender)
        if row is not None:
            return self.custody.open(sender, row.sealed)
        ident, sealed = self.custody.new(sender)
        self.db.add_sender(sender, ident.public_key, sealed, now_ms)
        return ident

    def _offer(self, msg: webhooks.Inbound, parsed: Parsed, now_ms: int
               ) -> tuple[str | None, str]:
        row = self.db.sender(msg.sender)
        if row is not None and row.linked_did:
            return None, replies.reply_text("linked", parsed.lang, did=row.linked_did)
        ident = self.custodial(msg.sender, now_ms)
        doc = listing_id(msg.provider_id)
        listing = self.market.offer(ident, doc, parsed, now_ms)
        return doc, replies.reply_text("listed", parsed.lang, title=listing["title"],
                                       details=replies.details(listing, parsed.lang),
                                       link=self.link_for(doc))

    def _search(self, item: str | None, lang: str) -> str:
        hits = self.market.search(item)
        if not hits:
            return replies.reply_text("no_matches", lang, item=item or replies.ANYTHING[
                lang if lang in replies.ANYTHING else "en"])
        lines = "\n".join(replies.listing_line(h, lang, self.link_for(h["_id"]))
                          for h in hits)
        return replies.reply_text("matches", lang, lines=lines)

    def _cancel(self, msg: webhooks.Inbound, item: str | None, lang: str, now_ms: int) -> str:
        row = self.db.sender(msg.sender)
        sold = None
        if row is not None and not row.linked_did:
            sold = self.market.cancel(self.custody.open(msg.sender, row.sealed), item)
        if sold is None:
            return replies.reply_text("cancel_none", lang, item=item or "?")
        return replies.reply_text("cancelled", lang, title=sold.get("title", "?"))

    def link_for(self, doc: str) -> str:
        return f"{self.config.public_url}/p/{doc}"

    # -- linking a person's own DID ---------------------------------------------------
    def _start_link(self, msg: webhooks.Inbound, lang: str, now_ms: int) -> str:
        challenge = self.links.issue(now_ms / 1000)
        code = base64.b32encode(os.urandom(5)).decode()
        self.db.add_link(code, msg.sender, challenge.to_cbor(), challenge.expires_ms)
        return replies.reply_text("link", lang, code=code, url=self.config.public_url,
                                  minutes=int(LINK_TTL_S // 60))

    def link_challenge(self, code: str, now_ms: int) -> bytes:
        """The CBOR challenge behind a live link code (:class:`LinkError` otherwise)."""
        return self._live_link(code, now_ms)[1]

    def _live_link(self, code: str, now_ms: int) -> tuple[str, bytes]:
        link = self.db.link(code.upper())
        if link is None or link[3] is not None or link[2] < now_ms:
            raise LinkError("unknown, used or expired link code")
        return link[0], link[1]

    def finish_link(self, code: str, response: bytes, now_ms: int) -> dict[str, Any]:
        """Verify the person's signed answer; retire the custodial key; their listings."""
        code = code.upper()
        sender, expected = self._live_link(code, now_ms)
        did = verify_link_answer(ChallengeResponse.from_cbor(response),
                                 Challenge.from_cbor(expected), now_ms)
        if not self.db.finish_link(code, did):  # another answer won the race
            raise LinkError("unknown, used or expired link code")
        self.custodial(sender, now_ms)  # a row to mark linked, even if nothing was listed yet
        self.db.link_sender(sender, did, now_ms)
        self.db.count("custody.linked")
        docs = [d for d in (self.market.soil.get_doc(self.market.space, "products", doc)
                            for doc in self.db.listings_of(sender)) if d is not None]
        return {"did": did, "space_id": self.market.space.hex(), "listings": docs}

    # -- outbox -----------------------------------------------------------------------
    async def deliver_due(self, post: Post, now_ms: int, limit: int = 50) -> int:
        """Attempt every due reply once; returns how many were attempted."""
        rows = self.db.due(now_ms, limit)
        for row in rows:
            reply = row.reply
            outcome = core.before_attempt(reply, now_ms)
            if outcome is None:
                url, body = self._graph_request(row.business, row.recipient, row.body,
                                                reply.channel)
                status, answer = await post(url, body, {
                    "Authorization": f"Bearer {self.config.meta_access_token}"})
                outcome = core.classify(status, answer)
            settled = core.after_attempt(reply, outcome, now_ms)
            if settled.state is core.OutState.FAILED:
                log.warning("reply %d failed for good: %s", reply.id, settled.last_error)
            elif outcome.result is core.Result.RETRY:
                log.info("reply %d retry %d: %s", reply.id, settled.attempts, outcome.error)
            self.db.settle(settled, now_ms)
        return len(rows)

    def _graph_request(self, business: str, recipient: str, text: str,
                       channel: str) -> tuple[str, dict[str, Any]]:
        url = f"{self.config.graph_url}/{GRAPH_VERSION}/{business}/messages"
        if channel == "instagram":
            return url, {"recipient": {"id": recipient}, "message": {"text": text}}
        return url, {"messaging_product": "whatsapp", "recipient_type": "individual",
                     "to": recipient, "type": "text", "text": {"body": text}}


def twiml(reply: str | None) -> str:
    """A TwiML answer carrying ``reply`` (or an empty response)."""
    from xml.sax.saxutils import escape

    if not reply:
        return '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    return ('<?xml version="1.0" encoding="UTF-8"?><Response><Message>'
            f"{escape(reply)}</Message></Response>")


def verify_link_answer(presented: ChallengeResponse, expected: Challenge, now_ms: int) -> str:
    """The DID that signed the challenge stored with a link code in gateway.db.

    Checked against the stored challenge, not an in-memory issuer, so a code survives a
    restart of the gateway; single use and expiry are the database's (``links`` row)."""
    if presented.challenge != expected:
        raise LinkError("the answer is for another challenge")
    if now_ms >= expected.expires_ms:
        raise ChallengeExpired("challenge expired")
    check_signature(expected, presented)
    return presented.did
