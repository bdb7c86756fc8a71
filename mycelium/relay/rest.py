"""The node's REST client of a relay, for what a node asks outside a sync session: the
latest IPFS archive a relay made of a space (``GET /v1/spaces/{id}/archive``,
protocols/relay.md §4).

Blocking (httpx), because its one caller runs in the node's worker thread next to the
IPFS calls of an archive pull (node/ops.py ``archive_pull``). Authentication is the
WebSocket handshake's, over two requests: our challenge goes in the body of
``POST /v1/auth/challenge``; the relay's proof is checked by the same
:class:`ClientHandshake` against the DID pinned in the relay URL, and our answer to its
challenge is the ``Authorization: Mycelium …`` of the GET. A relay URL without a pinned
DID is refused: what the relay names is an archive whose signature will be trusted by
that DID, so the DID must come from the user, not from the server.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from mycelium.codec import cbor
from mycelium.errors import MyceliumError
from mycelium.identity.identity import Identity
from mycelium.relay.client import CONNECT_TIMEOUT_S, RelayUrl
from mycelium.relay.handshake import ClientHandshake, HandshakeError, authorization

#: Largest reply read from a relay (a challenge, or an archive record).
MAX_REPLY_BYTES = 64 * 1024


class RelayRequestError(MyceliumError):
    """A relay refused or could not be reached; ``reason`` is the relay's when it gave one."""

    reason = "relay_error"


def latest_archive(relay: RelayUrl, identity: Identity, space: bytes, *,
                   timeout_s: float = CONNECT_TIMEOUT_S,
                   verify: Any = True) -> dict[str, Any]:
    """``{cid, created_ms, envelopes, relay_did}`` of the latest archive ``relay`` made of
    ``space``, asked as ``identity`` (a member). Raises :class:`HandshakeError`
    (``relay_not_pinned``, ``relay_identity_changed``, ``bad_relay_proof``) or
    :class:`RelayRequestError` (the relay's reason: ``no_archive``, ``not_member``, …;
    ``relay_unreachable`` for the network)."""
    if relay.pinned is None:
        raise HandshakeError(f"{relay.url}: add #did:key:… (the relay's DID): its archives "
                             "are trusted by that DID", reason="relay_not_pinned")
    hs = ClientHandshake(identity, relay.url, expected_did=relay.pinned)
    try:
        with httpx.Client(timeout=timeout_s, verify=verify, follow_redirects=False) as http:
            reply = _cbor_reply(http.post(
                f"{relay.url}/v1/auth/challenge",
                content=cbor.encode({"challenge": hs.challenge(time.time())}),
                headers={"Content-Type": "application/cbor"}), relay)
            auth = authorization(hs.answer(reply, time.time()))
            resp = http.get(f"{relay.url}/v1/spaces/{space.hex()}/archive",
                            headers={"Authorization": auth})
    except httpx.HTTPError as exc:
        raise RelayRequestError(f"relay {relay.url} unreachable: {exc or type(exc).__name__}",
                                reason="relay_unreachable") from None
    record = _json_reply(resp, relay)
    cid, created, count = record.get("cid"), record.get("created_ms"), record.get("envelopes")
    if not (isinstance(cid, str) and 0 < len(cid) <= 256 and isinstance(created, int)
            and isinstance(count, int)):
        raise RelayRequestError(f"relay {relay.url} sent a malformed archive record",
                                reason="bad_reply")
    return {"cid": cid, "created_ms": created, "envelopes": count, "relay_did": relay.pinned}


def _refusal(resp: httpx.Response, relay: RelayUrl) -> RelayRequestError:
    reason, text = "relay_error", resp.reason_phrase
    try:
        body = resp.json()
        if isinstance(body, dict) and isinstance(body.get("reason"), str):
            reason = body["reason"][:64]
            text = str(body.get("error", text))[:200]
    except ValueError:
        pass
    return RelayRequestError(f"relay {relay.url} refused ({resp.status_code} {reason}): {text}",
                             reason=reason)


def _cbor_reply(resp: httpx.Response, relay: RelayUrl) -> dict[str, Any]:
    if resp.status_code != 200:
        raise _refusal(resp, relay)
    if len(resp.content) > MAX_REPLY_BYTES:
        raise RelayRequestError(f"relay {relay.url} sent an oversized reply", reason="bad_reply")
    try:
        msg = cbor.decode(resp.content, max_bytes=MAX_REPLY_BYTES)
    except MyceliumError as exc:
        raise RelayRequestError(f"relay {relay.url} sent bad CBOR: {exc}",
                                reason="bad_reply") from None
    if not isinstance(msg, dict):
        raise RelayRequestError(f"relay {relay.url} sent a malformed reply", reason="bad_reply")
    return msg


def _json_reply(resp: httpx.Response, relay: RelayUrl) -> dict[str, Any]:
    if resp.status_code != 200:
        raise _refusal(resp, relay)
    try:
        body = resp.json() if len(resp.content) <= MAX_REPLY_BYTES else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise RelayRequestError(f"relay {relay.url} sent a malformed reply", reason="bad_reply")
    return body


__all__ = ["RelayRequestError", "latest_archive"]
