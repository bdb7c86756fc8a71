"""Collection schemas and the market collections."""

from __future__ import annotations

import pytest

from mycelium.crdt.hlc import Timestamp
from mycelium.crdt.payload import delete_doc, set_fields
from mycelium.crdt.schema import SchemaError
from mycelium.market.collections import REGISTRY

T = Timestamp(1, 0, b"")


def check(coll: str, fields: dict[str, object], kind: str = "community") -> None:
    REGISTRY.check(set_fields(coll, "d", fields, T), kind)  # type: ignore[arg-type]


def test_valid_product() -> None:
    check("products", {"title": "Tomatoes", "quantity": 5.5, "unit": "kg", "price": 250,
                       "currency": "EUR", "location": "Market square", "status": "available",
                       "author": "did:key:z6Mk"})
    REGISTRY.check(delete_doc("products", "d", T), "community")


@pytest.mark.parametrize(("fields", "reason"), [
    ({"title": 5}, "schema_violation"),
    ({"title": "x" * 201}, "schema_violation"),
    ({"quantity": -1}, "schema_violation"),
    ({"quantity": float("nan")}, "schema_violation"),
    ({"quantity": True}, "schema_violation"),
    ({"price": 2.5}, "schema_violation"),
    ({"status": "stolen"}, "schema_violation"),
    ({"colour": "red"}, "unknown_field"),
])
def test_bad_products(fields: dict[str, object], reason: str) -> None:
    with pytest.raises(SchemaError) as exc:
        check("products", fields)
    assert exc.value.reason == reason


def test_personal_collections_only_in_personal_spaces() -> None:
    check("diary", {"body": "dear diary"}, "personal")
    check("health", {"kind": "bp", "value": 120}, "personal")
    for coll in ("diary", "health"):
        with pytest.raises(SchemaError) as exc:
            check(coll, {"date": "2026-01-01"}, "community")
        assert exc.value.reason == "collection_not_allowed"
    with pytest.raises(SchemaError) as exc:
        check("products", {"title": "x"}, "personal")
    assert exc.value.reason == "collection_not_allowed"
    with pytest.raises(SchemaError) as exc:
        check("nope", {"a": 1})
    assert exc.value.reason == "unknown_collection"


def test_field_tombstone_needs_only_a_known_field() -> None:
    check("products", {"title": None})
