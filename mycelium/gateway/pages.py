"""The public listing page ``/p/{id}``: server-rendered, small, accessible, previewable.

Only listings their authors shared (``shared: true``) and did not withdraw are shown;
everything else is the same 404 page, so the answer does not reveal whether a private
listing exists. The contact button opens WhatsApp with a prefilled message to the number
the listing came through (the gateway's business number), never to the seller's own
number unless the listing carries a ``contact`` the seller chose to publish.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape

from mycelium.gateway.market import major_units
from mycelium.gateway.replies import UNIT_WORDS

LABELS: dict[str, dict[str, Any]] = {
    "en": {"market": "Community market", "quantity": "Quantity", "price": "Price",
           "location": "Location", "posted": "Posted", "contact": "Contact on WhatsApp",
           "contact_hint": "Your message goes through the market's number; the seller's "
                           "number stays private.",
           "not_found": "Listing not found",
           "not_found_hint": "It may have been withdrawn, or it was never shared publicly.",
           "footer": "Listed through the community's Mycelium gateway.",
           "status": {"available": "Available", "reserved": "Reserved", "sold": "Sold",
                      "withdrawn": "Withdrawn"},
           "about": "About your listing"},
    "es": {"market": "Mercado comunitario", "quantity": "Cantidad", "price": "Precio",
           "location": "Lugar", "posted": "Publicado", "contact": "Contactar por WhatsApp",
           "contact_hint": "Tu mensaje pasa por el número del mercado; el número de quien "
                           "vende sigue privado.",
           "not_found": "Publicación no encontrada",
           "not_found_hint": "Puede haber sido retirada o nunca se compartió públicamente.",
           "footer": "Publicado a través de la pasarela Mycelium de la comunidad.",
           "status": {"available": "Disponible", "reserved": "Reservado", "sold": "Vendido",
                      "withdrawn": "Retirado"},
           "about": "Sobre tu publicación"},
    "pt": {"market": "Mercado comunitário", "quantity": "Quantidade", "price": "Preço",
           "location": "Local", "posted": "Publicado", "contact": "Falar pelo WhatsApp",
           "contact_hint": "Sua mensagem passa pelo número do mercado; o número de quem "
                           "vende continua privado.",
           "not_found": "Anúncio não encontrado",
           "not_found_hint": "Pode ter sido retirado ou nunca foi compartilhado.",
           "footer": "Anunciado pelo gateway Mycelium da comunidade.",
           "status": {"available": "Disponível", "reserved": "Reservado", "sold": "Vendido",
                      "withdrawn": "Retirado"},
           "about": "Sobre seu anúncio"},
}

_ENV = Environment(loader=PackageLoader("mycelium.gateway", "templates"),
                   autoescape=select_autoescape(["html"]), auto_reload=False)


def pick_lang(accept_language: str | None) -> str:
    """The first of en/es/pt named in an Accept-Language header (English otherwise)."""
    for part in (accept_language or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LABELS:
            return code
    return "en"


def contact_url(listing: dict[str, Any], business_number: str | None, doc: str,
                lang: str) -> str | None:
    """A wa.me deep link: to the seller's published contact, else to the business number."""
    number = listing.get("contact") or business_number
    digits = re.sub(r"\D", "", str(number or ""))
    if not digits:
        return None
    text = f"{LABELS[lang]['about']} {listing.get('title', '')} ({doc})"
    return f"https://wa.me/{digits}?text={quote(text)}"


def render_listing(listing: dict[str, Any], *, doc: str, url: str, lang: str,
                   business_number: str | None) -> str:
    t = LABELS[lang]
    qty, unit = listing.get("quantity"), listing.get("unit")
    quantity = None
    if qty is not None:
        quantity = f"{qty:g} {UNIT_WORDS[lang].get(unit, unit) if unit else ''}".strip()
    price = None
    if listing.get("price") is not None:
        cur = listing.get("currency") or ""
        price = f"{major_units(int(listing['price']), cur):.2f} {cur}".strip()
    created = dt.datetime.fromtimestamp(int(listing.get("created_ms", 0)) / 1000, dt.UTC)
    summary = ", ".join(p for p in (quantity, price) if p) or t["market"]
    return _ENV.get_template("listing.html").render(
        lang=lang, t=t, title=f"{listing.get('title', '')} — {t['market']}", listing=listing,
        quantity=quantity, price=price, summary=summary, url=url,
        posted=created.strftime("%Y-%m-%d %H:%M UTC"), posted_iso=created.isoformat(),
        contact_url=contact_url(listing, business_number, doc, lang))


def render_not_found(lang: str) -> str:
    t = LABELS[lang]
    return _ENV.get_template("not_found.html").render(lang=lang, t=t, title=t["not_found"])
