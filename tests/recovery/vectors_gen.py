"""Write protocols/vectors/devices.json and restore.json
(run: python -m tests.recovery.vectors_gen).

Device keys, the device certificate that opens a device's chain, and the pairing code's
MACs (protocols/identity.md §8, protocols/delta.md §10). Everything here is
deterministic: Ed25519 signatures are, and the sealed box of a grant (random) is given
as input to its MAC rather than produced.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from mycelium.codec import cbor
from mycelium.identity import devices
from mycelium.identity.identity import Identity
from mycelium.spaces import delegation

PATH = Path(__file__).resolve().parents[2] / "protocols" / "vectors" / "devices.json"
RESTORE_PATH = PATH.with_name("restore.json")


def build_restore() -> dict[str, Any]:
    """One restore answer (protocols/sync.md §11) with one genesis, framed."""
    from mycelium.codec.frames import encode_frame
    from mycelium.spaces.genesis import make_genesis

    creator = Identity.from_seed(bytes(range(32)))
    genesis = make_genesis(creator, "market", "community", 1_765_000_000_000, salt=bytes(16))
    payload = cbor.encode({"v": 1, "spaces": [genesis]})
    return {
        "description": "A /mycelium/restore/1 answer: one length-prefixed frame holding "
                       "canonical CBOR {v: 1, spaces: [genesis, ...]} (protocols/sync.md §11).",
        "genesis_hex": genesis.hex(),
        "space_id_hex": hashlib.sha256(genesis).hexdigest(),
        "frame_hex": encode_frame(payload).hex(),
    }


def build() -> dict[str, Any]:
    seed = bytes(range(32))
    owner = Identity.from_seed(seed)
    keys = []
    for device_id in (bytes(16), bytes(range(16, 32))):
        dev = devices.device_identity(owner, device_id)
        keys.append({"seed_hex": seed.hex(), "device_id_hex": device_id.hex(),
                     "device_seed_hex": dev.seed.hex(), "device_pub_hex": dev.public_key.hex(),
                     "device_did": dev.did})
    dev = devices.device_identity(owner, bytes(16))
    space = hashlib.sha256(b"vector space").digest()
    cert = delegation.issue(owner.signing_key, kind="device", space=space,
                            subject=dev.public_key, issued_ms=1_765_000_000_000)
    code = "ABCD-EFGH-IJKL-MNOP"
    temp = Identity.from_seed(bytes([7]) * 32)
    key = hashlib.sha256(devices.CODE_DOMAIN + devices.normalize_code(code).encode()).digest()
    request_mac = hmac.new(key, devices.REQUEST_DOMAIN + temp.public_key, hashlib.sha256).digest()
    box = bytes(range(80))
    grant_mac = hmac.new(key, devices.GRANT_DOMAIN + owner.did.encode() + temp.public_key + box,
                         hashlib.sha256).digest()
    request = cbor.encode({"v": 1, "temp": temp.public_key, "mac": request_mac})
    return {
        "description": "Device keys (HKDF label mycelium/device-key/v1/ || device_id), the "
                       "device certificate opening a device chain, and pairing-code MACs "
                       "(protocols/identity.md §8, protocols/delta.md §10).",
        "device_keys": keys,
        "certificate": {"identity_seed_hex": seed.hex(), "space_hex": space.hex(),
                        "device_pub_hex": dev.public_key.hex(), "issued_ms": cert.issued_ms,
                        "payload_hex": cert.payload().hex()},
        "pairing": {"code": code, "normalized": devices.normalize_code(code),
                    "code_key_hex": key.hex(), "temp_seed_hex": temp.seed.hex(),
                    "request_hex": request.hex(), "did": owner.did, "box_hex": box.hex(),
                    "grant_mac_hex": grant_mac.hex()},
    }


if __name__ == "__main__":
    PATH.write_text(json.dumps(build(), indent=2) + "\n")
    RESTORE_PATH.write_text(json.dumps(build_restore(), indent=2) + "\n")
    print(f"wrote {PATH} and {RESTORE_PATH}")
