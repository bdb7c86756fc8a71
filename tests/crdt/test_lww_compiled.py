"""The compiled LWW merge (``accel.lww_apply``) equals ``DocState._apply`` or defers.

It may only answer where it is sure: a document without a tombstone, no wall-clock tie
with a held entry, no document delete. Whatever it answers must be exactly what the
Python reference does to the same state (fields, entry types, return value)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium import accel
from mycelium.crdt.doc import DocState
from mycelium.crdt.hlc import Timestamp
from mycelium.crdt.payload import Op, Payload, delete_doc

pytestmark = pytest.mark.skipif(not accel.active(),
                                reason=f"compiled path off: {accel.disabled_reason}")

AUTHORS = [b"\x01" * 32, b"\x02" * 32, b"\xfe" * 32]
NAMES = ["a", "b", "c", "title"]
values = st.one_of(st.integers(-5, 5), st.text(max_size=3), st.none(), st.booleans(),
                   st.floats(allow_nan=False))


@st.composite
def payloads(draw: st.DrawFn) -> Payload:
    hlc = Timestamp(draw(st.integers(0, 6)), draw(st.integers(0, 2)),
                    draw(st.sampled_from([b"n", b"m", b""])))
    if draw(st.integers(0, 9)) == 0:
        return delete_doc("c", "d", hlc)
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    ops = tuple(Op(n, None, True) if draw(st.booleans()) and draw(st.booleans())
                else Op(n, draw(values), False) for n in names)
    return Payload("c", "d", ops, hlc)


def _typed(fields: dict[str, Any]) -> Any:
    return {k: [(type(x), x) for x in v] for k, v in fields.items()}


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(payloads(), st.sampled_from(AUTHORS)), max_size=8),
       payloads(), st.sampled_from(AUTHORS))
def test_compiled_merge_equals_python(history: list[tuple[Payload, bytes]], last: Payload,
                                      author: bytes) -> None:
    state = DocState()
    for p, a in history:
        state._apply(p, a)
    if state.tomb is not None:  # the caller (DocState.apply) never asks then
        return
    reference = copy.deepcopy(state)
    expected = reference._apply(last, author)
    fields_before = copy.deepcopy(state.fields)
    got = accel.lww_apply(state.fields, last, author)  # type: ignore[misc]
    if got is None:  # deferred: must not have touched anything
        assert _typed(state.fields) == _typed(fields_before)
        return
    assert not last.deletes_doc
    assert got is expected
    assert _typed(state.fields) == _typed(reference.fields)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(payloads(), st.sampled_from(AUTHORS)), max_size=10))
def test_apply_with_and_without_the_compiled_merge_agree(history: list[tuple[Payload, bytes]]
                                                         ) -> None:
    fast, slow = DocState(), DocState()
    for p, a in history:
        assert fast.apply(p, a) is slow._apply(p, a)
    assert fast == slow and fast.encode() == slow.encode()


def test_compiled_merge_answers_the_common_case() -> None:
    state = DocState()
    p1 = Payload("c", "d", (Op("a", 1), Op("b", "x")), Timestamp(5, 0, b"\xab"))
    assert accel.lww_apply(state.fields, p1, AUTHORS[0]) is True  # type: ignore[misc]
    assert state.fields["a"] == [5, 0, "ab", "01" * 32, False, 1]
    older = Payload("c", "d", (Op("a", 2),), Timestamp(4, 9, b"\xab"))
    assert accel.lww_apply(state.fields, older, AUTHORS[1]) is False  # type: ignore[misc]
    tie = Payload("c", "d", (Op("a", 2),), Timestamp(5, 1, b"\xab"))
    assert accel.lww_apply(state.fields, tie, AUTHORS[1]) is None  # type: ignore[misc]
    deleted = Payload("c", "d", (Op("b", None, True),), Timestamp(6, 0, b""))
    assert accel.lww_apply(state.fields, deleted, AUTHORS[1]) is True  # type: ignore[misc]
    assert state.fields["b"] == [6, 0, "", "02" * 32, True, None]
