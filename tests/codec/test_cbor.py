"""The deterministic CBOR codec: exact-one-item decoding and canonical-form checks."""

from __future__ import annotations

import cbor2
import pytest

from mycelium.codec import cbor
from mycelium.errors import CodecError, LimitExceeded

VALUE = {"seq": 7, "a": b"\x00" * 3, "list": [1, -2, "x"], "none": None}


@pytest.mark.parametrize("decode", [cbor.decode, cbor.decode_canonical])
def test_round_trip(decode) -> None:
    assert decode(cbor.encode(VALUE)) == VALUE
    assert decode(bytearray(cbor.encode(VALUE))) == VALUE
    assert decode(memoryview(cbor.encode(VALUE))) == VALUE


@pytest.mark.parametrize("decode", [cbor.decode, cbor.decode_canonical])
def test_trailing_bytes_are_refused(decode) -> None:
    with pytest.raises(CodecError, match="trailing bytes") as info:
        decode(cbor.encode(VALUE) + b"\x00")
    assert info.value.reason == "bad_cbor"


@pytest.mark.parametrize("decode", [cbor.decode, cbor.decode_canonical])
def test_malformed_and_truncated(decode) -> None:
    for bad in (b"", b"\xff", cbor.encode(VALUE)[:-1], b"\x5b" + b"\xff" * 8):
        with pytest.raises(CodecError) as info:
            decode(bad)
        assert info.value.reason == "bad_cbor"


@pytest.mark.parametrize("decode", [cbor.decode, cbor.decode_canonical])
def test_limits_and_types(decode) -> None:
    with pytest.raises(LimitExceeded):
        decode(cbor.encode(b"x" * 100), max_bytes=50)
    with pytest.raises(CodecError, match="expected bytes"):
        decode("not bytes")


def test_non_canonical_forms() -> None:
    unsorted_map = cbor2.dumps({"b": 1, "a": 2})  # insertion order, not canonical order
    long_int = b"\x18\x01"  # 1 encoded in two bytes
    indefinite = b"\x9f\x01\xff"
    for data in (unsorted_map, long_int, indefinite):
        assert cbor.decode(data) is not None  # well-formed …
        with pytest.raises(CodecError) as info:
            cbor.decode_canonical(data)  # … but not deterministic
        assert info.value.reason == "non_canonical"
