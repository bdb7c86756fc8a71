"""The deterministic CBOR codec: exact-one-item decoding and canonical-form checks."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


_leaves = (st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.floats()
           | st.text(max_size=8) | st.binary(max_size=40)
           | st.just(bytes.fromhex("0171a0e402") + b"\x01" * 32))  # bytes that parse as a CID
_values = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=6) | st.integers(0, 9), inner,
                                         max_size=4), max_leaves=12)


def _same(a: object, b: object) -> bool:
    """Equal values of equal types all the way down (NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (a != a and b != b)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))  # type: ignore[arg-type]
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)  # type: ignore[index]
    return a == b


@settings(max_examples=300, deadline=None)
@given(_values, st.booleans())
def test_decode_fast_equals_decode_on_valid_cbor(value: object, canonical: bool) -> None:
    data = cbor2.dumps(value, canonical=canonical)
    assert _same(cbor.decode_fast(data), cbor.decode(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | _values.map(lambda v: cbor2.dumps(v) + b"\x00"),
       st.data())
def test_decode_fast_equals_decode_on_any_bytes(data: bytes, more: st.DataObject) -> None:
    if data and more.draw(st.booleans()):  # also: corrupt one byte of valid input
        i = more.draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([more.draw(st.integers(0, 255))]) + data[i + 1:]
    try:
        expected: object = cbor.decode(data)
    except CodecError as exc:
        expected = ("error", exc.reason)
    try:
        got: object = cbor.decode_fast(data)
    except CodecError as exc:
        got = ("error", exc.reason)
    assert _same(got, expected)


def test_fast_paths_never_turn_cid_looking_bytes_into_tags() -> None:
    """libipld's *encoder* would tag such bytes as a CID; we only decode with it."""
    cid_like = bytes.fromhex("0171a0e402") + b"\x01" * 32
    value = {"prev": b"\x01" * 32, "x": cid_like}
    data = cbor.encode(value)
    assert cbor.decode_fast(data) == value == cbor.loads_or_none(data)
    assert cbor.encode_ordered({"prev": b"\x01" * 32}) == cbor.encode({"prev": b"\x01" * 32})
    tagged = cbor2.dumps(cbor2.CBORTag(42, b"\x00" + cid_like))
    assert cbor.loads_or_none(tagged) == cid_like  # libipld drops the tag …
    assert cbor2.dumps(cbor.loads_or_none(tagged)) != tagged  # … which re-encoding exposes
    assert cbor.decode_fast(tagged) == cbor.decode(tagged) == cbor2.CBORTag(42, b"\x00" + cid_like)
    # libipld also takes tag 42 with a needlessly wide header; so must the tag check
    body = cbor2.dumps(b"\x00" + cid_like)
    for header in (b"\xd9\x00\x2a", b"\xda\x00\x00\x00\x2a", b"\xdb" + bytes(7) + b"\x2a"):
        wide = header + body
        assert cbor.decode_fast(wide) == cbor.decode(wide) == cbor2.CBORTag(42, b"\x00" + cid_like)


_STORED = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(_STORED)
def test_stored_values_round_trip(value: object) -> None:
    """Fast DAG-CBOR where it can carry the value, cbor2 where not (big ints, NaN)."""
    back = cbor.decode_stored(cbor.encode_stored(value))
    assert cbor2.dumps(back, canonical=True) == cbor2.dumps(value, canonical=True)


def test_stored_decoder_reads_plain_cbor2_rows_in_any_key_order() -> None:
    row = cbor2.dumps({"t": None, "f": {"title": [1, b"\x01"], "qty": 2**70}})
    assert cbor.decode_stored(row) == {"t": None, "f": {"title": [1, b"\x01"], "qty": 2**70}}
    with pytest.raises(CodecError):
        cbor.decode_stored(row[:-1])
