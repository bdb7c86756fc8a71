"""Provider webhooks: signatures and payloads of Twilio and Meta, without any I/O
(protocols/gateway.md §2).

The HTTP driver (:mod:`mycelium.gateway.app`) hands the raw request here and gets back either
a list of :class:`Inbound` messages / :class:`StatusUpdate` s, or a :class:`WebhookError`
whose ``status`` is the HTTP answer and ``reason`` the logged, counted name of the problem:

* 401 ``missing_signature`` — no signature header;
* 403 ``bad_signature`` — a signature that does not match (compared in constant time);
* 400 ``malformed_body`` — signed correctly but not a payload we can read.

Signatures are checked **before** anything is parsed or stored, so nothing from a refused
request reaches the inbox.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

from mycelium.errors import MyceliumError

Channel = Literal["twilio", "whatsapp", "instagram"]
#: Bodies larger than this are refused before their signature is even computed.
MAX_BODY_BYTES = 256 * 1024
MAX_TEXT_CHARS = 4096
#: Most messages taken from one callback (Meta batches; the rest would be a hostile body).
MAX_MESSAGES_PER_CALLBACK = 100


class WebhookError(MyceliumError):
    """A refused webhook request; ``status`` is the HTTP status to answer."""

    reason = "webhook_error"
    status = 400


class MissingSignature(WebhookError):
    reason = "missing_signature"
    status = 401


class BadSignature(WebhookError):
    reason = "bad_signature"
    status = 403


class MalformedBody(WebhookError):
    reason = "malformed_body"
    status = 400


class BadVerifyToken(WebhookError):
    reason = "bad_verify_token"
    status = 403


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message from a person, whatever the provider.

    ``sender`` is the stable key of the person (``wa:+E164``, ``wa:<user_id>``,
    ``ig:<IGSID>``); ``reply_to`` the address the provider wants for an answer;
    ``business`` our own end (Twilio ``To``, the WhatsApp phone-number id, the Instagram
    account id), which is where replies are sent from.
    """

    provider_id: str
    channel: Channel
    sender: str
    reply_to: str
    business: str
    text: str
    name: str | None
    timestamp_ms: int
    business_number: str | None = None


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A delivery status of one of our replies (Meta ``statuses[]``)."""

    provider_id: str
    status: str
    recipient: str
    timestamp_ms: int
    error: str | None


# -- signatures --------------------------------------------------------------------------
def twilio_signature(token: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    """Twilio's ``X-Twilio-Signature``: base64 HMAC-SHA1 of the URL followed by every
    parameter name and value, sorted by name (then value, for repeated names)."""
    data = url + "".join(k + v for k, v in sorted(params))
    digest = hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify_twilio(token: str, url: str, params: Sequence[tuple[str, str]],
                  signature: str | None) -> None:
    """Raise unless ``signature`` signs ``url`` (the PUBLIC url) and all ``params``."""
    if not signature:
        raise MissingSignature("X-Twilio-Signature header is missing")
    expected = twilio_signature(token, url, params)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise BadSignature("X-Twilio-Signature does not match the public URL and parameters")


def meta_signature(secret: str, raw: bytes) -> str:
    """Meta's ``X-Hub-Signature-256`` value for ``raw`` body bytes."""
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def verify_meta(secret: str, raw: bytes, header: str | None) -> None:
    """Raise unless ``header`` is ``sha256=<hex HMAC-SHA256(secret, raw)>``."""
    if not header:
        raise MissingSignature("X-Hub-Signature-256 header is missing")
    expected = meta_signature(secret, raw)
    if not hmac.compare_digest(expected.encode(), header.strip().lower().encode()):
        raise BadSignature("X-Hub-Signature-256 does not match the body")


def meta_verify_challenge(params: Mapping[str, str], verify_token: str) -> str:
    """The GET subscription handshake: the challenge to echo, or :class:`BadVerifyToken`."""
    if params.get("hub.mode") != "subscribe" or "hub.challenge" not in params:
        raise MalformedBody("expected hub.mode=subscribe and a hub.challenge")
    token = params.get("hub.verify_token", "")
    if not verify_token or not hmac.compare_digest(token.encode(), verify_token.encode()):
        raise BadVerifyToken("hub.verify_token does not match META_VERIFY_TOKEN")
    return params["hub.challenge"]


# -- payloads ----------------------------------------------------------------------------
def parse_form(raw: bytes) -> list[tuple[str, str]]:
    """Every parameter of a form body (repeated names kept), or :class:`MalformedBody`."""
    try:
        return parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw),
                         max_num_fields=200)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedBody(f"form body cannot be parsed: {exc}") from exc


