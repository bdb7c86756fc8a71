"""Collection schemas: which fields a document may have, their types and limits.

Checked on write (``Soil.put_doc``) and on receive (before a delta is applied), so a
peer with a bug or bad intent cannot put an oversized or ill-typed value into anyone's
documents. Schemas are declarative (:class:`FieldSpec`), which keeps the rules readable
and lets ``protocols/delta.md`` list them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mycelium.crdt.payload import Payload
from mycelium.errors import MyceliumError
from mycelium.log.limits import MAX_TEXT_CHARS

FieldType = Literal["text", "int", "number", "bool"]
SpaceKind = Literal["personal", "community"]


class SchemaError(MyceliumError):
    """A document write that does not match its collection's schema."""

    reason = "schema_violation"


class UnknownCollection(SchemaError):
    reason = "unknown_collection"


class CollectionNotAllowed(SchemaError):
    """A collection used in a kind of space it is not meant for (e.g. health in a community)."""

    reason = "collection_not_allowed"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """Type and bounds of one field. ``indexed``: queryable through the SQL index (only
    for non-sensitive fields of community spaces)."""

    type: FieldType
    max_chars: int = MAX_TEXT_CHARS
    minimum: float | None = None
    maximum: float | None = None
    choices: frozenset[str] | None = None
    indexed: bool = False

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` for this field, or None if it fits."""
        if self.type == "text":
            if not isinstance(value, str):
                return "must be text"
            if len(value) > self.max_chars:
                return f"longer than {self.max_chars} characters"
            if self.choices is not None and value not in self.choices:
                return f"must be one of {sorted(self.choices)}"
            return None
        if self.type == "bool":
            return None if isinstance(value, bool) else "must be true or false"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a{'n integer' if self.type == 'int' else ' number'}"
        if self.type == "int" and not isinstance(value, int):
            return "must be an integer"
        if isinstance(value, float) and not math.isfinite(value):
            return "must be finite"
        if self.minimum is not None and value < self.minimum:
            return f"must be >= {self.minimum}"
        if self.maximum is not None and value > self.maximum:
            return f"must be <= {self.maximum}"
        return None


@dataclass(frozen=True, slots=True)
class Collection:
    """A named set of field specs, allowed in some kinds of spaces."""

    name: str
    fields: Mapping[str, FieldSpec]
    space_kinds: frozenset[SpaceKind] = field(default=frozenset({"personal", "community"}))

    @property
    def indexed(self) -> frozenset[str]:
        return frozenset(n for n, spec in self.fields.items() if spec.indexed)

    def check_payload(self, payload: Payload, space_kind: SpaceKind) -> None:
        """Raise :class:`SchemaError` unless every op of ``payload`` fits this schema."""
        if space_kind not in self.space_kinds:
            raise CollectionNotAllowed(
                f"collection {self.name!r} is not allowed in a {space_kind} space")
        specs = self.fields
        for name, value, deleted in payload.ops:
            if name is None:
                continue
            spec = specs.get(name)
            if spec is None:
                raise SchemaError(f"collection {self.name!r} has no field {name!r}",
                                  reason="unknown_field")
            if not deleted and (problem := spec.problem(value)) is not None:
                raise SchemaError(f"field {name!r}: {problem}")


#: ``FieldSpec.type`` as the compiled schema check numbers it (mycelium/_accel.c).
_TYPE_CODES = {"text": 0, "int": 1, "number": 2, "bool": 3}
CompiledSchema = dict[str, dict[str, tuple[Any, ...]]]


class Registry:
    """The collections a node knows, by name."""

    def __init__(self, collections: list[Collection]) -> None:
        self._by_name = {c.name: c for c in collections}
        self._indexed = {c.name: c.indexed for c in collections}
        self._compiled: dict[str, CompiledSchema] = {}

    def compiled(self, space_kind: SpaceKind) -> CompiledSchema:
        """The collections allowed in ``space_kind`` as plain data for the compiled check
        (``{coll: {field: (type code, max_chars, minimum, maximum, choices)}}``); the
        compiled check passes exactly what :meth:`check` passes, or defers to it."""
        table = self._compiled.get(space_kind)
        if table is None:
            table = self._compiled[space_kind] = {
                c.name: {name: (_TYPE_CODES[f.type], f.max_chars, f.minimum, f.maximum,
                                f.choices) for name, f in c.fields.items()}
                for c in self._by_name.values() if space_kind in c.space_kinds}
        return table

    @property
    def indexed_map(self) -> dict[str, frozenset[str]]:
        """Indexed fields of every collection by name (read only)."""
        return self._indexed

    def indexed(self, name: str) -> frozenset[str]:
        """Indexed fields of a collection (empty for unknown ones); precomputed."""
        return self._indexed.get(name, frozenset())

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> Collection:
        coll = self._by_name.get(name)
        if coll is None:
            raise UnknownCollection(f"unknown collection {name!r}")
        return coll

    def check(self, payload: Payload, space_kind: SpaceKind) -> Collection:
        coll = self.get(payload.coll)
        coll.check_payload(payload, space_kind)
        return coll
