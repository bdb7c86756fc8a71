"""LWW field maps: merge is order- and duplication-independent; tombstones behave."""

from __future__ import annotations

import random

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.crdt.doc import DocState
from mycelium.crdt.hlc import Timestamp
from mycelium.crdt.payload import (
    Op,
    Payload,
    PayloadError,
    decode_payload,
    delete_doc,
    set_fields,
)
from mycelium.log.limits import MAX_OPS_PER_DELTA

A, B = b"\x01" * 32, b"\x02" * 32


def ts(wall: int, counter: int = 0) -> Timestamp:
    return Timestamp(wall, counter, b"n")


def test_last_writer_wins_per_field_with_author_tiebreak() -> None:
    d = DocState()
    d.apply(set_fields("c", "d", {"x": 1, "y": 1}, ts(10)), A)
    d.apply(set_fields("c", "d", {"x": 2}, ts(5)), B)  # older: loses
    assert d.visible() == {"x": 1, "y": 1}
    d.apply(set_fields("c", "d", {"x": 3}, ts(10)), B)  # same hlc, greater author wins
    assert d.visible() == {"x": 3, "y": 1}


def test_field_and_document_tombstones() -> None:
    d = DocState()
    d.apply(set_fields("c", "d", {"x": 1, "y": 2}, ts(1)), A)
    d.apply(set_fields("c", "d", {"y": None}, ts(2)), A)
    assert d.visible() == {"x": 1}
    d.apply(delete_doc("c", "d", ts(3)), B)
    assert d.visible() is None
    d.apply(set_fields("c", "d", {"x": 9}, ts(2, 5)), A)  # older than the tombstone
    assert d.visible() is None
    d.apply(set_fields("c", "d", {"z": 7}, ts(4)), A)  # newer: document comes back
    assert d.visible() == {"z": 7}
    assert DocState.decode(d.encode()) == d


def test_payload_roundtrip_and_strictness() -> None:
    p = set_fields("products", "p1", {"title": "tomato", "gone": None}, ts(5, 1))
    assert decode_payload(p.encode()) == p
    assert decode_payload(delete_doc("c", "d", ts(1)).encode()).deletes_doc
    with pytest.raises(PayloadError) as exc:
        Payload("c", "d", tuple(Op(f"f{i}", i) for i in range(MAX_OPS_PER_DELTA + 1)),
                ts(1)).encode()
    assert exc.value.reason == "too_many_ops"
    with pytest.raises(PayloadError):
        Payload("c", "d", (Op(None, None, True), Op("x", 1)), ts(1)).encode()
    with pytest.raises(PayloadError):
        Payload("", "d", (Op("x", 1),), ts(1)).encode()
    with pytest.raises(PayloadError):
        Payload("c", "d", (Op("x", 1), Op("x", 2)), ts(1)).encode()
    for junk in (b"\xff", b"\xa0", b"\x80"):
        with pytest.raises(PayloadError):
            decode_payload(junk)


ops = st.one_of(
    st.builds(lambda f, v: {f: v}, st.sampled_from("xyz"), st.integers(0, 3) | st.none()),
    st.just(None),  # document delete
)
deltas = st.lists(st.tuples(ops, st.integers(0, 6), st.integers(0, 2), st.sampled_from([A, B])),
                  min_size=1, max_size=12)


def payload_of(op: dict[str, int | None] | None, wall: int, counter: int) -> Payload:
    if op is None:
        return delete_doc("c", "d", ts(wall, counter))
    return set_fields("c", "d", op, ts(wall, counter))


@settings(max_examples=200, deadline=None)
@given(deltas, st.randoms(use_true_random=False))
def test_merge_is_order_and_duplicate_independent(
    items: list[tuple[dict[str, int | None] | None, int, int, bytes]], rnd: random.Random
) -> None:
    ordered, shuffled = DocState(), DocState()
    for op, wall, counter, author in items:
        ordered.apply(payload_of(op, wall, counter), author)
    copies = items + rnd.sample(items, k=len(items) // 2)
    rnd.shuffle(copies)
    for op, wall, counter, author in copies:
        shuffled.apply(payload_of(op, wall, counter), author)
    assert shuffled.visible() == ordered.visible()
    assert shuffled.tomb == ordered.tomb


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=12), st.binary(max_size=12))
def test_hex_stamps_order_like_the_bytes(a: bytes, b: bytes) -> None:
    assert (a < b) == (a.hex() < b.hex()) and (a == b) == (a.hex() == b.hex())


def _first_layout(d: DocState) -> bytes:
    """How the first storage layout wrote a state: cbor2, byte-string stamps."""
    def old(stamp: list) -> list:
        return [stamp[0], stamp[1], bytes.fromhex(stamp[2]), bytes.fromhex(stamp[3]), *stamp[4:]]
    return cbor2.dumps({"f": {k: old(v) for k, v in reversed(d.fields.items())},
                        "t": old(d.tomb) if d.tomb is not None else None})


def test_states_of_the_first_layout_load_and_merge_like_new_ones() -> None:
    d = DocState()
    d.apply(delete_doc("c", "d", ts(2)), B)
    for name, wall, author in [("x", 5, A), ("y", 6, B), ("z", 7, A)]:
        d.apply(set_fields("c", "d", {name: wall}, ts(wall)), author)
    old = DocState.decode(_first_layout(d))
    assert old == d == DocState.decode(d.encode())
    later = set_fields("c", "d", {"x": 50, "y": 60}, ts(6))  # x newer, y ties: author decides
    old.apply(later, A)
    d.apply(later, A)
    assert old == d and old.visible() == {"x": 50, "y": 6, "z": 7}
    assert cbor2.loads(old.encode())["f"]["x"][2:4] == [b"n".hex(), A.hex()]
