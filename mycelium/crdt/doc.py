"""Documents as last-writer-wins field maps with tombstones (protocols/delta.md §7).

Each field keeps the write with the greatest *stamp* ``(wall_ms, counter, node, author)``:
the HLC of its delta, ties broken by the author's key, so two writers can never tie. An
author that issues two writes with one stamp (its clock never does; a buggy or hostile
one might) is ordered so that a tombstone wins, then the greater canonical value bytes,
so nodes still agree.
A field delete is a write of a tombstone. A document delete records a document
tombstone stamp ``t``: every field write with a stamp ``<= t`` is gone (and any such
write arriving later is ignored), while newer writes bring the document back.

``apply`` is commutative, associative and idempotent over deltas, so any order or
repetition of the same set of deltas gives the same state (tested as a property).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cbor2

from mycelium.codec import cbor
from mycelium.crdt.payload import Payload, PayloadError

#: (wall_ms, counter, node, author): total order of writes.
Stamp = tuple[int, int, bytes, bytes]


@dataclass(slots=True)
class FieldValue:
    stamp: Stamp
    deleted: bool
    value: Any


@dataclass(slots=True)
class DocState:
    """The merge state of one document (what the store persists)."""

    fields: dict[str, FieldValue] = field(default_factory=dict)
    tomb: Stamp | None = None

    def apply(self, payload: Payload, author: bytes) -> bool:
        """Merge one delta; returns True if the visible state may have changed."""
        stamp: Stamp = (*payload.hlc, author)
        if payload.deletes_doc:
            return self._delete_doc(stamp)
        if self.tomb is not None and stamp <= self.tomb:
            return False
        changed = False
        for op in payload.ops:
            assert op.field is not None
            cur = self.fields.get(op.field)
            new = FieldValue(stamp, op.deleted, op.value)
            if cur is None or stamp > cur.stamp or (stamp == cur.stamp and _rank(new) > _rank(cur)):
                self.fields[op.field] = new
                changed = True
        return changed

    def _delete_doc(self, stamp: Stamp) -> bool:
        if self.tomb is not None and stamp <= self.tomb:
            return False
        self.tomb = stamp
        self.fields = {k: v for k, v in self.fields.items() if v.stamp > stamp}
        return True

    def visible(self) -> dict[str, Any] | None:
        """Live fields, or None if the document does not exist (deleted or never written)."""
        live = {k: v.value for k, v in sorted(self.fields.items()) if not v.deleted}
        return live or None

    @property
    def live(self) -> bool:
        """Whether :meth:`visible` would show anything (without building it)."""
        return any(not v.deleted for v in self.fields.values())

    def values_of(self, names: frozenset[str]) -> dict[str, Any]:
        """The visible values of the fields ``names`` that are live (for indexes)."""
        out = {}
        for name in names:
            fv = self.fields.get(name)
            if fv is not None and not fv.deleted:
                out[name] = fv.value
        return out

    @property
    def newest(self) -> Stamp | None:
        stamps = [v.stamp for v in self.fields.values()]
        if self.tomb is not None:
            stamps.append(self.tomb)
        return max(stamps, default=None)

    # -- persistence ------------------------------------------------------------------
    def encode(self) -> bytes:
        """Storage form (local only, never hashed or signed, so not canonical: faster)."""
        return cbor2.dumps({
            "f": {k: [*v.stamp, v.deleted, v.value] for k, v in self.fields.items()},
            "t": list(self.tomb) if self.tomb is not None else None,
        })

    @classmethod
    def decode(cls, data: bytes) -> DocState:
        """Inverse of :meth:`encode` for the store's own rows (not for peer input)."""
        try:
            m = cbor2.loads(data)
            fields = {k: FieldValue((v[0], v[1], v[2], v[3]), v[4], v[5])
                      for k, v in m["f"].items()}
            tomb = m["t"]
            return cls(fields, (tomb[0], tomb[1], tomb[2], tomb[3]) if tomb is not None else None)
        except (cbor2.CBORDecodeError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise PayloadError("stored document state is malformed",
                               reason="bad_doc_state") from exc


def _rank(v: FieldValue) -> tuple[bool, bytes]:
    """Order of two writes with the same stamp (only a misbehaving author makes them):
    a tombstone wins, then the greater canonical encoding, so every node picks the same."""
    return v.deleted, cbor.encode(v.value)
