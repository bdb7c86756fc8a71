"""XChaCha20-Poly1305 AEAD (libsodium's IETF construction via PyNaCl).

192-bit random nonces make random nonce generation safe for the lifetime of a group key,
which matters because many devices encrypt under the same epoch key without coordination.
"""

from __future__ import annotations

import os

from nacl import bindings
from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib

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
    """Inverse of :func:`encrypt`; raises :class:`DecryptError` on any mismatch.

    Calls libsodium through PyNaCl's own cffi handle rather than
    ``nacl.bindings``: this runs once per received delta, and the binding's six generic
    argument checks cost as much as the decryption of a small payload. The checks that
    matter (types, key and nonce sizes, tag length) are done here.
    """
    _check(key, nonce)
    if type(ciphertext) is not bytes or type(aad) is not bytes:
        raise TypeError("AEAD ciphertext and associated data must be bytes")
    size = len(ciphertext) - TAG_BYTES
    if size < 0:
        raise DecryptError("AEAD ciphertext shorter than its tag")
    out = _ffi.new("unsigned char[]", size)
    res = _lib.crypto_aead_xchacha20poly1305_ietf_decrypt(  # mlen_p NULL: it is ``size``
        out, _ffi.NULL, _ffi.NULL, ciphertext, len(ciphertext), aad, len(aad), nonce, key)
    if res != 0:
        raise DecryptError("AEAD authentication failed")
    return _ffi.buffer(out, size)[:]


def _check(key: bytes, nonce: bytes) -> None:
    if type(key) is not bytes or type(nonce) is not bytes:
        raise TypeError("AEAD key and nonce must be bytes")
    if len(key) != KEY_BYTES:
        raise ValueError(f"AEAD key must be {KEY_BYTES} bytes, got {len(key)}")
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"AEAD nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
