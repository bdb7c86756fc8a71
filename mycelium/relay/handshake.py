"""Mutual authentication between a node and a relay, sans-IO (protocols/relay.md §3).

Both directions reuse the challenge auth of :mod:`mycelium.identity.auth`:

* the **relay** proves its DID by answering a challenge the client issued with audience
  ``"mycelium-relay:" + origin`` (a distinct audience, so nothing the relay signs can be
  replayed as a client login anywhere);
* the **client** proves its DID by answering the relay's challenge, whose audience is
  the relay's origin (``scheme://host:port``), single use, expiring.

Messages of the WebSocket pre-session phase are canonical CBOR maps with a ``t`` tag::

    client                                              relay
    {t:"hello", v:1, challenge: C1} ------------------>
                     <------------------ {t:"challenge", v:1, did, proof: R(C1), challenge: C2}
    {t:"auth", response: R(C2)} ---------------------->
                     <------------------ {t:"ok", did}            (or {t:"err", reason, ...})
    {t:"register", genesis, envelopes} -> {t:"registered", space, new} | {t:"refused", ...}
    {t:"list"} -------------------------> {t:"spaces", spaces: [{space, genesis, kind, role}]}
    {t:"sync"}  then every message is one sync frame (protocols/sync.md); the client is
                the initiator of the session.

The same challenge/proof exchange is offered over REST (``POST /v1/auth/challenge``).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mycelium.codec import cbor
from mycelium.errors import CodecError, MyceliumError
from mycelium.identity.auth import (
    AuthError,
    Challenge,
    ChallengeIssuer,
    ChallengeResponse,
    MalformedAuth,
    answer,
)
from mycelium.identity.didkey import public_key_from_did
from mycelium.identity.identity import Identity

VERSION = 1
RELAY_AUDIENCE_PREFIX = "mycelium-relay:"
#: Largest pre-session message (a register message carries a genesis and a control log).
MAX_CONTROL_MESSAGE = 4 * 1024 * 1024


class HandshakeError(MyceliumError):
    reason = "bad_handshake"


def origin_of(url: str) -> str:
    """``scheme://host:port`` of a relay URL (default ports made explicit, host lowered),
    the audience clients sign for. ``ws``/``wss`` count as ``http``/``https``."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.hostname:
        raise HandshakeError(f"relay URL must be http(s)://host[:port]: {url!r}",
                             reason="bad_relay_url")
    port = parts.port or (443 if scheme == "https" else 80)
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def authorization(response: bytes) -> str:
    """The REST ``Authorization`` value carrying a challenge response (CBOR):
    ``Mycelium <base64url, no padding>`` (protocols/relay.md §3)."""
    return "Mycelium " + base64.urlsafe_b64encode(response).decode().rstrip("=")


def relay_audience(origin: str) -> str:
    """The audience of the challenge a client issues to the relay."""
    return RELAY_AUDIENCE_PREFIX + origin


def encode(message: dict[str, Any]) -> bytes:
    return cbor.encode(message)


def decode(data: bytes, *, max_bytes: int = MAX_CONTROL_MESSAGE) -> dict[str, Any]:
    """A pre-session message: a canonical CBOR map with a text ``t``."""
    try:
        msg = cbor.decode(data, max_bytes=max_bytes)
    except CodecError as exc:
        raise HandshakeError(f"message is not CBOR: {exc}", reason="bad_message") from exc
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise HandshakeError("message must be a map with a text 't'", reason="bad_message")
    return msg


def _field(msg: dict[str, Any], key: str, kind: type) -> Any:
    value = msg.get(key)
    if not isinstance(value, kind):
        raise HandshakeError(f"{msg.get('t')!r} needs {key!r} ({kind.__name__})",
                             reason="bad_message")
    return value


