"""Sealed boxes to Ed25519 identities: round trip, wrong recipient, tampering."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl import bindings

from mycelium.crypto.sealed import SEAL_OVERHEAD, SealedBoxError, open_sealed, seal_to


def _pub(seed: bytes) -> bytes:
    return bindings.crypto_sign_seed_keypair(seed)[0]


@settings(max_examples=30, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), msg=st.binary(max_size=512))
def test_round_trip(seed: bytes, msg: bytes) -> None:
    box = seal_to(_pub(seed), msg)
    assert len(box) == len(msg) + SEAL_OVERHEAD
    assert open_sealed(seed, box) == msg


def test_wrong_recipient_is_wrong_key() -> None:
    a, b = os.urandom(32), os.urandom(32)
    box = seal_to(_pub(a), b"epoch key")
    with pytest.raises(SealedBoxError) as info:
        open_sealed(b, box)
    assert info.value.reason == "wrong_key"


@settings(max_examples=30, deadline=None)
@given(pos=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_flipped_byte_is_rejected(pos: int, flip: int) -> None:
    seed = b"\x07" * 32
    box = bytearray(seal_to(_pub(seed), b"share"))
    box[pos % len(box)] ^= flip
    with pytest.raises(SealedBoxError) as info:
        open_sealed(seed, bytes(box))
    assert info.value.reason == "wrong_key"


def test_short_and_bad_keys() -> None:
    with pytest.raises(SealedBoxError) as info:
        open_sealed(b"\x01" * 32, b"\x00" * 10)
    assert info.value.reason == "too_short"
    with pytest.raises(SealedBoxError) as info:
        seal_to(b"\x01" * 31, b"x")
    assert info.value.reason == "bad_key"
    with pytest.raises(SealedBoxError) as info:
        open_sealed(b"\x01" * 31, b"\x00" * 60)
    assert info.value.reason == "bad_key"
