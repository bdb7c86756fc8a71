"""protocols/vectors/delegation.json and gateway.json hold for this implementation (and
Twilio's published signature example for the webhook check)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twilio.request_validator import RequestValidator

from mycelium.crypto.kdf import derive_key
from mycelium.gateway import custody, market, webhooks
from mycelium.identity.identity import Identity
from mycelium.log.envelope import Kind, decode, seal
from mycelium.spaces import delegation

VECTORS = Path(__file__).resolve().parents[2] / "protocols" / "vectors"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / f"{name}.json").read_text())
    return data


def test_delegation_vectors() -> None:
    v = load("delegation")
    for case in v["valid"]:
        issuer = Identity.from_seed(bytes.fromhex(case["issuer_seed_hex"]))
        subject = Identity.from_seed(bytes.fromhex(case["subject_seed_hex"]))
        space = bytes.fromhex(case["space_hex"])
        cert = delegation.issue(issuer.signing_key, kind=case["kind"], space=space,
                                subject=subject.public_key, issued_ms=case["issued_ms"])
        assert cert.signing_input().hex() == case["signing_input_hex"]
        assert cert.sig.hex() == case["sig_hex"]
        assert cert.payload().hex() == case["payload_hex"]
        env = seal(signer=subject.signing_key, space=space, seq=1, prev=None, epoch=0,
                   payload=cert.payload(), group_key=None, kind=Kind.CONTROL)
        assert env.raw.hex() == case["envelope_hex"]
        assert delegation.certificate_of(decode(env.raw), space) == cert
    for case in v["invalid"]:
        with pytest.raises(delegation.BadDelegation):
            delegation.decode(bytes.fromhex(case["payload_hex"]))


def test_webhook_signature_vectors() -> None:
    v = load("gateway")
    for case in v["twilio"]:
        params = [tuple(p) for p in case["params"]]
        assert webhooks.twilio_signature(case["token"], case["url"], params) == case["signature"]
        assert RequestValidator(case["token"]).validate(case["url"], dict(params),
                                                        case["signature"])
    assert v["twilio"][0]["signature"] == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="  # Twilio's docs
    for case in v["meta"]:
        body = bytes.fromhex(case["body_hex"])
        assert webhooks.meta_signature(case["secret"], body) == case["header"]
        webhooks.verify_meta(case["secret"], body, case["header"])


def test_custody_and_listing_id_vectors() -> None:
    v = load("gateway")
    for case in v["custody"]:
        gw = Identity.from_seed(bytes.fromhex(case["gateway_seed_hex"]))
        assert case["label"].encode() == custody.CUSTODY_LABEL
        assert derive_key(gw.seed, custody.CUSTODY_LABEL).hex() == case["key_hex"]
        opened = custody.Custody(gw).open(case["sender"], bytes.fromhex(case["sealed_hex"]))
        assert opened.seed.hex() == case["seed_hex"]
        with pytest.raises(custody.CustodyError):  # bound to its sender
            custody.Custody(gw).open(case["sender"] + "0", bytes.fromhex(case["sealed_hex"]))
    for case in v["listing_id"]:
        assert market.listing_id(case["provider_id"]) == case["doc"]
