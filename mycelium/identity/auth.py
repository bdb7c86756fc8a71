"""Password-less authentication by signature challenge (protocols/identity.md §5).

Sans-IO: the issuer never reads a clock or a socket; callers pass ``now`` (float seconds
on whatever clock they use consistently, e.g. ``time.time()`` or simnet's virtual clock)
and move the CBOR bytes themselves. Used by the relay and any remote party that needs to
know "this request comes from did:key:…".

Flow: the server ``issue(now)``s a challenge (32 random bytes, its audience, issued and
expiry times in integer milliseconds); the client signs
``b"mycelium-auth-v1" || canonical CBOR(challenge)`` with ``answer(identity, challenge)``;
the server ``verify(response, now)``s it and learns the DID. Each challenge is single use;
the issuer's memory is bounded (oldest outstanding challenges are evicted first, so a
flood of ``issue`` calls costs legitimate clients a retry, never unbounded memory).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mycelium.codec import cbor
from mycelium.errors import CodecError, MyceliumError
from mycelium.identity.didkey import DidError, public_key_from_did
from mycelium.identity.identity import Identity, verify_signature

SIGN_DOMAIN = b"mycelium-auth-v1"
VERSION = 1
NONCE_BYTES = 32
SIGNATURE_BYTES = 64
MAX_AUDIENCE_CHARS = 256
MAX_WIRE_BYTES = 1024
MAX_TTL_S = 3600.0
DEFAULT_MAX_OUTSTANDING = 10_000


class AuthError(MyceliumError):
    """Authentication failed; ``reason`` says why."""

    reason = "auth_failed"


class MalformedAuth(AuthError):
    """Bytes or fields that are not a well-formed challenge/response."""

    reason = "malformed_auth"


class ChallengeExpired(AuthError):
    reason = "challenge_expired"


class ChallengeReused(AuthError):
    """The challenge was already answered successfully (replay)."""

    reason = "challenge_reused"


class WrongAudience(AuthError):
    """The challenge names another service (a response phished by a different server)."""

    reason = "wrong_audience"


class BadAuthSignature(AuthError):
    reason = "bad_signature"


class UnknownChallenge(AuthError):
    """Never issued here, evicted, or altered (``reason`` ``challenge_mismatch``)."""

    reason = "unknown_challenge"


@dataclass(frozen=True)
class Challenge:
    """What the client signs. Times are integer milliseconds on the issuer's clock."""

    nonce: bytes
    audience: str
    issued_ms: int
    expires_ms: int

    def to_map(self) -> dict[str, Any]:
        return {"v": VERSION, "nonce": self.nonce, "aud": self.audience,
                "iat": self.issued_ms, "exp": self.expires_ms}

    def to_cbor(self) -> bytes:
        return cbor.encode(self.to_map())

    def signing_bytes(self) -> bytes:
        """``"mycelium-auth-v1" || canonical CBOR(challenge)``."""
        return SIGN_DOMAIN + self.to_cbor()

    @classmethod
    def from_map(cls, value: Any) -> Challenge:
        _expect_keys(value, {"v", "nonce", "aud", "iat", "exp"}, "challenge")
        if value["v"] != VERSION:
            raise MalformedAuth(f"unsupported challenge version {value['v']!r}")
        nonce, aud, iat, exp = value["nonce"], value["aud"], value["iat"], value["exp"]
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise MalformedAuth("challenge nonce must be 32 bytes")
        if not isinstance(aud, str) or not 0 < len(aud) <= MAX_AUDIENCE_CHARS:
            raise MalformedAuth(f"challenge audience must be 1..{MAX_AUDIENCE_CHARS} characters")
        if not (_is_uint(iat) and _is_uint(exp)) or exp <= iat:
            raise MalformedAuth("challenge times must be integers with iat < exp")
        return cls(nonce, aud, iat, exp)

    @classmethod
    def from_cbor(cls, data: bytes) -> Challenge:
        return cls.from_map(_decode(data))


@dataclass(frozen=True)
class ChallengeResponse:
    """The signed answer: the challenge echoed back, the signer's DID and the signature."""

    challenge: Challenge
    did: str
    signature: bytes

    def to_cbor(self) -> bytes:
        return cbor.encode({"v": VERSION, "challenge": self.challenge.to_map(),
                            "did": self.did, "sig": self.signature})

    @classmethod
    def from_cbor(cls, data: bytes) -> ChallengeResponse:
        value = _decode(data)
        _expect_keys(value, {"v", "challenge", "did", "sig"}, "response")
        if value["v"] != VERSION:
            raise MalformedAuth(f"unsupported response version {value['v']!r}")
        did, sig = value["did"], value["sig"]
        if not isinstance(did, str) or not isinstance(sig, bytes) or len(sig) != SIGNATURE_BYTES:
            raise MalformedAuth("response needs a did string and a 64-byte signature")
        return cls(Challenge.from_map(value["challenge"]), did, sig)


