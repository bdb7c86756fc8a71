"""The bounded sync reader (mycelium/sync/wire.py) accepts exactly the deterministic
encoding: whatever it accepts re-encodes canonically to the very same bytes, and every
well-shaped message within bounds is accepted. Its bulk paths (batch items, vector
entries) read the common heads inline; these properties pin those shortcuts to the
general head reader at every length boundary (23/24, 255/256, 65535/65536) and under
byte-level mutation, where a shortcut that accepted a non-minimal head would show as a
frame whose re-encoding differs."""

from __future__ import annotations

import cbor2
from hypothesis import assume, given
from hypothesis import strategies as st

from mycelium.sync.messages import MessageLimits
from mycelium.sync.wire import WireError, read_message_map

LIMITS = MessageLimits()
_EDGES = [0, 1, 23, 24, 25, 255, 256, 257, 65535, 65536, 65537]
_SEQ_EDGES = [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1]

_item = st.one_of(st.sampled_from(_EDGES), st.integers(0, 70_000)).map(lambda n: b"\xab" * n)
_batch = st.lists(_item, max_size=6).filter(lambda b: sum(map(len, b)) <= LIMITS.max_batch_bytes)
_seq = st.one_of(st.sampled_from(_SEQ_EDGES), st.integers(0, 2**64 - 1))
_vector = st.dictionaries(st.binary(min_size=32, max_size=32), _seq, max_size=8)


@st.composite
def messages(draw: st.DrawFn) -> dict[str, object]:
    kind = draw(st.sampled_from(["env", "vv", "hello"]))
    msg: dict[str, object] = {"t": kind, "s": draw(_seq)}
    if kind == "env":
        msg["e"] = draw(_batch)
    elif kind == "vv":
        msg["vv"] = draw(_vector)
    else:
        msg["offers"] = draw(st.lists(st.binary(max_size=64), max_size=4))
        msg["salt"] = draw(st.binary(max_size=64))
    return msg


def _accepts_only_its_own_bytes(frame: bytes) -> None:
    try:
        got = read_message_map(frame, LIMITS)
    except WireError:
        return
    assert cbor2.dumps(got, canonical=True) == frame


@given(messages())
def test_every_canonical_message_within_bounds_is_read_back(msg: dict[str, object]) -> None:
    frame = cbor2.dumps(msg, canonical=True)
    assert read_message_map(frame, LIMITS) == msg


@given(messages(), st.data())
def test_a_mutated_frame_is_refused_or_is_itself_canonical(msg: dict[str, object],
                                                           data: st.DataObject) -> None:
    frame = bytearray(cbor2.dumps(msg, canonical=True))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(frame)))
        op = data.draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        if op == "set" and at < len(frame):
            frame[at] = data.draw(st.integers(0, 255))
        elif op == "insert":
            frame[at:at] = bytes([data.draw(st.integers(0, 255))])
        elif op == "delete" and at < len(frame):
            del frame[at]
        elif op == "truncate":
            del frame[at:]
    _accepts_only_its_own_bytes(bytes(frame))


def _minimal_width(n: int) -> int:
    """Bytes of the argument in the minimal CBOR head for ``n`` (0: in the first byte)."""
    return 0 if n < 24 else 1 if n < 256 else 2 if n < 65536 else 4 if n < 2**32 else 8


def _head(major: int, n: int, width: int) -> bytes:
    """A CBOR head of ``major`` type with ``n`` in ``width`` bytes (minimal or not)."""
    return bytes([(major << 5) | (24 + width.bit_length() - 1)]) + n.to_bytes(width, "big")


def _read_only_if_minimal(frame: bytes, n: int, width: int) -> dict[str, object] | None:
    """The frame's map when ``width`` is the minimal head for ``n``; else it must be
    refused as ``bad_frame`` (None)."""
    if width == _minimal_width(n):
        return read_message_map(frame, LIMITS)
    try:
        read_message_map(frame, LIMITS)
    except WireError as exc:
        assert exc.reason == "bad_frame"
        return None
    raise AssertionError(f"{n} with a {width}-byte head accepted")


@given(st.sampled_from(_EDGES[:9]), st.sampled_from([1, 2, 4, 8]))
def test_a_wider_head_than_needed_is_refused_in_a_batch(n: int, width: int) -> None:
    """The same batch item with its length in a head of ``width`` bytes: accepted only
    when that is the minimal head for ``n``."""
    assume(n < 256 ** width)
    frame = cbor2.dumps({"e": [], "s": 1, "t": "env"}, canonical=True)
    frame = frame.replace(b"\x61e\x80", b"\x61e\x81" + _head(2, n, width) + b"\xab" * n)
    got = _read_only_if_minimal(frame, n, width)
    assert got is None or got["e"] == [b"\xab" * n]


@given(st.sampled_from(_SEQ_EDGES[:8]), st.sampled_from([1, 2, 4, 8]))
def test_a_wider_head_than_needed_is_refused_in_a_vector(seq: int, width: int) -> None:
    assume(seq < 256 ** width)
    author = b"\x07" * 32
    frame = cbor2.dumps({"s": 1, "t": "vv", "vv": {author: 0}}, canonical=True)
    frame = frame.replace(b"\x58\x20" + author + b"\x00",
                          b"\x58\x20" + author + _head(0, seq, width))
    got = _read_only_if_minimal(frame, seq, width)
    assert got is None or got["vv"] == {author: seq}
