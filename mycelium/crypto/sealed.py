"""Anonymous sealed boxes to an Ed25519 identity (libsodium ``crypto_box_seal``).

Why: members are known by their Ed25519 DID, so anything encrypted *to* a member (epoch
keys, guardian shares) must be addressable by that key alone. The recipient's Ed25519
public key is converted to X25519 (RFC 7748 birational map, libsodium
``crypto_sign_ed25519_pk_to_curve25519``) and a sealed box is built to it: an ephemeral
X25519 key, XSalsa20-Poly1305, 48 bytes of overhead, sender anonymous.

The recipient's X25519 secret is derived from the 32-byte Ed25519 seed exactly as
libsodium does (SHA-512 of the seed, clamped), so the same seed always opens what was
sealed to its DID.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from nacl import bindings
from nacl.exceptions import CryptoError

from mycelium.errors import MyceliumError

ED25519_PUBLIC_BYTES = 32
SEED_BYTES = 32
#: Ephemeral X25519 public key (32) + Poly1305 tag (16).
SEAL_OVERHEAD = bindings.crypto_box_SEALBYTES
#: Upper bound for one sealed plaintext; sealed boxes carry keys and shares, not data.
MAX_SEALED_PLAINTEXT = 1 << 20


class SealedBoxError(MyceliumError):
    """A sealed box could not be built or opened (``wrong_key``, ``bad_key``, ``too_short``)."""

    reason = "sealed_box"


@runtime_checkable
class HasSeed(Protocol):
    """Anything that exposes the 32-byte Ed25519 seed (e.g. ``Identity``)."""

    @property
    def seed(self) -> bytes: ...


def x25519_public_from_ed25519(ed25519_pub: bytes) -> bytes:
    """The X25519 public key that corresponds to an Ed25519 public key."""
    if not isinstance(ed25519_pub, bytes) or len(ed25519_pub) != ED25519_PUBLIC_BYTES:
        raise SealedBoxError("recipient must be a 32-byte Ed25519 public key", reason="bad_key")
    try:
        return bindings.crypto_sign_ed25519_pk_to_curve25519(ed25519_pub)
    except (CryptoError, ValueError) as exc:
        # Low-order / non-canonical points are refused by libsodium.
        raise SealedBoxError(f"not a usable Ed25519 public key: {exc}", reason="bad_key") from exc


def x25519_keypair_from_seed(seed: bytes) -> tuple[bytes, bytes]:
    """``(x25519_private, x25519_public)`` for the Ed25519 key pair generated from ``seed``."""
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise SealedBoxError("seed must be 32 bytes", reason="bad_key")
    ed_pub, ed_sk = bindings.crypto_sign_seed_keypair(seed)
    x_priv = bindings.crypto_sign_ed25519_sk_to_curve25519(ed_sk)
    x_pub = bindings.crypto_sign_ed25519_pk_to_curve25519(ed_pub)
    return x_priv, x_pub


def seal_to(recipient_ed25519_pub: bytes, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` so only the holder of the Ed25519 key's seed can read it."""
    if len(plaintext) > MAX_SEALED_PLAINTEXT:
        raise SealedBoxError(
            f"sealed plaintext of {len(plaintext)} bytes exceeds {MAX_SEALED_PLAINTEXT}",
            reason="oversized",
        )
    x_pub = x25519_public_from_ed25519(recipient_ed25519_pub)
    return bindings.crypto_box_seal(bytes(plaintext), x_pub)


def open_sealed(recipient: HasSeed | bytes, ciphertext: bytes) -> bytes:
    """Open a box made by :func:`seal_to`; ``recipient`` is an Identity or a 32-byte seed.

    Raises ``SealedBoxError(reason="wrong_key")`` when the box was sealed to someone else
    or was tampered with (the two are indistinguishable by design).
    """
    seed = recipient if isinstance(recipient, bytes) else recipient.seed
    x_priv, x_pub = x25519_keypair_from_seed(seed)
    if not isinstance(ciphertext, bytes) or len(ciphertext) < SEAL_OVERHEAD:
        raise SealedBoxError("sealed box shorter than its 48-byte overhead", reason="too_short")
    try:
        return bindings.crypto_box_seal_open(ciphertext, x_pub, x_priv)
    except CryptoError as exc:
        raise SealedBoxError(
            "sealed box cannot be opened with this key (wrong recipient or tampered)",
            reason="wrong_key",
        ) from exc
