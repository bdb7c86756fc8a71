"""Hybrid logical clock (Kulkarni et al. 2014) ordering document writes (protocols/delta.md §7).

A timestamp is ``(wall_ms, counter, node)``: physical milliseconds, a logical counter that
breaks ties within one millisecond, and a short node id. Timestamps compare as tuples.

Sans-IO: wall time is always passed in. Rules:

* ``now(wall)``: ``wall' = max(last.wall, wall)``; counter is ``last.counter + 1`` if the
  wall part did not move, else 0.
* ``recv(remote, wall)``: the same with ``max(last.wall, remote.wall, wall)``, so the local
  clock never runs behind anything it has seen.
* Drift rule: a remote timestamp more than ``MAX_CLOCK_DRIFT_MS`` (5 minutes) ahead of local
  wall time raises :class:`ClockDrift` and leaves the clock unchanged. Without it one
  device with a wrong clock would drag every clock in the space into the future, and its
  writes would win every LWW conflict until real time caught up. The store keeps such a
  delta (its chain stays intact) but applies it only once local time has caught up.
"""

from __future__ import annotations

from typing import NamedTuple

from mycelium.errors import MyceliumError
from mycelium.log.limits import MAX_CLOCK_DRIFT_MS, MAX_HLC_COUNTER, MAX_HLC_NODE_BYTES


class ClockError(MyceliumError):
    """A timestamp that is malformed or cannot be produced."""

    reason = "bad_hlc"


class ClockDrift(ClockError):
    """A remote timestamp too far ahead of local wall time (see module docstring)."""

    reason = "clock_drift"


class Timestamp(NamedTuple):
    wall_ms: int
    counter: int
    node: bytes

    def to_wire(self) -> list[object]:
        return [self.wall_ms, self.counter, self.node]

    @classmethod
    def from_wire(cls, value: object) -> Timestamp:
        """Parse ``[wall_ms, counter, node]``; raises :class:`ClockError`."""
        if type(value) is not list or len(value) != 3:
            raise ClockError("hlc must be [wall_ms, counter, node]")
        wall, counter, node = value
        if not (type(wall) is int and 0 <= wall < 2**63
                and type(counter) is int and 0 <= counter <= MAX_HLC_COUNTER):
            raise ClockError("hlc wall_ms/counter out of range")
        if type(node) is not bytes or len(node) > MAX_HLC_NODE_BYTES:
            raise ClockError(f"hlc node must be at most {MAX_HLC_NODE_BYTES} bytes")
        return tuple.__new__(cls, (wall, counter, node))


ZERO = Timestamp(0, 0, b"")


class HLC:
    """One node's hybrid logical clock. ``node`` identifies this writer in timestamps."""

    def __init__(self, node: bytes, last: Timestamp = ZERO,
                 max_drift_ms: int = MAX_CLOCK_DRIFT_MS) -> None:
        self.node = node
        self.last = Timestamp(last.wall_ms, last.counter, node)
        self.max_drift_ms = max_drift_ms

    def now(self, wall_ms: int) -> Timestamp:
        """A timestamp for a local event, greater than every one issued or seen before."""
        return self._advance(self.last.wall_ms, self.last.counter, wall_ms)

    def recv(self, remote: Timestamp, wall_ms: int) -> Timestamp:
        """Merge a remote timestamp; raises :class:`ClockDrift` if it is too far ahead."""
        self.check(remote, wall_ms)
        if remote[:2] > self.last[:2]:
            return self._advance(remote.wall_ms, remote.counter, wall_ms)
        return self._advance(self.last.wall_ms, self.last.counter, wall_ms)

    def check(self, remote: Timestamp, wall_ms: int) -> None:
        """The drift rule alone (no state change)."""
        if remote.wall_ms - wall_ms > self.max_drift_ms:
            raise ClockDrift(f"remote clock {remote.wall_ms - wall_ms} ms ahead of local time")

    def _advance(self, base_wall: int, base_counter: int, wall_ms: int) -> Timestamp:
        if wall_ms > base_wall:
            ts = Timestamp(wall_ms, 0, self.node)
        else:
            if base_counter >= MAX_HLC_COUNTER:
                raise ClockError("hlc counter exhausted within one millisecond")
            ts = Timestamp(base_wall, base_counter + 1, self.node)
        self.last = ts
        return ts
