"""protocols/vectors/relay.json must hold for this implementation (both ends)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from mycelium.codec import cbor
from mycelium.identity.auth import ChallengeIssuer, ChallengeReused
from mycelium.identity.didkey import did_from_public_key
from mycelium.identity.identity import Identity
from mycelium.relay import handshake
from tests.relay import vectors_gen
from tests.relay.vectors_gen import VECTORS, counter_rng


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / "relay.json").read_text())
    return data


def test_vectors_are_what_the_generator_builds() -> None:
    assert load() == json.loads(json.dumps(vectors_gen.build()))


def test_origins_and_audiences() -> None:
    for case in load()["origins"]:
        assert handshake.origin_of(case["url"]) == case["origin"]
        assert handshake.relay_audience(case["origin"]) == case["relay_audience"]
    with pytest.raises(handshake.HandshakeError):
        handshake.origin_of("ftp://relay.example.org")


def test_client_side_of_the_handshake() -> None:
    v = load()
    hs_v = v["handshake"]
    hs = handshake.ClientHandshake(Identity(bytes.fromhex(v["client_seed_hex"])), v["url"],
                                   expected_did=v["relay_did"], ttl_s=v["ttl_s"],
                                   rng=counter_rng(0xA0))
    assert hs.hello(v["now_s"]).hex() == hs_v["hello_hex"]
    assert hs.on_challenge(bytes.fromhex(hs_v["challenge_hex"]), v["now_s"] + 1).hex() == \
        hs_v["auth_hex"]
    assert hs.relay_did == v["relay_did"]
    assert hs.on_ok(bytes.fromhex(hs_v["ok_hex"])) == v["client_did"]
    with pytest.raises(handshake.HandshakeError) as err:
        hs.on_ok(bytes.fromhex(hs_v["err_hex"]))
    assert err.value.reason == "challenge_reused"


def test_client_refuses_another_relay_did() -> None:
    v = load()
    hs = handshake.ClientHandshake(Identity(bytes.fromhex(v["client_seed_hex"])), v["url"],
                                   expected_did=Identity.generate().did, ttl_s=v["ttl_s"],
                                   rng=counter_rng(0xA0))
    hs.hello(v["now_s"])
    with pytest.raises(handshake.HandshakeError) as err:
        hs.on_challenge(bytes.fromhex(v["handshake"]["challenge_hex"]), v["now_s"] + 1)
    assert err.value.reason == "relay_identity_changed"


def test_relay_side_of_the_handshake() -> None:
    v = load()
    hs_v = v["handshake"]
    relay = handshake.RelayIdentity(Identity(bytes.fromhex(v["relay_seed_hex"])),
                                    handshake.origin_of(v["url"]))
    issuer = ChallengeIssuer(relay.origin, v["ttl_s"], rng=counter_rng(0xB0))
    hello = handshake.decode(bytes.fromhex(hs_v["hello_hex"]))
    assert handshake.challenge_message(relay, issuer, hello, v["now_s"]).hex() == \
        hs_v["challenge_hex"]
    auth = handshake.decode(bytes.fromhex(hs_v["auth_hex"]))
    pub = handshake.verify_auth(issuer, auth, v["now_s"] + 1)
    assert did_from_public_key(pub) == v["client_did"]
    with pytest.raises(ChallengeReused):
        handshake.verify_auth(issuer, auth, v["now_s"] + 2)
    assert handshake.decode(bytes.fromhex(hs_v["sync_hex"])) == {"t": "sync"}


def test_rest_encodings() -> None:
    v = load()
    rest = v["rest"]
    token = rest["authorization"].removeprefix("Mycelium ")
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert raw == handshake.decode(bytes.fromhex(v["handshake"]["auth_hex"]))["response"]
    param = rest["vv_param"]
    vv = cbor.decode(base64.urlsafe_b64decode(param + "=" * (-len(param) % 4)))
    assert {a.hex(): s for a, s in vv.items()} == rest["vv"]
    # the relay's parser agrees
    from mycelium.relay.server import _vector_param

    assert _vector_param(param) == vv


def test_refusal_statuses() -> None:
    by_status = {r["status"]: r["reasons"] for r in load()["refusals"]}
    assert set(by_status) == {400, 401, 403, 404, 413, 429, 503}
    assert "over_quota" in by_status[429] and "challenge_reused" in by_status[401]
