"""Space genesis: the signed document whose hash is the space id (protocols/spaces.md §2).

A genesis is a canonical CBOR map signed by its creator. ``space_id = sha256(genesis)``
over the exact bytes (signature included), so a space id commits to its name, kind and
creator, and nobody can mint a second genesis with the same id.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Literal, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mycelium.codec import cbor
from mycelium.errors import CodecError
from mycelium.spaces.errors import BadGenesis
from mycelium.spaces.keys import KeyHolder

VERSION = 1
SIGN_DOMAIN = b"mycelium-genesis-v1"
TYPE = "mycelium-space"
MAX_GENESIS_BYTES = 1024
MAX_NAME_CHARS = 64
SALT_BYTES = 16
KINDS = ("personal", "community")
FIELDS = frozenset({"v", "type", "name", "kind", "creator", "created_ms", "salt", "sig"})

SpaceKind = Literal["personal", "community"]


@dataclass(frozen=True, slots=True)
class Genesis:
    """A verified genesis. ``raw`` are the exact bytes hashed into ``space_id``."""

    name: str
    kind: SpaceKind
    creator: bytes
    created_ms: int
    salt: bytes
    raw: bytes

    @property
    def space_id(self) -> bytes:
        return hashlib.sha256(self.raw).digest()


def make_genesis(
    identity: KeyHolder,
    name: str,
    kind: SpaceKind,
    created_ms: int,
    salt: bytes | None = None,
) -> bytes:
    """Build and sign a genesis. ``salt=None`` draws 16 random bytes (a fresh space id).

    A fixed salt makes the result deterministic (Ed25519 signatures are), which the
    personal space uses so that every device of one identity derives the same space id.
    """
    body: dict[str, Any] = {
        "v": VERSION, "type": TYPE, "name": name, "kind": kind,
        "creator": identity.public_key, "created_ms": created_ms,
        "salt": os.urandom(SALT_BYTES) if salt is None else salt,
    }
    _check_body(body)
    sig = identity.signing_key.sign(SIGN_DOMAIN + cbor.encode(body))
    raw = cbor.encode({**body, "sig": sig})
    parse_genesis(raw)
    return raw


def parse_genesis(data: bytes) -> Genesis:
    """Decode and verify genesis bytes; raises :class:`BadGenesis` with a precise message."""
    if not isinstance(data, bytes) or len(data) > MAX_GENESIS_BYTES:
        raise BadGenesis(f"genesis must be bytes of at most {MAX_GENESIS_BYTES}")
    try:
        m = cbor.decode_canonical(data, max_bytes=MAX_GENESIS_BYTES)
    except CodecError as exc:
        raise BadGenesis(f"genesis is not canonical CBOR: {exc}") from exc
    if not isinstance(m, dict) or set(m) != FIELDS:
        raise BadGenesis(f"genesis must be a map with exactly the fields {sorted(FIELDS)}")
    sig = m.pop("sig")
    _check_body(m)
    if not isinstance(sig, bytes) or len(sig) != 64:
        raise BadGenesis("genesis sig must be 64 bytes")
    try:
        Ed25519PublicKey.from_public_bytes(m["creator"]).verify(sig, SIGN_DOMAIN + cbor.encode(m))
    except (InvalidSignature, ValueError) as exc:
        raise BadGenesis("genesis signature does not verify") from exc
    return Genesis(name=m["name"], kind=cast(SpaceKind, m["kind"]), creator=m["creator"],
                   created_ms=m["created_ms"], salt=m["salt"], raw=bytes(data))


def _check_body(m: dict[str, Any]) -> None:
    def need(cond: bool, what: str) -> None:
        if not cond:
            raise BadGenesis(f"genesis {what}")

    need(m.get("v") == VERSION, f"version must be {VERSION}")
    need(m.get("type") == TYPE, f"type must be {TYPE!r}")
    name = m.get("name")
    need(isinstance(name, str) and 1 <= len(name) <= MAX_NAME_CHARS and name.isprintable(),
         f"name must be 1..{MAX_NAME_CHARS} printable characters")
    need(m.get("kind") in KINDS, f"kind must be one of {KINDS}")
    creator = m.get("creator")
    need(isinstance(creator, bytes) and len(creator) == 32, "creator must be a 32-byte Ed25519 key")
    created = m.get("created_ms")
    need(isinstance(created, int) and not isinstance(created, bool) and 0 <= created < 2**63,
         "created_ms must be a non-negative integer")
    salt = m.get("salt")
    need(isinstance(salt, bytes) and len(salt) <= SALT_BYTES,
         f"salt must be at most {SALT_BYTES} bytes")
