"""The discrete-event core: a heap of ``(time, seq, kind, a, b, payload)`` and a trace hash.

``seq`` is a global insertion counter, so two events at the same virtual time run in the
order they were scheduled and the heap never compares payloads: with every random draw
taken from one seeded ``random.Random``, a run is a pure function of (scenario, seed).

The trace hash is SHA-256 over the ordered log of what happened (each delivered frame,
fault and scenario event, packed as fixed-width binary), so two runs are identical iff
their hashes match, without keeping the log in memory.
"""

from __future__ import annotations

import hashlib
import heapq
import struct
from typing import Any

_PACK = struct.Struct("<dBIIII").pack


class EventQueue:
    """Virtual clock plus pending events. ``now`` only moves forward."""

    __slots__ = ("_heap", "_seq", "now", "processed")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, int, int, Any]] = []
        self._seq = 0
        self.now = 0.0
        self.processed = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, time: float, kind: int, a: int = 0, b: int = 0, payload: Any = None) -> None:
        if time < self.now:
            time = self.now
        self._seq += 1
        heapq.heappush(self._heap, (time, self._seq, kind, a, b, payload))

    def peek_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop(self) -> tuple[float, int, int, int, int, Any]:
        ev = heapq.heappop(self._heap)
        self.now = ev[0]
        self.processed += 1
        return ev


class Trace:
    """Running SHA-256 of the event log (see module docstring)."""

    __slots__ = ("_h", "entries")

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.entries = 0

    def record(self, time: float, kind: int, a: int, b: int, size: int = 0, extra: int = 0) -> None:
        self._h.update(_PACK(time, kind, a, b, size & 0xFFFFFFFF, extra & 0xFFFFFFFF))
        self.entries += 1

    def hexdigest(self) -> str:
        return self._h.hexdigest()
