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

from mycelium import accel
from mycelium.codec import cbor
from mycelium.crdt.payload import Payload, PayloadError
from mycelium.errors import MyceliumError

#: ``[wall_ms, counter, node, author]``: total order of writes (lists compare like tuples).
#: ``node`` and ``author`` are held as lowercase hex text, which orders exactly like the
#: bytes (prefixes included) and keeps byte strings out of the stored state, so it can be
#: written by the fast DAG-CBOR encoder (see :func:`mycelium.codec.cbor.encode_stored`).
Stamp = list[Any]
#: One field's winning write, ``[wall_ms, counter, node, author, deleted, value]``: a stamp
#: followed by the write. Kept in exactly the form it is stored in, so loading and saving a
#: document builds no per-field objects (this runs for every received delta).
Entry = list[Any]
_DELETED, _VALUE = 4, 5


@dataclass(slots=True)
class DocState:
    """The merge state of one document (what the store persists)."""

    fields: dict[str, Entry] = field(default_factory=dict)
    tomb: Stamp | None = None

    def apply(self, payload: Payload, author: bytes) -> bool:
        """Merge one delta; returns True if the visible state may have changed."""
        compiled = accel.lww_apply  # the same merge in C, for the common case
        if compiled is not None and self.tomb is None:
            changed = compiled(self.fields, payload, author)
            if changed is not None:
                return changed
        return self._apply(payload, author)

    def _apply(self, payload: Payload, author: bytes) -> bool:
        """:meth:`apply` in Python: the reference, and the path for every rare case."""
        wall, counter, node = payload.hlc
        stamp: Stamp = [wall, counter, node.hex(), author.hex()]
        if payload.deletes_doc:
            return self._delete_doc(stamp)
        if self.tomb is not None and stamp <= self.tomb:
            return False
        changed = False
        fields = self.fields
        for name, value, deleted in payload.ops:
            assert name is not None
            cur = fields.get(name)
            # the wall clock decides almost always: compare whole stamps only on a tie
            if cur is None or wall > cur[0] or (
                    wall == cur[0] and _wins([*stamp, deleted, value], cur)):
                fields[name] = [*stamp, deleted, value]
                changed = True
        return changed

    def _delete_doc(self, stamp: Stamp) -> bool:
        if self.tomb is not None and stamp <= self.tomb:
            return False
        self.tomb = stamp
        self.fields = {k: v for k, v in self.fields.items() if v[:4] > stamp}
        return True

    def visible(self) -> dict[str, Any] | None:
        """Live fields, or None if the document does not exist (deleted or never written)."""
        live = {k: v[_VALUE] for k, v in sorted(self.fields.items()) if not v[_DELETED]}
        return live or None

    @property
    def live(self) -> bool:
        """Whether :meth:`visible` would show anything (without building it)."""
        for entry in self.fields.values():  # noqa: SIM110 - a plain loop is 2x any(genexpr)
            if not entry[_DELETED]:
                return True
        return False

    def values_of(self, names: frozenset[str]) -> dict[str, Any]:
        """The visible values of the fields ``names`` that are live (for indexes)."""
        out = {}
        for name in names:
            entry = self.fields.get(name)
            if entry is not None and not entry[_DELETED]:
                out[name] = entry[_VALUE]
        return out

    @property
    def newest(self) -> Stamp | None:
        stamps = [v[:4] for v in self.fields.values()]
        if self.tomb is not None:
            stamps.append(self.tomb)
        return max(stamps, default=None)

    # -- persistence ------------------------------------------------------------------
    def encode(self) -> bytes:
        """Storage form ``{"f": {name: entry}, "t": stamp / null}`` (local only, never
        hashed or signed)."""
        return cbor.encode_stored({"f": self.fields, "t": self.tomb})

    @classmethod
    def decode(cls, data: bytes) -> DocState:
        """Inverse of :meth:`encode` for the store's own rows (not for peer input).

        Checks the layout, not every stamp's types: rows are only ever written by
        :meth:`encode`, and a damaged stamp cannot go unnoticed later (comparing it
        raises, which rolls the ingest back and counts ``internal_error``). Rows of the
        first layout (stamps with byte strings, written by cbor2) are read too and come
        back with hex stamps, so old and new stamps never meet in a comparison."""
        try:
            m = cbor.decode_stored(data)
            fields, tomb = m["f"], m["t"]
            if type(fields) is not dict or not (tomb is None or _is_stamp(tomb)):
                raise TypeError("bad document state layout")
            for entry in fields.values():
                if type(entry) is not list or len(entry) != 6:
                    raise TypeError("bad field entry")
                if type(entry[3]) is bytes:
                    _hex_stamp(entry)
            if tomb is not None and type(tomb[3]) is bytes:
                _hex_stamp(tomb)
            return cls(fields, tomb)
        except (MyceliumError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise PayloadError("stored document state is malformed",
                               reason="bad_doc_state") from exc


def _is_stamp(value: Any) -> bool:
    return (type(value) is list and len(value) == 4 and type(value[0]) is int
            and type(value[1]) is int and type(value[2]) in _STAMP_IDS
            and type(value[3]) is type(value[2]))


_STAMP_IDS = (str, bytes)  # bytes: the first stored layout, converted on load


def _hex_stamp(entry: list[Any]) -> None:
    """Node and author of a first-layout stamp (byte strings) as hex text, in place."""
    entry[2], entry[3] = entry[2].hex(), entry[3].hex()


def _wins(new: Entry, cur: Entry) -> bool:
    """Whether write ``new`` beats ``cur``: greater stamp, or same stamp and greater rank."""
    stamp, held = new[:4], cur[:4]
    return stamp > held or (stamp == held and _rank(new) > _rank(cur))


def _rank(entry: Entry) -> tuple[bool, bytes]:
    """Order of two writes with the same stamp (only a misbehaving author makes them):
    a tombstone wins, then the greater canonical encoding, so every node picks the same."""
    return entry[_DELETED], cbor.encode(entry[_VALUE])
