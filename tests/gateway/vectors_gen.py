"""Regenerate protocols/vectors/delegation.json and gateway.json:
``python -m tests.gateway.vectors_gen`` (deterministic: fixed seeds, times and nonces)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mycelium.codec import cbor
from mycelium.crypto import aead
from mycelium.crypto.kdf import derive_key
from mycelium.gateway import custody, market, webhooks
from mycelium.identity.identity import Identity
from mycelium.log.envelope import Kind, seal
from mycelium.spaces import delegation

VECTORS = Path(__file__).resolve().parents[2] / "protocols" / "vectors"
ISSUER = Identity.from_seed(bytes(range(32)))
SUBJECT = Identity.from_seed(bytes(range(32, 64)))
SPACE = hashlib.sha256(b"mycelium vector space").digest()


def _cert_case(kind: delegation.DelegationKind, issued_ms: int) -> dict[str, Any]:
    cert = delegation.issue(ISSUER.signing_key, kind=kind, space=SPACE,
                            subject=SUBJECT.public_key, issued_ms=issued_ms)
    env = seal(signer=SUBJECT.signing_key, space=SPACE, seq=1, prev=None, epoch=0,
               payload=cert.payload(), group_key=None, kind=Kind.CONTROL)
    return {"kind": kind, "issuer_seed_hex": ISSUER.seed.hex(),
            "subject_seed_hex": SUBJECT.seed.hex(), "space_hex": SPACE.hex(),
            "issued_ms": issued_ms, "signing_input_hex": cert.signing_input().hex(),
            "sig_hex": cert.sig.hex(), "payload_hex": cert.payload().hex(),
            "envelope_hex": env.raw.hex()}


def _invalid() -> list[dict[str, str]]:
    good = delegation.issue(ISSUER.signing_key, kind="custodial", space=SPACE,
                            subject=SUBJECT.public_key, issued_ms=1)
    body = good.body()

    def raw(b: dict[str, Any], sig: bytes = good.sig, op: str = "delegate") -> str:
        return cbor.encode({"op": op, "cert": b, "sig": sig}).hex()

    bad_sig = bytes([good.sig[0] ^ 1]) + good.sig[1:]
    resigned = {**body, "subject": ISSUER.public_key}
    self_sig = ISSUER.sign(delegation.SIGN_DOMAIN + cbor.encode(resigned))
    unknown_kind = {**body, "kind": "admin"}
    return [
        {"what": "signature of another certificate", "payload_hex": raw(body, bad_sig)},
        {"what": "issuer delegates to itself", "payload_hex": raw(resigned, self_sig)},
        {"what": "unknown kind", "payload_hex": raw(unknown_kind,
                                                     ISSUER.sign(delegation.SIGN_DOMAIN
                                                                 + cbor.encode(unknown_kind)))},
        {"what": "extra field", "payload_hex": raw({**body, "x": 1})},
        {"what": "version 2", "payload_hex": raw({**body, "v": 2})},
        {"what": "truncated", "payload_hex": raw(body)[:-2]},
    ]


def delegation_vectors() -> dict[str, Any]:
    return {"description": "protocols/delegation.md; checked by tests/gateway/test_vectors.py",
            "valid": [_cert_case("custodial", 1_764_979_200_000), _cert_case("device", 0)],
            "invalid": _invalid()}


def gateway_vectors() -> dict[str, Any]:
    twilio_params = [("CallSid", "CA1234567890ABCDE"), ("Caller", "+12349013030"),
                     ("Digits", "1234"), ("From", "+12349013030"), ("To", "+18005551212")]
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    gw = Identity.from_seed(bytes(range(64, 96)))
    key = derive_key(gw.seed, custody.CUSTODY_LABEL)
    nonce = bytes(range(24))
    sender = "wa:+5511999990001"
    sealed = nonce + aead.encrypt(key, nonce, SUBJECT.seed, custody.AAD_PREFIX + sender.encode())
    return {
        "description": "protocols/gateway.md; checked by tests/gateway/test_vectors.py",
        "twilio": [{"token": "12345", "url": url, "params": twilio_params,
                    "signature": webhooks.twilio_signature("12345", url, twilio_params)}],
        "meta": [{"secret": "meta-app-secret", "body_hex": body.hex(),
                  "header": webhooks.meta_signature("meta-app-secret", body)}],
        "custody": [{"gateway_seed_hex": gw.seed.hex(), "label": custody.CUSTODY_LABEL.decode(),
                     "key_hex": key.hex(), "sender": sender, "nonce_hex": nonce.hex(),
                     "seed_hex": SUBJECT.seed.hex(), "sealed_hex": sealed.hex()}],
        "listing_id": [{"provider_id": p, "doc": market.listing_id(p)}
                       for p in ("SM0001", "wamid.HBgLNTUxMTk5OTk5MDAwMRUCABIYFjNFQjA=",
                                 "aWdfZAG1faXRlbToxOklHTWVzc2FnZAZDZD")],
    }


def main() -> None:
    for name, data in (("delegation", delegation_vectors()), ("gateway", gateway_vectors())):
        (VECTORS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
