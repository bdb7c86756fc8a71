"""The domain collections of the market and of personal spaces (protocols/delta.md §7.4).

* ``products``: listings in a community market ("5 kg of tomatoes"). ``price`` is an
  integer in minor units of ``currency`` (cents), never a float, so sums are exact.
  ``status``, ``location``, ``currency`` and ``unit`` are indexed for queries.
* ``diary`` and ``health``: personal notes; allowed only in the personal space, whose
  content is also encrypted at rest. A community space refuses them on write and receive.
"""

from __future__ import annotations

from mycelium.crdt.schema import Collection, FieldSpec, Registry

STATUSES = frozenset({"available", "reserved", "sold", "withdrawn"})

PRODUCTS = Collection(
    name="products",
    fields={
        "title": FieldSpec("text", max_chars=200),
        "description": FieldSpec("text", max_chars=2000),
        "quantity": FieldSpec("number", minimum=0, maximum=1e9),
        "unit": FieldSpec("text", max_chars=16, indexed=True),
        "price": FieldSpec("int", minimum=0, maximum=10**12),
        "currency": FieldSpec("text", max_chars=3, indexed=True),
        "location": FieldSpec("text", max_chars=128, indexed=True),
        "status": FieldSpec("text", max_chars=16, choices=STATUSES, indexed=True),
        "author": FieldSpec("text", max_chars=128, indexed=True),
        "contact": FieldSpec("text", max_chars=128),
        "created_ms": FieldSpec("int", minimum=0, maximum=2**63 - 1),
        # The author's choice to publish the listing on a gateway's public page (/p/<id>).
        "shared": FieldSpec("bool"),
    },
    space_kinds=frozenset({"community"}),
)

DIARY = Collection(
    name="diary",
    fields={
        "title": FieldSpec("text", max_chars=200),
        "body": FieldSpec("text", max_chars=16_000),
        "date": FieldSpec("text", max_chars=32),
        "mood": FieldSpec("text", max_chars=32),
    },
    space_kinds=frozenset({"personal"}),
)

HEALTH = Collection(
    name="health",
    fields={
        "kind": FieldSpec("text", max_chars=64),
        "note": FieldSpec("text", max_chars=16_000),
        "date": FieldSpec("text", max_chars=32),
        "value": FieldSpec("number"),
        "unit": FieldSpec("text", max_chars=16),
    },
    space_kinds=frozenset({"personal"}),
)

#: Social-recovery packages travelling over sync to the guardians' nodes (docs/recovery.md).
#: Doc id = the owner's DID. ``package`` is the base64 of the signed guardian package whose
#: shares are each sealed to one guardian, so other members of the space learn nothing.
GUARDIAN_PACKAGES = Collection(
    name="guardian_packages",
    fields={
        "owner": FieldSpec("text", max_chars=128, indexed=True),
        "package": FieldSpec("text", max_chars=48_000),
        "threshold": FieldSpec("int", minimum=1, maximum=16),
        "guardians": FieldSpec("int", minimum=1, maximum=16),
        "created_ms": FieldSpec("int", minimum=0, maximum=2**63 - 1),
    },
    space_kinds=frozenset({"community"}),
)

REGISTRY = Registry([PRODUCTS, DIARY, HEALTH, GUARDIAN_PACKAGES])
