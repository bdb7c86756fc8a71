from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multiformats import multibase

from mycelium.codec import cbor
from mycelium.spaces.errors import BadInvite, InviteTooLarge
from mycelium.spaces.invite import MAX_INVITE_BYTES, decode_invite, encode_invite


def test_roundtrip() -> None:
    code = encode_invite(b"g" * 300, [b"e1", b"e2"])
    assert code.startswith("z") and code.isalnum()
    inv = decode_invite("  " + code + "\n")
    assert inv.genesis == b"g" * 300 and inv.envelopes == (b"e1", b"e2")


def test_too_large_is_refused_and_limit_is_fast() -> None:
    with pytest.raises(InviteTooLarge):
        encode_invite(b"g", [b"x" * MAX_INVITE_BYTES])
    biggest = encode_invite(b"g", [b"x" * (MAX_INVITE_BYTES - 100)])
    started = time.perf_counter()
    decode_invite(biggest)
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize("m", [
    {"v": 2, "genesis": b"g", "envelopes": []},
    {"v": 1, "genesis": "g", "envelopes": []},
    {"v": 1, "genesis": b"g", "envelopes": [1]},
    {"v": 1, "genesis": b"g"},
    [1, 2],
])
def test_bad_structure_refused(m: object) -> None:
    with pytest.raises(BadInvite):
        decode_invite(multibase.encode(cbor.encode(m), "base58btc"))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80) | st.text(alphabet="z123456789ABCabc", max_size=80))
def test_random_text_only_raises_bad_invite(code: str) -> None:
    with pytest.raises(BadInvite):
        decode_invite(code)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 3), st.binary(max_size=120))
def test_base58_matches_multiformats(zeros: int, tail: bytes) -> None:
    from mycelium.spaces.invite import b58decode, b58encode

    data = b"\0" * zeros + tail
    text = b58encode(data)
    assert "z" + text == multibase.encode(data, "base58btc")
    assert b58decode(text) == data
