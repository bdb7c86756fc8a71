"""The compiled document-state codec equals the Python one or defers.

``accel.state_row(fields, tomb, indexed)`` must return ``(live, encode(), values_of())``
of the state — the very bytes ``DocState.encode`` writes — and ``accel.load_state(body,
indexed)`` what ``DocState.decode`` and ``values_of`` return, or None."""

from __future__ import annotations

import math
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium import accel
from mycelium.crdt.doc import DocState
from mycelium.errors import MyceliumError

pytestmark = pytest.mark.skipif(not accel.active(),
                                reason=f"compiled path off: {accel.disabled_reason}")

INDEXED = frozenset({"status", "location", "unit"})
scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**65), 2**65), st.floats(),
                   st.text(max_size=12), st.sampled_from([0.0, -0.0, 1.5, -2.25]))
value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)
names = st.one_of(st.sampled_from(["status", "location", "unit", "title", "quantity", "é", "bb"]),
                  st.text(max_size=5))
hexes = st.sampled_from(["", "6e", "01" * 32, "ff" * 8])


@st.composite
def states(draw: st.DrawFn) -> DocState:
    fields = {}
    for name in draw(st.lists(names, max_size=6, unique=True)):
        deleted = draw(st.booleans())
        fields[name] = [draw(st.integers(0, 2**63)), draw(st.integers(0, 2**32)), draw(hexes),
                        draw(hexes), deleted, None if deleted else draw(value)]
    tomb = draw(st.one_of(st.none(), st.tuples(st.integers(0, 2**40), st.integers(0, 9), hexes,
                                               hexes).map(list)))
    return DocState(fields, tomb)


def _typed(x: Any) -> Any:
    if isinstance(x, list | tuple):
        return (type(x), tuple(_typed(v) for v in x))
    if isinstance(x, dict):
        return (dict, tuple((k, _typed(v)) for k, v in x.items()))
    if isinstance(x, float):
        return (float, "nan" if math.isnan(x) else x, math.copysign(1, x))
    return (type(x), x)


@settings(max_examples=500, deadline=None)
@given(states())
def test_state_row_equals_python(state: DocState) -> None:
    got = accel.state_row(state.fields, state.tomb, INDEXED)  # type: ignore[misc]
    if got is None:
        return
    live, body, values = got
    assert live is state.live
    assert body == state.encode()
    assert _typed(values) == _typed(state.values_of(INDEXED))
    assert list(values) == list(state.values_of(INDEXED))  # same order: same index rows


@settings(max_examples=500, deadline=None)
@given(states())
def test_load_state_equals_python(state: DocState) -> None:
    body = state.encode()
    got = accel.load_state(body, INDEXED)  # type: ignore[misc]
    if got is None:
        return
    loaded, values = got
    expected = DocState.decode(body)
    assert type(loaded) is DocState
    assert _typed(loaded.fields) == _typed(expected.fields)
    assert _typed(loaded.tomb) == _typed(expected.tomb)
    assert _typed(values) == _typed(expected.values_of(INDEXED))


def test_common_states_take_the_compiled_path() -> None:
    state = DocState({"title": [1, 0, "6e", "01" * 32, False, "tomatoes"],
                      "status": [2, 0, "6e", "01" * 32, False, "available"],
                      "quantity": [2, 1, "6e", "01" * 32, False, 2.5],
                      "unit": [3, 0, "6e", "02" * 32, True, None]}, None)
    live, body, values = accel.state_row(state.fields, None, INDEXED)  # type: ignore[misc]
    assert (live, body, values) == (True, state.encode(), {"status": "available"})
    loaded, again = accel.load_state(body, INDEXED)  # type: ignore[misc]
    assert loaded == state and again == values


@settings(max_examples=400, deadline=None)
@given(states(), st.data())
def test_load_state_never_accepts_what_python_refuses(state: DocState, data: st.DataObject
                                                      ) -> None:
    body = bytearray(state.encode())
    for _ in range(data.draw(st.integers(1, 3))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    blob = bytes(body[:data.draw(st.integers(0, len(body)))]) if data.draw(st.booleans()) \
        else bytes(body)
    got = accel.load_state(blob, INDEXED)  # type: ignore[misc]
    if got is None:
        return
    try:
        expected = DocState.decode(blob)
    except MyceliumError:
        pytest.fail("compiled load accepted a row the Python decoder refuses")
    assert _typed(got[0].fields) == _typed(expected.fields)
    assert _typed(got[0].tomb) == _typed(expected.tomb)


def test_old_rows_with_byte_stamps_are_left_to_python() -> None:
    row = cbor2.dumps({"f": {"title": [1, 0, b"n", b"\x01" * 32, False, "x"]}, "t": None})
    assert accel.load_state(row, INDEXED) is None  # type: ignore[misc]
    assert DocState.decode(row).fields["title"][3] == "01" * 32
