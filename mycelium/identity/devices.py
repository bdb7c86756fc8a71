"""Device keys: every store writes with its own key, delegated by the identity
(protocols/delta.md §10 "Device chains", protocols/identity.md §8).

Why: a chain (one author's ``seq``/``prev`` run in a space) must have exactly one writer.
Two devices holding the same seed that both signed as the identity would sign two
envelopes with the same ``(author, seq)``: a fork, and every node refuses the second
chain and everything after it. So the identity key signs no envelopes any more; each
store picks a random 16-byte *device id* the first time it writes, and derives

    device_seed = HKDF-SHA256(ikm=seed, salt=empty, info="mycelium/device-key/v1/" || device_id)

The device key opens its chain in each space with a ``device`` delegation certificate
signed by the identity (protocols/delegation.md), so members and relays attribute its
writes to the identity. A new store (a second device, a recovered device, a store
rebuilt from scratch) gets a new device id, hence a new chain: it can never fork an
older one. Only copying a store file to a second machine would (docs/recovery.md).

Deriving instead of generating keeps the keystore's one secret the seed: the store holds
only the device id, which is not secret.

Adding a device without guardians (``mycelium device add`` / ``join``; protocols/identity.md
§7) is a three-message exchange bound to a one-time *pairing code* the first device shows:

1. first device: a random 80-bit code ``XXXX-XXXX-XXXX-XXXX`` (kept, with an expiry);
2. new device, given the code: a temporary key pair and a *request*
   ``{v, temp, mac = HMAC(K, "mycelium-device-request-v1" || temp)}``, ``K = SHA-256(
   "mycelium-device-code-v1" || code)``;
3. first device: checks the mac (the request comes from whoever holds the code), seals the
   seed to ``temp`` and answers with a *grant* ``{v, did, temp, box, mac = HMAC(K,
   "mycelium-device-grant-v1" || did || temp || box)}``; the code is spent;
4. new device: checks the mac (the grant comes from the device that showed the code),
   opens the box, and checks that the seed gives the grant's DID.

The seed only ever travels sealed to the new device's temporary key; the files may cross
any channel, and an attacker who holds them but not the code can neither obtain the seed
nor plant another identity (80 bits cannot be guessed offline).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any

from mycelium.codec import cbor
from mycelium.crypto.kdf import derive_key
from mycelium.crypto.sealed import SealedBoxError, open_sealed, seal_to
from mycelium.errors import CodecError, MyceliumError
from mycelium.identity.identity import Identity

DEVICE_KEY_LABEL = b"mycelium/device-key/v1/"
DEVICE_ID_BYTES = 16
VERSION = 1
CODE_DOMAIN = b"mycelium-device-code-v1"
REQUEST_DOMAIN = b"mycelium-device-request-v1"
GRANT_DOMAIN = b"mycelium-device-grant-v1"
CODE_BYTES = 10  # 80 bits: 16 base32 characters
#: How long a pairing code stays valid on the first device.
CODE_TTL_MS = 15 * 60 * 1000
MAX_MESSAGE_BYTES = 4096


class PairingError(MyceliumError):
    """A pairing code, request or grant that cannot be used (named reason)."""

    reason = "bad_pairing"


class WrongCode(PairingError):
    """The message was not made with this pairing code (or the code was mistyped)."""

    reason = "wrong_code"


@dataclass(frozen=True, slots=True)
class Grant:
    """A verified grant: the identity it carries, for the temporary key that asked."""

    did: str
    temp: bytes
    box: bytes


def new_device_id() -> bytes:
    """A fresh random device id (one per store)."""
    return os.urandom(DEVICE_ID_BYTES)


def device_identity(identity: Identity, device_id: bytes) -> Identity:
    """The key pair this device writes with (deterministic from seed and device id)."""
    if not isinstance(device_id, bytes) or len(device_id) != DEVICE_ID_BYTES:
        raise ValueError(f"device id must be {DEVICE_ID_BYTES} bytes")
    return Identity.from_seed(derive_key(identity.seed, DEVICE_KEY_LABEL + device_id))



def new_code() -> str:
    """A fresh one-time pairing code, ``XXXX-XXXX-XXXX-XXXX`` (base32, 80 bits)."""
    text = base64.b32encode(os.urandom(CODE_BYTES)).decode()
    return "-".join(text[i:i + 4] for i in range(0, 16, 4))


def normalize_code(code: str) -> str:
    """Upper case, no separators or spaces; raises :class:`PairingError` if malformed."""
    text = "".join(ch for ch in code.upper() if ch not in "- ")
    if len(text) != 16:
        raise PairingError("a pairing code has 16 letters and digits (XXXX-XXXX-XXXX-XXXX)")
    try:
        base64.b32decode(text)
    except ValueError as exc:
        raise PairingError("a pairing code uses the letters A-Z and digits 2-7") from exc
    return text


def _code_key(code: str) -> bytes:
    return hashlib.sha256(CODE_DOMAIN + normalize_code(code).encode()).digest()


def _mac(code: str, domain: bytes, *parts: bytes) -> bytes:
    return hmac.new(_code_key(code), domain + b"".join(parts), hashlib.sha256).digest()


def make_request(code: str) -> tuple[bytes, bytes]:
    """On the new device: ``(request bytes, temporary secret)``; keep the secret private."""
    temp = Identity.generate()
    body = {"v": VERSION, "temp": temp.public_key,
            "mac": _mac(code, REQUEST_DOMAIN, temp.public_key)}
    return cbor.encode(body), temp.seed


def read_request(request: bytes, code: str) -> bytes:
    """On the first device: the request's temporary key, if it was made with ``code``."""
    body = _decode(request, {"v", "temp", "mac"}, "device request")
    temp = body["temp"]
    if not isinstance(temp, bytes) or len(temp) != 32 or not isinstance(body["mac"], bytes):
        raise PairingError("device request fields have the wrong types")
    if not hmac.compare_digest(body["mac"], _mac(code, REQUEST_DOMAIN, temp)):
        raise WrongCode("this request was not made with the pairing code shown here")
    return temp


