"""The gateway's answers, in the sender's language (en, es, pt).

Plain text, short, and with the one thing the person needs next: the public link of a new
listing, the matching listings with their links, or how to write an offer. Any other
language falls back to English.
"""

from __future__ import annotations

from typing import Any

from mycelium.gateway.market import major_units

LANGS = ("en", "es", "pt")

TEXTS: dict[str, dict[str, str]] = {
    "listed": {
        "en": "Listed! {title}{details}. Share this link: {link}",
        "es": "¡Publicado! {title}{details}. Comparte este enlace: {link}",
        "pt": "Anunciado! {title}{details}. Compartilhe este link: {link}",
    },
    "matches": {
        "en": "Available now:\n{lines}",
        "es": "Disponible ahora:\n{lines}",
        "pt": "Disponível agora:\n{lines}",
    },
    "no_matches": {
        "en": "Nobody offers {item} right now. Try again later.",
        "es": "Nadie ofrece {item} ahora mismo. Prueba de nuevo más tarde.",
        "pt": "Ninguém oferece {item} agora. Tente de novo mais tarde.",
    },
    "cancelled": {
        "en": "Done: {title} is marked sold.",
        "es": "Hecho: {title} quedó marcado como vendido.",
        "pt": "Pronto: {title} foi marcado como vendido.",
    },
    "cancel_none": {
        "en": "I found no available listing of yours for {item}.",
        "es": "No encontré ninguna publicación tuya disponible de {item}.",
        "pt": "Não encontrei nenhum anúncio seu disponível de {item}.",
    },
    "help": {
        "en": ("I list what you offer on the community market.\n"
               "• Offer: \"I have 5kg of tomatoes for 2 euros\"\n"
               "• Search: \"who has honey?\"\n"
               "• Sold out: \"sold out of tomatoes\"\n"
               "• Your own key: \"link\""),
        "es": ("Publico lo que ofreces en el mercado comunitario.\n"
               "• Ofrecer: \"tengo 5 kg de tomates a 2 euros\"\n"
               "• Buscar: \"¿quién tiene miel?\"\n"
               "• Agotado: \"ya no tengo tomates\"\n"
               "• Tu propia clave: \"vincular\""),
        "pt": ("Anuncio o que você oferece no mercado comunitário.\n"
               "• Oferecer: \"tenho 5 kg de tomates por 2 reais\"\n"
               "• Procurar: \"quem tem mel?\"\n"
               "• Esgotado: \"acabou o tomate\"\n"
               "• Sua própria chave: \"vincular\""),
    },
    "unknown": {
        "en": "Sorry, I did not understand. Write for example \"I have 5kg of tomatoes\" "
              "or \"who has honey?\". Send \"help\" for more.",
        "es": "Perdón, no entendí. Escribe por ejemplo \"tengo 5 kg de tomates\" "
              "o \"¿quién tiene miel?\". Envía \"ayuda\" para más.",
        "pt": "Desculpe, não entendi. Escreva por exemplo \"tenho 5 kg de tomates\" "
              "ou \"quem tem mel?\". Envie \"ajuda\" para mais.",
    },
    "link": {
        "en": "To move your listings to your own node, run there: mycelium gateway link "
              "{code} --gateway {url}  (valid {minutes} minutes)",
        "es": "Para pasar tus publicaciones a tu propio nodo, ejecuta allí: mycelium gateway "
              "link {code} --gateway {url}  (válido {minutes} minutos)",
        "pt": "Para levar seus anúncios para o seu próprio nó, execute lá: mycelium gateway "
              "link {code} --gateway {url}  (válido por {minutes} minutos)",
    },
    "linked": {
        "en": "Your messages now belong to {did}. Publish new listings from your own node.",
        "es": "Tus mensajes ahora pertenecen a {did}. Publica desde tu propio nodo.",
        "pt": "Suas mensagens agora pertencem a {did}. Publique do seu próprio nó.",
    },
    "not_listed": {
        "en": "I could not list that right now ({reason}). Please try again later.",
        "es": "No pude publicarlo ahora ({reason}). Inténtalo más tarde.",
        "pt": "Não consegui anunciar agora ({reason}). Tente mais tarde.",
    },
}

UNIT_WORDS: dict[str, dict[str, str]] = {
    "en": {"dozen": "dozen", "bunch": "bunch", "jar": "jar", "unit": "units"},
    "es": {"dozen": "docena", "bunch": "manojo", "jar": "frasco", "unit": "unidades"},
    "pt": {"dozen": "dúzia", "bunch": "maço", "jar": "pote", "unit": "unidades"},
}
ANYTHING = {"en": "anything", "es": "nada", "pt": "nada"}


def reply_text(kind: str, lang: str, **fields: Any) -> str:
    """The reply ``kind`` in ``lang`` (English if unknown) with ``fields`` filled in."""
    texts = TEXTS[kind]
    return texts.get(lang, texts["en"]).format(**fields)


def details(listing: dict[str, Any], lang: str) -> str:
    """", 5 kg, 2.00 EUR" for a listing's quantity and price (empty parts left out)."""
    parts = []
    qty, unit = listing.get("quantity"), listing.get("unit")
    if qty is not None:
        amount = f"{qty:g}"
        parts.append(f"{amount} {UNIT_WORDS.get(lang, UNIT_WORDS['en']).get(unit, unit)}"
                     if unit else amount)
    price = listing.get("price")
    if price is not None:
        cur = listing.get("currency")
        parts.append(f"{major_units(int(price), cur):.2f} {cur or ''}".rstrip())
    return "".join(", " + p for p in parts)


def listing_line(listing: dict[str, Any], lang: str, link: str) -> str:
    return f"• {listing.get('title', '?')}{details(listing, lang)} — {link}"