def parse_twilio(params: Sequence[tuple[str, str]], now_ms: int) -> Inbound:
    """A Twilio WhatsApp/SMS callback as one message."""
    p = dict(params)
    sid, sender, to = p.get("MessageSid", ""), p.get("From", ""), p.get("To", "")
    if not sid or not sender or not to:
        raise MalformedBody("Twilio callback needs MessageSid, From and To")
    body = p.get("Body", "")
    if p.get("Latitude") and p.get("Longitude") and not body:
        body = f"@{p['Latitude']},{p['Longitude']}"
    phone = sender.removeprefix("whatsapp:")
    scheme = "wa:" if sender.startswith("whatsapp:") else "sms:"
    return Inbound(provider_id=sid[:64], channel="twilio", sender=scheme + phone[:64],
                   reply_to=sender[:80], business=to[:80], text=body[:MAX_TEXT_CHARS],
                   name=(p.get("ProfileName") or None), timestamp_ms=now_ms,
                   business_number=to.removeprefix("whatsapp:")[:32])


def parse_meta(raw: bytes) -> tuple[list[Inbound], list[StatusUpdate]]:
    """A Meta callback (WhatsApp Cloud API or Instagram messaging) as messages and statuses."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedBody(f"body is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("entry"), list):
        raise MalformedBody("Meta callback needs an object with an entry list")
    kind = doc.get("object")
    try:
        if kind == "whatsapp_business_account":
            return _whatsapp(doc["entry"])
        if kind == "instagram":
            return _instagram(doc["entry"]), []
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise MalformedBody(f"{kind} callback has an unexpected shape: {exc!r}") from exc
    raise MalformedBody(f"unsupported object {kind!r}")


def _whatsapp(entries: list[Any]) -> tuple[list[Inbound], list[StatusUpdate]]:
    messages: list[Inbound] = []
    statuses: list[StatusUpdate] = []
    for entry in entries:
        for change in entry.get("changes", []):
            value = change.get("value") or {}
            meta = value.get("metadata") or {}
            phone_id = str(meta.get("phone_number_id", ""))
            display = meta.get("display_phone_number")
            contacts = value.get("contacts") or []
            for msg in value.get("messages") or []:
                contact = _contact_for(contacts, msg)
                user_id = contact.get("user_id") or msg.get("from_user_id")
                phone = msg.get("from") or contact.get("wa_id")
                if not msg.get("id") or not (user_id or phone) or not phone_id:
                    raise ValueError("message without id, sender or phone_number_id")
                text = (msg.get("text") or {}).get("body", "") if msg.get("type") == "text" else ""
                if msg.get("type") == "location":
                    loc = msg.get("location") or {}
                    text = f"@{loc.get('latitude')},{loc.get('longitude')}"
                sender = "wa:" + str(user_id if user_id else "+" + str(phone).lstrip("+"))
                messages.append(Inbound(
                    provider_id=str(msg["id"])[:128], channel="whatsapp", sender=sender[:80],
                    reply_to=str(phone if phone else user_id)[:80], business=phone_id[:64],
                    text=str(text)[:MAX_TEXT_CHARS],
                    name=((contact.get("profile") or {}).get("name") or None),
                    timestamp_ms=int(msg.get("timestamp", 0)) * 1000,
                    business_number=str(display)[:32] if display else None))
            for st in value.get("statuses") or []:
                errors = st.get("errors") or []
                error = json.dumps(errors[0])[:500] if errors else None
                statuses.append(StatusUpdate(str(st["id"])[:128], str(st.get("status", ""))[:32],
                                             str(st.get("recipient_id", ""))[:80],
                                             int(st.get("timestamp", 0)) * 1000, error))
    return messages[:MAX_MESSAGES_PER_CALLBACK], statuses[:MAX_MESSAGES_PER_CALLBACK]


def _contact_for(contacts: list[Any], msg: dict[str, Any]) -> dict[str, Any]:
    for c in contacts:
        if msg.get("from") and c.get("wa_id") == msg.get("from"):
            return dict(c)
    return dict(contacts[0]) if len(contacts) == 1 else {}


def _instagram(entries: list[Any]) -> list[Inbound]:
    messages: list[Inbound] = []
    for entry in entries:
        for event in entry.get("messaging") or []:
            msg = event.get("message")
            if not isinstance(msg, dict) or msg.get("is_echo") or msg.get("is_deleted"):
                continue
            sender = str(event["sender"]["id"])
            recipient = str(event["recipient"]["id"])
            if not msg.get("mid") or not sender:
                raise ValueError("message without mid or sender")
            messages.append(Inbound(
                provider_id=str(msg["mid"])[:256], channel="instagram", sender="ig:" + sender[:64],
                reply_to=sender[:64], business=recipient[:64],
                text=str(msg.get("text", ""))[:MAX_TEXT_CHARS], name=None,
                timestamp_ms=int(event.get("timestamp", 0))))
    return messages[:MAX_MESSAGES_PER_CALLBACK]
