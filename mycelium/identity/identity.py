"""The Seed identity: one Ed25519 key pair from a 32-byte seed (DESIGN.md §2).

Everything a person is in Mycelium follows from the seed: the signing key, the did:key,
the libp2p PeerID (the host key *is* this key), the X25519 key that opens sealed boxes
and the Soil storage key. Keeping the seed as the single root lets the keystore, the
guardian shares and device-to-device transfer all carry just 32 bytes.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from mycelium.crypto.kdf import STORAGE_KEY_LABEL, derive_key
from mycelium.crypto.sealed import x25519_keypair_from_seed
from mycelium.errors import MyceliumError
from mycelium.identity.didkey import did_from_public_key, peer_id_from_public_key

if TYPE_CHECKING:
    from libp2p.crypto.keys import KeyPair

SEED_BYTES = 32
SIGNATURE_BYTES = 64


class IdentityError(MyceliumError):
    """A seed that cannot make an identity."""

    reason = "bad_seed"


class Identity:
    """An Ed25519 identity derived from ``seed``; treat instances as secret material."""

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_BYTES:
            raise IdentityError("identity seed must be 32 bytes")
        self._seed = bytes(seed)

    @classmethod
    def generate(cls) -> Identity:
        """A fresh identity from the operating system's CSPRNG."""
        return cls(os.urandom(SEED_BYTES))

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """The identity of ``seed`` (deterministic: same seed, same DID)."""
        return cls(seed)

    @property
    def seed(self) -> bytes:
        return self._seed

    @cached_property
    def signing_key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self._seed)

    @cached_property
    def public_key(self) -> bytes:
        """Raw 32-byte Ed25519 public key."""
        return self.signing_key.public_key().public_bytes_raw()

    @cached_property
    def did(self) -> str:
        return did_from_public_key(self.public_key)

    @cached_property
    def peer_id(self) -> str:
        return peer_id_from_public_key(self.public_key)

    @cached_property
    def storage_key(self) -> bytes:
        """32-byte key for Soil's encryption at rest (HKDF label ``mycelium/soil-storage/v1``)."""
        return derive_key(self._seed, STORAGE_KEY_LABEL)

    def sign(self, message: bytes) -> bytes:
        """64-byte Ed25519 signature (RFC 8032, deterministic)."""
        return self.signing_key.sign(message)

    def x25519_private(self) -> bytes:
        """X25519 secret matching :meth:`x25519_public` (opens boxes sealed to this DID)."""
        return x25519_keypair_from_seed(self._seed)[0]

    def x25519_public(self) -> bytes:
        """The X25519 form of the Ed25519 public key (what ``seal_to`` encrypts to)."""
        return x25519_keypair_from_seed(self._seed)[1]

    def libp2p_key_pair(self) -> KeyPair:
        """A py-libp2p KeyPair for the host; its PeerID equals :attr:`peer_id`."""
        from libp2p.crypto.ed25519 import create_new_key_pair

        return create_new_key_pair(self._seed)

    def __repr__(self) -> str:
        return f"Identity({self.did})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and other.public_key == self.public_key

    def __hash__(self) -> int:
        return hash(self.public_key)


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True iff ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``."""
    if len(public_key) != 32 or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
