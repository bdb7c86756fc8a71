"""XChaCha20-Poly1305 AEAD (libsodium's IETF construction via PyNaCl).

192-bit random nonces make random nonce generation safe for the lifetime of a group key,
which matters because many devices encrypt under the same epoch key without coordination.
"""

from __future__ import annotations

import os

from nacl import bindings
from nacl.exceptions import CryptoError

from mycelium.errors import MyceliumError

KEY_BYTES = 32
NONCE_BYTES = 24
TAG_BYTES = 16


class DecryptError(MyceliumError):
    """Ciphertext failed authentication: wrong key, wrong associated data or tampering."""

    reason = "decrypt_failed"


def new_nonce() -> bytes:
    """A fresh random 24-byte nonce."""
    return os.urandom(NONCE_BYTES)


def encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext``; ``aad`` is authenticated but not encrypted."""
    _check(key, nonce)
    return bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)


def decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Inverse of :func:`encrypt`; raises :class:`DecryptError` on any mismatch."""
    _check(key, nonce)
    try:
        return bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad, nonce, key)
    except CryptoError as exc:
        raise DecryptError("AEAD authentication failed") from exc


def _check(key: bytes, nonce: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise ValueError(f"AEAD key must be {KEY_BYTES} bytes, got {len(key)}")
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"AEAD nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
