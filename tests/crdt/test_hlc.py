"""Hybrid logical clock: monotonic, merges remote time, refuses excessive drift."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mycelium.crdt.hlc import HLC, ClockDrift, ClockError, Timestamp
from mycelium.log.limits import MAX_CLOCK_DRIFT_MS, MAX_HLC_COUNTER


def test_now_follows_wall_time_and_counts_within_a_millisecond() -> None:
    c = HLC(b"n")
    assert c.now(100) == Timestamp(100, 0, b"n")
    assert c.now(100) == Timestamp(100, 1, b"n")
    assert c.now(50) == Timestamp(100, 2, b"n")  # wall went backwards: never goes back
    assert c.now(101) == Timestamp(101, 0, b"n")


def test_recv_jumps_past_remote() -> None:
    c = HLC(b"a")
    c.now(100)
    assert c.recv(Timestamp(200, 7, b"b"), 150) == Timestamp(200, 8, b"a")
    assert c.now(150) == Timestamp(200, 9, b"a")


def test_drift_rule() -> None:
    c = HLC(b"a")
    before = c.now(1_000)
    ahead = Timestamp(1_000 + MAX_CLOCK_DRIFT_MS + 1, 0, b"b")
    with pytest.raises(ClockDrift) as exc:
        c.recv(ahead, 1_000)
    assert exc.value.reason == "clock_drift"
    assert c.last == before  # unchanged
    c.recv(Timestamp(1_000 + MAX_CLOCK_DRIFT_MS, 0, b"b"), 1_000)  # exactly at the bound: ok


def test_counter_exhaustion_is_an_error() -> None:
    c = HLC(b"a", Timestamp(5, MAX_HLC_COUNTER, b"a"))
    with pytest.raises(ClockError):
        c.now(5)


@pytest.mark.parametrize("wire", [[1, 2], [-1, 0, b""], [1, 0, "x"], [1, 0, b"x" * 33], "x",
                                  [True, 0, b""]])
def test_from_wire_rejects_malformed(wire: object) -> None:
    with pytest.raises(ClockError):
        Timestamp.from_wire(wire)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 10_000), st.integers(0, 5)), max_size=50))
def test_strictly_increasing_whatever_happens(events: list[tuple[bool, int, int]]) -> None:
    c = HLC(b"a")
    last = c.last
    for is_recv, wall, counter in events:
        ts = c.recv(Timestamp(wall, counter, b"b"), wall) if is_recv else c.now(wall)
        assert ts[:2] > last[:2]
        assert Timestamp.from_wire(ts.to_wire()) == ts
        last = ts
