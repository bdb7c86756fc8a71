"""Generate protocols/vectors/relay.json (run: ``python -m tests.relay.vectors_gen``).

Fixed seeds, nonces and times make every message byte-stable (Ed25519 is deterministic);
``test_vectors.py`` recomputes each value and checks both ends accept them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mycelium.codec import cbor
from mycelium.identity.auth import ChallengeIssuer
from mycelium.identity.identity import Identity
from mycelium.relay import handshake
from mycelium.relay.errors import (
    BadRequest,
    Forbidden,
    Limited,
    NotFound,
    RelayError,
    TooLarge,
    Unauthenticated,
    Unavailable,
)

VECTORS = Path(__file__).resolve().parents[2] / "protocols" / "vectors"
CLIENT_SEED = bytes([0x11]) * 32
RELAY_SEED = bytes([0x22]) * 32
URL = "https://relay.example.org"
NOW_S = 1_800_000_000.0
TTL_S = 60.0

ORIGINS = [
    ("https://relay.example.org", "https://relay.example.org:443"),
    ("https://Relay.Example.org:8443/base/", "https://relay.example.org:8443"),
    ("http://127.0.0.1:8470", "http://127.0.0.1:8470"),
    ("wss://relay.example.org/v1/sync", "https://relay.example.org:443"),
    ("http://[::1]:9000", "http://[::1]:9000"),
]

REFUSALS: list[tuple[type[RelayError], list[str]]] = [
    (BadRequest, ["bad_request", "bad_cbor", "bad_genesis", "bad_space_id", "bad_vector",
                  "unexpected_message", "wrong_origin"]),
    (Unauthenticated, ["unauthenticated", "malformed_auth", "wrong_audience",
                       "challenge_expired", "challenge_reused", "unknown_challenge",
                       "challenge_mismatch", "bad_signature"]),
    (Forbidden, ["not_member"]),
    (NotFound, ["unknown_space"]),
    (TooLarge, ["too_large"]),
    (Limited, ["rate_limited", "over_quota", "too_many_spaces", "too_many_sessions"]),
    (Unavailable, ["too_many_sessions"]),
]


def counter_rng(start: int) -> Callable[[int], bytes]:
    state = {"i": start}

    def rng(n: int) -> bytes:
        state["i"] += 1
        return bytes([state["i"]]) * n
    return rng


def build() -> dict[str, Any]:
    client, relay = Identity(CLIENT_SEED), Identity(RELAY_SEED)
    hs = handshake.ClientHandshake(client, URL, expected_did=relay.did, ttl_s=TTL_S,
                                   rng=counter_rng(0xA0))
    hello = hs.hello(NOW_S)
    issuer = ChallengeIssuer(handshake.origin_of(URL), TTL_S, rng=counter_rng(0xB0))
    relay_id = handshake.RelayIdentity(relay, handshake.origin_of(URL))
    challenge = handshake.challenge_message(relay_id, issuer, handshake.decode(hello), NOW_S)
    auth = hs.on_challenge(challenge, NOW_S + 1)
    ok = handshake.encode({"t": "ok", "did": client.did})
    response = handshake.decode(auth)["response"]
    vv = {bytes([0x33]) * 32: 7, bytes([0x44]) * 32: 2}
    return {
        "description": "Relay handshake and REST encodings (protocols/relay.md). Seeds: "
                       "client 0x11*32, relay 0x22*32; now_s is the wall clock of both "
                       "sides; nonces come from counters. Messages are canonical CBOR (hex).",
        "url": URL,
        "now_s": NOW_S,
        "ttl_s": TTL_S,
        "client_seed_hex": CLIENT_SEED.hex(),
        "relay_seed_hex": RELAY_SEED.hex(),
        "client_did": client.did,
        "relay_did": relay.did,
        "origins": [{"url": u, "origin": o, "relay_audience": handshake.relay_audience(o)}
                    for u, o in ORIGINS],
        "handshake": {
            "hello_hex": hello.hex(),
            "challenge_hex": challenge.hex(),
            "auth_hex": auth.hex(),
            "ok_hex": ok.hex(),
            "err_hex": handshake.error_message("challenge_reused", "challenge was already used"
                                               ).hex(),
            "sync_hex": handshake.encode({"t": "sync"}).hex(),
        },
        "rest": {
            "authorization": "Mycelium " + base64.urlsafe_b64encode(response).decode()
                             .rstrip("="),
            "vv_param": base64.urlsafe_b64encode(cbor.encode(vv)).decode().rstrip("="),
            "vv": {a.hex(): s for a, s in vv.items()},
        },
        "refusals": [{"status": cls.status, "reasons": reasons} for cls, reasons in REFUSALS],
    }


def main() -> None:
    path = VECTORS / "relay.json"
    path.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
