"""The plaintext of a DATA delta: one write to one document (protocols/delta.md §7).

    {"coll": tstr, "doc": tstr, "ops": [op, ...], "hlc": [wall_ms, counter, node]}
    op = {"field": tstr, "value": any}   ; set a field
       / {"field": tstr, "del": true}    ; field tombstone
       / {"del": true}                   ; document tombstone (only op of its delta)

Writers encode canonical CBOR. Readers decode strictly (exact key sets, types, the limits
of :mod:`mycelium.log.limits`) but do not re-check canonical form: the payload sits inside
the signed AEAD ciphertext, so nobody but its author can change its bytes, and every
reader decodes the same bytes to the same value. Skipping the re-encode halves decode
cost. Field *values* are checked against the collection schema separately
(:mod:`mycelium.crdt.schema`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from mycelium.codec import cbor
from mycelium.crdt.hlc import ClockError, Timestamp
from mycelium.errors import MyceliumError
from mycelium.log.limits import (
    MAX_COLLECTION_CHARS,
    MAX_DOC_ID_CHARS,
    MAX_FIELD_NAME_CHARS,
    MAX_OPS_PER_DELTA,
    MAX_PAYLOAD_BYTES,
)

_PAYLOAD_KEYS = frozenset({"coll", "doc", "ops", "hlc"})
_SET_KEYS = frozenset({"field", "value"})
_DEL_FIELD_KEYS = frozenset({"field", "del"})
_DEL_DOC_KEYS = frozenset({"del"})


class PayloadError(MyceliumError):
    """A decrypted payload that is not a well-formed document write."""

    reason = "bad_payload"


class Op(NamedTuple):
    """One field write; ``field is None`` means the whole document is deleted.
    (A NamedTuple: one is built per field of every received delta.)"""

    field: str | None
    value: Any = None
    deleted: bool = False

    def to_wire(self) -> dict[str, Any]:
        if self.field is None:
            return {"del": True}
        if self.deleted:
            return {"field": self.field, "del": True}
        return {"field": self.field, "value": self.value}


class Payload(NamedTuple):
    """One decoded document write (a NamedTuple: one is built per received delta)."""

    coll: str
    doc: str
    ops: tuple[Op, ...]
    hlc: Timestamp

    @property
    def deletes_doc(self) -> bool:
        return len(self.ops) == 1 and self.ops[0].field is None

    def encode(self) -> bytes:
        _check_names(self.coll, self.doc)
        _check_ops(self.ops)
        return cbor.encode({"coll": self.coll, "doc": self.doc, "hlc": self.hlc.to_wire(),
                            "ops": [op.to_wire() for op in self.ops]})


def set_fields(coll: str, doc: str, fields: dict[str, Any], hlc: Timestamp) -> Payload:
    """A payload setting every field of ``fields`` (``None`` values become tombstones)."""
    ops = tuple(Op(name, None, True) if value is None else Op(name, value)
                for name, value in sorted(fields.items()))
    return Payload(coll, doc, ops, hlc)


def delete_doc(coll: str, doc: str, hlc: Timestamp) -> Payload:
    return Payload(coll, doc, (Op(None, None, True),), hlc)


def decode_payload(data: bytes) -> Payload:
    """Parse payload bytes; raises :class:`PayloadError` (or ``CodecError``) precisely.

    One pass over the ops (this runs for every received delta): shape, field names,
    duplicates and limits are checked as each op is built.
    """
    try:
        m = cbor.decode_fast(data, max_bytes=MAX_PAYLOAD_BYTES)
    except MyceliumError as exc:
        raise PayloadError(f"payload is not CBOR: {exc}") from exc
    if type(m) is not dict or m.keys() != _PAYLOAD_KEYS:
        raise PayloadError(f"payload must be a map with exactly {sorted(_PAYLOAD_KEYS)}")
    coll, doc, raw_ops = m["coll"], m["doc"], m["ops"]
    _check_names(coll, doc)
    try:
        hlc = Timestamp.from_wire(m["hlc"])
    except ClockError as exc:
        raise PayloadError(f"payload {exc}") from exc
    if type(raw_ops) is not list:
        raise PayloadError("ops must be an array")
    return _new_tuple(Payload, (coll, doc, _ops(raw_ops), hlc))


#: Builds a NamedTuple (Payload, Op) without its Python-level ``__new__``: twice as fast,
#: and one is built per received delta and per field.
_new_tuple = tuple.__new__


def _ops(raw_ops: list[Any]) -> tuple[Op, ...]:
    if not raw_ops:
        raise PayloadError("a delta needs at least one op", reason="no_ops")
    if len(raw_ops) > MAX_OPS_PER_DELTA:
        raise PayloadError(f"more than {MAX_OPS_PER_DELTA} ops in one delta", reason="too_many_ops")
    ops = []
    names = set()
    for o in raw_ops:  # one loop, no call per op: this runs for every field received
        if type(o) is not dict:
            raise PayloadError("op must be a map")
        keys = o.keys()
        if keys == _SET_KEYS:
            name = o["field"]
            ops.append(_new_tuple(Op, (name, o["value"], False)))
        elif keys == _DEL_FIELD_KEYS and o["del"] is True:
            name = o["field"]
            ops.append(_new_tuple(Op, (name, None, True)))
        elif keys == _DEL_DOC_KEYS and o["del"] is True:
            if len(raw_ops) != 1:
                raise PayloadError("a document delete must be the only op of its delta")
            return (Op(None, None, True),)
        else:
            raise PayloadError(f"op has unexpected shape {sorted(map(str, keys))}")
        if not (type(name) is str and 0 < len(name) <= MAX_FIELD_NAME_CHARS):
            raise PayloadError(f"field name must be 1..{MAX_FIELD_NAME_CHARS} characters")
        names.add(name)
    if len(names) != len(ops):
        raise PayloadError("a field appears twice in one delta")
    return tuple(ops)


def _check_names(coll: object, doc: object) -> None:
    if not (isinstance(coll, str) and 0 < len(coll) <= MAX_COLLECTION_CHARS and coll.isprintable()):
        raise PayloadError(f"coll must be 1..{MAX_COLLECTION_CHARS} printable characters")
    if not (isinstance(doc, str) and 0 < len(doc) <= MAX_DOC_ID_CHARS and doc.isprintable()):
        raise PayloadError(f"doc id must be 1..{MAX_DOC_ID_CHARS} printable characters")


def _check_ops(ops: tuple[Op, ...]) -> None:
    """The reader's rules, applied to a payload about to be written."""
    _ops([op.to_wire() for op in ops])
