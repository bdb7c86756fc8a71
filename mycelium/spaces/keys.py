"""What the spaces layer needs from an identity, and epoch-key sealing (protocols/spaces.md §5).

Spaces code only needs a public key, a signing key and the seed (to open sealed boxes),
so it depends on this small protocol rather than on the keystore. Group keys travel as
sealed boxes (``mycelium.crypto.sealed``) whose plaintext binds the key to its space, so
an admin of another space cannot replay a box into this one.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.exceptions import CryptoError

from mycelium.crypto import aead
from mycelium.errors import MyceliumError

#: Prefix of the plaintext inside every epoch-key sealed box.
KEY_BOX_DOMAIN = b"mycelium-epoch-key-v1"


class KeyHolder(Protocol):
    """The subset of :class:`mycelium.identity.identity.Identity` used here."""

    @property
    def seed(self) -> bytes: ...

    @property
    def public_key(self) -> bytes: ...

    @property
    def signing_key(self) -> Ed25519PrivateKey: ...


def box_plaintext(space_id: bytes, group_key: bytes) -> bytes:
    """``KEY_BOX_DOMAIN || space_id || group_key`` (fixed layout, 85 bytes)."""
    return KEY_BOX_DOMAIN + space_id + group_key


def seal_group_key(recipient: bytes, space_id: bytes, group_key: bytes) -> bytes:
    """Seal ``group_key`` of ``space_id`` to one member's Ed25519 public key."""
    from mycelium.crypto.sealed import seal_to

    return seal_to(recipient, box_plaintext(space_id, group_key))


def open_group_key(identity: KeyHolder, space_id: bytes, box: bytes) -> bytes | None:
    """Open a key box addressed to ``identity``; None if it is not ours or is malformed."""
    from mycelium.crypto.sealed import open_sealed

    try:
        plain = open_sealed(identity, box)
    except (MyceliumError, CryptoError, ValueError, TypeError):
        return None
    expected_prefix = KEY_BOX_DOMAIN + space_id
    if len(plain) != len(expected_prefix) + aead.KEY_BYTES or not plain.startswith(expected_prefix):
        return None
    return plain[len(expected_prefix):]