# -- client side ---------------------------------------------------------------------
class ClientHandshake:
    """The client's half: ``hello(now)`` -> bytes; ``on_challenge(data, now)`` -> bytes
    to send (its proof) after checking the relay's; then ``on_ok(data)``.

    ``expected_did``: the pinned relay DID, or None for trust on first use (the caller
    records :attr:`relay_did` and compares later connections).
    """

    def __init__(self, identity: Identity, url: str, *, expected_did: str | None,
                 ttl_s: float = 60.0, rng: Callable[[int], bytes] = os.urandom) -> None:
        self.identity = identity
        self.origin = origin_of(url)
        self.expected_did = expected_did
        self.relay_did: str | None = None
        self._issuer = ChallengeIssuer(relay_audience(self.origin), ttl_s, max_outstanding=4,
                                       rng=rng)

    def hello(self, now: float) -> bytes:
        return encode({"t": "hello", "v": VERSION, "challenge": self.challenge(now)})

    def challenge(self, now: float) -> bytes:
        """Our challenge to the relay (CBOR): in ``hello``, or the body of a REST
        ``POST /v1/auth/challenge``."""
        return self._issuer.issue(now).to_cbor()

    def on_challenge(self, data: bytes, now: float) -> bytes:
        """Check the relay's proof and answer its challenge. Raises
        :class:`HandshakeError` (``relay_identity_changed``, auth reasons)."""
        msg = decode(data)
        raise_if_error(msg)
        if msg["t"] != "challenge":
            raise HandshakeError(f"expected 'challenge', got {msg['t']!r}",
                                 reason="unexpected_message")
        return encode({"t": "auth", "response": self.answer(msg, now)})

    def answer(self, msg: dict[str, Any], now: float) -> bytes:
        """The relay's ``{did, proof, challenge}`` (a WebSocket ``challenge`` message or
        the REST challenge reply): its proof checked against our challenge and the pinned
        DID, then our answer to its challenge (CBOR)."""
        did = _field(msg, "did", str)
        proof = ChallengeResponse.from_cbor(_field(msg, "proof", bytes))
        if proof.did != did:
            raise HandshakeError("relay proof is for another DID", reason="bad_relay_proof")
        try:
            self._issuer.verify(proof, now)
        except AuthError as exc:
            raise HandshakeError(f"relay failed to prove its DID: {exc}",
                                 reason="bad_relay_proof") from exc
        if self.expected_did is not None and did != self.expected_did:
            raise HandshakeError(
                f"relay at {self.origin} proved {did}, but {self.expected_did} is pinned "
                "for it: refusing (a different server, or its key changed)",
                reason="relay_identity_changed")
        self.relay_did = did
        challenge = Challenge.from_cbor(_field(msg, "challenge", bytes))
        if challenge.audience != self.origin:
            raise HandshakeError(f"relay asks us to sign for {challenge.audience!r}, "
                                 f"not {self.origin!r}", reason="wrong_audience")
        return answer(self.identity, challenge).to_cbor()

    @staticmethod
    def on_ok(data: bytes) -> str:
        msg = decode(data)
        raise_if_error(msg)
        if msg["t"] != "ok":
            raise HandshakeError(f"expected 'ok', got {msg['t']!r}", reason="unexpected_message")
        did: str = _field(msg, "did", str)
        return did


def raise_if_error(msg: dict[str, Any]) -> None:
    """An ``err`` message from the relay becomes a :class:`HandshakeError` with its reason."""
    if msg.get("t") == "err":
        reason = msg.get("reason") if isinstance(msg.get("reason"), str) else "relay_error"
        text = msg.get("message") if isinstance(msg.get("message"), str) else ""
        err = HandshakeError(f"relay refused: {reason} {text}".strip(), reason=reason)
        retry = msg.get("retry_after")
        err.retry_after = float(retry) if isinstance(retry, int | float) else None  # type: ignore[attr-defined]
        raise err


# -- relay side ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RelayIdentity:
    """The relay's own identity and origin, shared by the WebSocket and REST paths."""

    identity: Identity
    origin: str

    def prove(self, client_challenge: bytes) -> bytes:
        """Answer a client's challenge, only if it is addressed to this relay (so the
        relay is never a signing oracle for other audiences)."""
        challenge = Challenge.from_cbor(client_challenge)
        if challenge.audience != relay_audience(self.origin):
            raise MalformedAuth(f"challenge is for {challenge.audience!r}, not this relay",
                                reason="wrong_audience")
        return answer(self.identity, challenge).to_cbor()


def challenge_message(relay: RelayIdentity, issuer: ChallengeIssuer, hello: dict[str, Any],
                      now: float) -> bytes:
    """The relay's answer to a client ``hello``: its DID, its proof, our challenge."""
    if hello.get("t") != "hello" or hello.get("v") != VERSION:
        raise HandshakeError("expected hello v1", reason="unexpected_message")
    proof = relay.prove(_field(hello, "challenge", bytes))
    return encode({"t": "challenge", "v": VERSION, "did": relay.identity.did, "proof": proof,
                   "challenge": issuer.issue(now).to_cbor()})


def verify_auth(issuer: ChallengeIssuer, msg: dict[str, Any], now: float) -> bytes:
    """The client's Ed25519 public key from its ``auth`` message; raises :class:`AuthError`."""
    if msg.get("t") != "auth":
        raise MalformedAuth("expected 'auth'", reason="unexpected_message")
    response = msg.get("response")
    if not isinstance(response, bytes):
        raise MalformedAuth("auth needs a response")
    return public_key_from_did(issuer.verify(response, now))


def error_message(reason: str, message: str = "", retry_after: float | None = None) -> bytes:
    msg: dict[str, Any] = {"t": "err", "reason": reason, "message": message[:200]}
    if retry_after is not None:
        msg["retry_after"] = max(1, round(retry_after))
    return encode(msg)
