"""Listings in the community market space, written by custodial identities.

Every write is a signed delta in the ``products`` collection of the market space, made
through Soil's ordinary local-write path (:meth:`Soil.put_doc` with ``signer``), so it syncs
to every node like any other write. A custodial key opens its chain with a delegation
certificate signed by the gateway (protocols/delegation.md) instead of a membership op.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import Any

from mycelium.gateway.intent import Parsed, match_key
from mycelium.identity.didkey import did_from_public_key
from mycelium.identity.identity import Identity
from mycelium.log.envelope import Kind
from mycelium.spaces import delegation, service
from mycelium.store.soil import Soil, UnknownSpace

log = logging.getLogger("mycelium.gateway.market")

PRODUCTS = "products"
#: Most listings a search reply lists.
MAX_RESULTS = 5
#: Currencies with two minor units are stored in cents; the rest as whole units.
ZERO_DECIMAL = frozenset({"JPY", "CLP", "PYG", "KRW", "COP"})


def listing_id(provider_id: str) -> str:
    """The listing's document id: derived from the provider's message id, so a message
    processed twice (after a crash) writes the same document instead of a second one."""
    digest = hashlib.sha256(b"mycelium-gateway-listing-v1|" + provider_id.encode()).digest()
    return base64.b32encode(digest[:10]).decode().lower()


def ensure_market(soil: Soil, name: str) -> bytes:
    """The market space by name, created with this node as admin when absent."""
    try:
        space = soil.resolve_space(name)
    except UnknownSpace:
        space = service.create_space(soil, name)
        log.info("created community space %r (%s)", name, space.hex()[:12])
    if not soil.space_state(space).is_admin(soil.identity.public_key):
        log.warning("this gateway is not an admin of %r: custodial listings will not be "
                    "accepted until an admin promotes it", name)
    return space


def minor_units(price: float, currency: str | None) -> int:
    return round(price) if currency in ZERO_DECIMAL else round(price * 100)


def major_units(price: int, currency: str | None) -> float:
    return float(price) if currency in ZERO_DECIMAL else price / 100


class Market:
    """Listing operations of one gateway in one market space."""

    def __init__(self, soil: Soil, space: bytes) -> None:
        self.soil = soil
        self.space = space

    def ensure_delegate(self, ident: Identity, now_ms: int) -> None:
        """Open ``ident``'s chain with the gateway's custodial certificate (once)."""
        if self.soil.version_vector(self.space).get(ident.public_key, 0):
            return
        cert = delegation.issue(self.soil.identity.signing_key, kind="custodial",
                                space=self.space, subject=ident.public_key, issued_ms=now_ms)
        self.soil.append(self.space, Kind.CONTROL, cert.payload(), signer=ident)

    def offer(self, ident: Identity, doc: str, parsed: Parsed, now_ms: int) -> dict[str, Any]:
        """Write the listing (idempotent: an existing ``doc`` is returned unchanged)."""
        existing = self.soil.get_doc(self.space, PRODUCTS, doc)
        if existing is not None:
            return existing
        self.ensure_delegate(ident, now_ms)
        fields: dict[str, Any] = {
            "title": (parsed.item or "?")[:200], "status": "available", "shared": True,
            "author": did_from_public_key(ident.public_key), "created_ms": now_ms,
        }
        if parsed.quantity is not None:
            fields["quantity"] = float(parsed.quantity)
        if parsed.unit:
            fields["unit"] = parsed.unit
        if parsed.price is not None:
            fields["price"] = minor_units(parsed.price, parsed.currency)
            if parsed.currency:
                fields["currency"] = parsed.currency
        self.soil.put_doc(self.space, PRODUCTS, doc, fields, signer=ident)
        return {"_id": doc, **fields}

    def search(self, item: str | None, limit: int = MAX_RESULTS) -> list[dict[str, Any]]:
        """Available listings whose title matches ``item`` (all available ones if None)."""
        wanted = set(match_key(item).split()) if item else set()
        hits = []
        for doc in self.soil.list_docs(self.space, PRODUCTS, status="available"):
            title = str(doc.get("title", ""))
            if not wanted or wanted & set(match_key(title).split()):
                hits.append(doc)
        hits.sort(key=lambda d: -int(d.get("created_ms", 0)))
        return hits[:limit]

    def cancel(self, ident: Identity, item: str | None) -> dict[str, Any] | None:
        """Mark the sender's newest matching available listing sold; the listing or None."""
        author = did_from_public_key(ident.public_key)
        wanted = set(match_key(item).split()) if item else set()
        mine = [d for d in self.soil.list_docs(self.space, PRODUCTS, status="available",
                                               author=author)
                if not wanted or wanted & set(match_key(str(d.get("title", ""))).split())]
        if not mine:
            return None
        doc = max(mine, key=lambda d: int(d.get("created_ms", 0)))
        self.soil.put_doc(self.space, PRODUCTS, doc["_id"], {"status": "sold"}, signer=ident)
        return {**doc, "status": "sold"}

    def public(self, doc: str) -> dict[str, Any] | None:
        """A listing its author shared and has not withdrawn, or None (404)."""
        listing = self.soil.get_doc(self.space, PRODUCTS, doc)
        if listing is None or listing.get("shared") is not True:
            return None
        return None if listing.get("status") == "withdrawn" else listing
