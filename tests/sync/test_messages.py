"""Message codec: round trips and strict, typed rejection of everything else."""

from __future__ import annotations

import cbor2
import pytest

from mycelium.codec import cbor
from mycelium.sync.messages import (
    Ack,
    Bye,
    Done,
    Envelopes,
    Error,
    Have,
    Hello,
    Live,
    Message,
    MessageLimits,
    ProtocolError,
    Prune,
    Vector,
    Want,
    decode_message,
    encode_message,
)

A = bytes(32)
B = b"\x01" * 32

MESSAGES: list[Message] = [
    Hello(salt=b"s" * 16, offers=(b"o" * 16, b"p" * 16), credit_envelopes=256,
          credit_bytes=1 << 20, caps=("x",)),
    Hello(salt=b"s" * 16, offers=(), credit_envelopes=1, credit_bytes=65536),
    Vector(0, {A: 3, B: 1}), Vector(5, {}), Want(1, {A: 2}),
    Envelopes(2, [b"e1", b"e2"]), Live(0, [b"x"]), Ack(3, 900), Ack(0, 0), Done(7), Bye(),
    Error("timeout"), Have(3, {A: 9}), Prune(1),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: Message) -> None:
    data = encode_message(msg)
    back = decode_message(data)
    assert encode_message(back) == data
    assert type(back) is type(msg)


DEFAULT = MessageLimits()


def _reason(value: object, limits: MessageLimits = DEFAULT, raw: bytes | None = None) -> str:
    with pytest.raises(ProtocolError) as exc:
        decode_message(raw if raw is not None else cbor.encode(value), limits)
    return exc.value.reason


def test_rejects_garbage_and_non_maps() -> None:
    assert _reason(None, raw=b"\xff\x00garbage") == "bad_frame"
    assert _reason([1, 2]) == "bad_message"
    assert _reason({"t": "nope"}) == "unknown_message"
    assert _reason({"x": 1}) == "unknown_message"


def test_rejects_non_canonical_encoding() -> None:
    raw = cbor2.dumps({"t": "done", "s": 1}, canonical=False)
    noncanon = raw.replace(b"\x01", b"\x18\x01")  # uint 1 in two bytes: same value
    assert _reason(None, raw=noncanon) == "bad_frame"


@pytest.mark.parametrize("tag", ["env", "live"])
def test_batches_are_checked_for_canonical_form_without_re_encoding(tag: str) -> None:
    envs = [b"x" * 3, b"y" * 30, b"z" * 300, b"w" * 70000]
    good = encode_message(Envelopes(5, envs) if tag == "env" else Live(5, envs))
    assert decode_message(good, MessageLimits(max_frame=1 << 20)) is not None
    variants = [
        good + b"\x00",  # trailing byte
        good.replace(b"\x43xxx", b"\x58\x03xxx"),  # non-minimal byte string head
        good.replace(b"\x84", b"\x98\x04", 1),  # non-minimal array head
        b"\xa3\x61e\x9f" + good[4:good.index(b"\x61s")] + b"\xff" + good[good.index(b"\x61s"):],
        cbor2.dumps({"s": 5, "e": envs, "t": tag}),  # keys out of order, same length
        cbor2.dumps({"e": envs, "t": tag, "s": 5}),
        good.replace(b"\x05\x61t", b"\x18\x05\x61t"),  # non-minimal space index
    ]
    for bad in variants:
        assert bad != good
        assert _reason(None, raw=bad) == "bad_frame"


def test_rejects_missing_extra_and_mistyped_fields() -> None:
    assert _reason({"t": "done"}) == "bad_message"
    assert _reason({"t": "done", "s": 1, "z": 0}) == "bad_message"
    assert _reason({"t": "done", "s": -1}) == "bad_message"
    assert _reason({"t": "done", "s": True}) == "bad_message"
    assert _reason({"t": "ack", "n": "1", "b": 0}) == "bad_message"
    assert _reason({"t": "vv", "s": 0, "vv": {b"short": 1}}) == "bad_message"
    assert _reason({"t": "vv", "s": 0, "vv": {A: 0}}) == "bad_message"
    assert _reason({"t": "env", "s": 0, "e": [b""]}) == "bad_message"
    assert _reason({"t": "env", "s": 0, "e": ["text"]}) == "bad_message"
    assert _reason({"t": "err", "r": "x" * 65}) == "bad_message"


def test_hello_checks() -> None:
    good = {"t": "hello", "v": 1, "caps": [], "salt": b"s" * 16, "offers": [],
            "credit": [1, 65536]}
    assert isinstance(decode_message(cbor.encode(good)), Hello)
    assert _reason({**good, "v": 2}) == "unsupported_version"
    assert _reason({**good, "salt": b"s" * 15}) == "bad_message"
    assert _reason({**good, "offers": [b"o" * 15]}) == "bad_message"
    assert _reason({**good, "credit": [1]}) == "bad_message"
    assert _reason({**good, "caps": ["x" * 33]}) == "bad_message"
    lim = MessageLimits(max_spaces=2)
    assert _reason({**good, "offers": [b"o" * 16] * 3}, lim) == "too_many_spaces"


def test_count_and_size_limits() -> None:
    lim = MessageLimits(max_spaces=4, max_vector_entries=2, max_batch_envelopes=2,
                        max_batch_bytes=10, max_frame=200)
    assert _reason({"t": "done", "s": 4}, lim) == "bad_message"
    vv = {bytes([i]) * 32: 1 for i in range(3)}
    assert _reason({"t": "vv", "s": 0, "vv": vv}, lim) == "too_many_entries"
    assert _reason({"t": "env", "s": 0, "e": [b"a", b"b", b"c"]}, lim) == "too_many_envelopes"
    assert _reason({"t": "live", "s": 0, "e": [b"a" * 6, b"b" * 5]}, lim) == "oversized_batch"
    assert _reason({"t": "env", "s": 0, "e": [b"a" * 300]}, lim) == "oversized_frame"


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_fast_encoder_is_canonical(msg: Message) -> None:
    data = encode_message(msg)
    assert cbor.encode(cbor.decode(data)) == data


def test_vectors_are_sorted_and_duplicates_impossible() -> None:
    unsorted = {B: 1, A: 2}
    assert encode_message(Vector(0, unsorted)) == cbor.encode({"t": "vv", "s": 0, "vv": unsorted})
    raw = cbor2.dumps({"s": 0, "t": "vv", "vv": unsorted})  # keys out of order on the wire
    assert _reason(None, raw=raw) == "bad_frame"
    trailing = encode_message(Done(1)) + b"\x00"
    assert _reason(None, raw=trailing) == "bad_frame"
