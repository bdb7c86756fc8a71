"""XChaCha20-Poly1305: our direct libsodium call agrees with PyNaCl's binding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl import bindings

from mycelium.crypto import aead

KEY = bytes(range(32))
NONCE = bytes(range(24))


@given(st.binary(max_size=300), st.binary(max_size=64))
def test_round_trip_and_agreement(plaintext: bytes, aad_bytes: bytes) -> None:
    ct = aead.encrypt(KEY, NONCE, plaintext, aad_bytes)
    assert ct == bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad_bytes,
                                                                      NONCE, KEY)
    assert aead.decrypt(KEY, NONCE, ct, aad_bytes) == plaintext


def test_any_change_fails_authentication() -> None:
    ct = aead.encrypt(KEY, NONCE, b"diary entry", b"header")
    for args in [(bytes(32), NONCE, ct, b"header"), (KEY, bytes(24), ct, b"header"),
                 (KEY, NONCE, ct, b"headex"), (KEY, NONCE, ct[:-1] + b"\x00", b"header"),
                 (KEY, NONCE, ct[:15], b"header"), (KEY, NONCE, b"", b"")]:
        with pytest.raises(aead.DecryptError):
            aead.decrypt(*args)


def test_wrong_sizes_and_types() -> None:
    ct = aead.encrypt(KEY, NONCE, b"x", b"")
    with pytest.raises(ValueError):
        aead.decrypt(KEY[:31], NONCE, ct, b"")
    with pytest.raises(ValueError):
        aead.decrypt(KEY, NONCE[:23], ct, b"")
    with pytest.raises(TypeError):
        aead.decrypt(KEY, NONCE, bytearray(ct), b"")
    with pytest.raises(TypeError):
        aead.decrypt(bytearray(KEY), NONCE, ct, b"")