def make_grant(identity: Identity, request: bytes, code: str) -> bytes:
    """On the first device: seal the seed to the request's temporary key."""
    temp = read_request(request, code)
    box = seal_to(temp, identity.seed)
    did = identity.did
    return cbor.encode({"v": VERSION, "did": did, "temp": temp, "box": box,
                        "mac": _mac(code, GRANT_DOMAIN, did.encode(), temp, box)})


def accept_grant(grant: bytes, code: str, temp_secret: bytes) -> Identity:
    """On the new device: the identity the grant carries (checked against code and DID)."""
    body = _decode(grant, {"v", "did", "temp", "box", "mac"}, "device grant")
    did, temp, box = body["did"], body["temp"], body["box"]
    if not (isinstance(did, str) and isinstance(temp, bytes) and isinstance(box, bytes)
            and isinstance(body["mac"], bytes)):
        raise PairingError("device grant fields have the wrong types")
    if not hmac.compare_digest(body["mac"], _mac(code, GRANT_DOMAIN, did.encode(), temp, box)):
        raise WrongCode("this grant was not made with your pairing code")
    me = Identity.from_seed(temp_secret)
    if temp != me.public_key:
        raise PairingError("this grant answers another device's request", reason="wrong_device")
    try:
        seed = open_sealed(me, box)
    except SealedBoxError as exc:
        raise PairingError(f"the grant's box does not open: {exc}") from exc
    identity = Identity.from_seed(seed)
    if identity.did != did:
        raise PairingError(f"the grant's seed gives {identity.did}, not {did}",
                           reason="wrong_owner")
    return identity


def _decode(data: bytes, keys: set[str], what: str) -> dict[str, Any]:
    if not isinstance(data, bytes) or len(data) > MAX_MESSAGE_BYTES:
        raise PairingError(f"{what} must be at most {MAX_MESSAGE_BYTES} bytes")
    try:
        value = cbor.decode_canonical(data, max_bytes=MAX_MESSAGE_BYTES)
    except CodecError as exc:
        raise PairingError(f"{what} is not canonical CBOR: {exc}") from exc
    if not isinstance(value, dict) or set(value) != keys:
        raise PairingError(f"{what} must be a map with exactly {sorted(keys)}")
    if value["v"] != VERSION:
        raise PairingError(f"unsupported {what} version")
    return value