def answer(identity: Identity, challenge: Challenge) -> ChallengeResponse:
    """Client side: sign the challenge as ``identity``."""
    return ChallengeResponse(challenge, identity.did, identity.sign(challenge.signing_bytes()))


def check_signature(challenge: Challenge, response: ChallengeResponse) -> None:
    """That ``response`` signs ``challenge`` (the one the verifier holds, not the copy the
    response carries) with the key of the DID it presents; raises :class:`MalformedAuth`
    or :class:`BadAuthSignature`. Issuers check audience, nonce and expiry first."""
    try:
        public_key = public_key_from_did(response.did)
    except DidError as exc:
        raise MalformedAuth(f"response DID is not usable: {exc}") from exc
    if not verify_signature(public_key, challenge.signing_bytes(), response.signature):
        raise BadAuthSignature("signature does not verify for the presented DID")


class ChallengeIssuer:
    """Server side: issues single-use challenges for one audience and verifies answers."""

    def __init__(
        self,
        audience: str,
        ttl_s: float,
        *,
        max_outstanding: int = DEFAULT_MAX_OUTSTANDING,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not isinstance(audience, str) or not 0 < len(audience) <= MAX_AUDIENCE_CHARS:
            raise ValueError(f"audience must be 1..{MAX_AUDIENCE_CHARS} characters")
        if not 0 < ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl_s must be in (0, {MAX_TTL_S}]")
        if max_outstanding < 1:
            raise ValueError("max_outstanding must be positive")
        self.audience = audience
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._max = max_outstanding
        self._rng = rng
        self._outstanding: OrderedDict[bytes, Challenge] = OrderedDict()
        self._used: OrderedDict[bytes, int] = OrderedDict()  # nonce -> expires_ms

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    def issue(self, now: float) -> Challenge:
        """A fresh challenge valid from ``now`` for ``ttl_s``."""
        now_ms = _ms(now)
        self.purge(now)
        while len(self._outstanding) >= self._max:
            self._outstanding.popitem(last=False)
        nonce = self._rng(NONCE_BYTES)
        if len(nonce) != NONCE_BYTES:
            raise ValueError("rng returned the wrong number of bytes")
        challenge = Challenge(nonce, self.audience, now_ms, now_ms + self._ttl_ms)
        self._outstanding[nonce] = challenge
        return challenge

    def verify(self, response: ChallengeResponse | bytes, now: float) -> str:
        """The authenticated DID, or an :class:`AuthError` saying exactly why not."""
        if not isinstance(response, ChallengeResponse):
            response = ChallengeResponse.from_cbor(response)
        now_ms = _ms(now)
        presented = response.challenge
        if presented.audience != self.audience:
            raise WrongAudience(f"challenge is for {presented.audience!r}, not {self.audience!r}")
        if presented.nonce in self._used:
            raise ChallengeReused("challenge was already used")
        stored = self._outstanding.get(presented.nonce)
        if stored is None:
            if presented.expires_ms <= now_ms:
                raise ChallengeExpired("challenge expired")
            raise UnknownChallenge("challenge was not issued here (or was evicted)")
        if stored != presented:
            raise UnknownChallenge("challenge fields were altered", reason="challenge_mismatch")
        if now_ms >= stored.expires_ms:
            del self._outstanding[stored.nonce]
            raise ChallengeExpired("challenge expired")
        check_signature(stored, response)
        del self._outstanding[stored.nonce]
        self._remember_used(stored)
        return response.did

    def purge(self, now: float) -> None:
        """Forget expired challenges (called by ``issue``; call it on a timer too)."""
        now_ms = _ms(now)
        for nonce in [n for n, c in self._outstanding.items() if c.expires_ms <= now_ms]:
            del self._outstanding[nonce]
        for nonce in [n for n, exp in self._used.items() if exp <= now_ms]:
            del self._used[nonce]

    def _remember_used(self, challenge: Challenge) -> None:
        self._used[challenge.nonce] = challenge.expires_ms
        while len(self._used) > self._max:
            self._used.popitem(last=False)


def _ms(now: float) -> int:
    if not isinstance(now, int | float) or not math.isfinite(now) or now < 0:
        raise ValueError("now must be a finite, non-negative number of seconds")
    return math.floor(now * 1000)


def _is_uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _decode(data: bytes) -> Any:
    try:
        return cbor.decode_canonical(data, max_bytes=MAX_WIRE_BYTES)
    except CodecError as exc:
        raise MalformedAuth(f"auth message is not canonical CBOR: {exc}") from exc


def _expect_keys(value: Any, keys: set[str], what: str) -> None:
    if not isinstance(value, dict) or set(value) != keys:
        raise MalformedAuth(f"{what} must be a map with exactly the keys {sorted(keys)}")
