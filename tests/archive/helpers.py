"""Small real spaces for the archive tests (real Soil, real identities)."""

from __future__ import annotations

from pathlib import Path

from mycelium.identity.didkey import did_from_public_key
from mycelium.identity.identity import Identity
from mycelium.spaces import service
from mycelium.store.soil import Soil

ADMIN = Identity.from_seed(b"\x11" * 32)
MEMBER = Identity.from_seed(b"\x22" * 32)
STRANGER = Identity.from_seed(b"\x33" * 32)
MARKER = "MARKER-pumpkin-7f3a9c"
SPACE_NAME = "riverside-market"


def community(path: Path, docs: int = 20, *, marker: str = MARKER,
              big: bool = False) -> tuple[Soil, bytes]:
    """ADMIN's store with a community space shared with MEMBER and ``docs`` listings (the
    first one's title holds ``marker``); ``big``: 2 KB descriptions (~2.3 KB deltas)."""
    soil = Soil.open(path, ADMIN)
    space = service.create_space(soil, SPACE_NAME)
    service.invite(soil, space, did_from_public_key(MEMBER.public_key))
    for i in range(docs):
        title = f"{marker} tomatoes" if i == 0 else f"tomatoes {i}"
        fields: dict[str, object] = {"title": title, "quantity": i, "unit": "kg"}
        if big:
            fields["description"] = f"{i:04d}" * 500
        soil.put_doc(space, "products", f"p{i}", fields)
    return soil, space


def listings(soil: Soil, space: bytes) -> list[dict[str, object]]:
    return sorted(soil.list_docs(space, "products"), key=lambda d: str(d["_id"]))
