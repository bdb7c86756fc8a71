"""English, Spanish and Portuguese for the web app; numbers, prices and dates via babel.

Messages are keyed by their English text (``_("Market")``); :data:`CATALOG` holds the
Spanish and Portuguese of each, and a missing translation falls back to English rather
than failing. The language comes from the person's choice (a cookie set by the switch in
the header), else from the browser's ``Accept-Language``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from babel.dates import format_datetime
from babel.numbers import format_currency, format_decimal, get_currency_precision
from markupsafe import Markup

from mycelium.web.catalog import CATALOG

LANGUAGES = {"en": "English", "es": "Español", "pt": "Português"}
DEFAULT = "en"
#: babel locales used to format numbers and dates for each language.
LOCALES = {"en": "en_US", "es": "es_ES", "pt": "pt_BR"}


def pick_language(cookie: str | None, accept_language: str | None) -> str:
    """The person's choice if valid, else the first supported language the browser asks
    for (``Accept-Language`` in order of appearance, quality ignored), else English."""
    if cookie in LANGUAGES:
        return str(cookie)
    for part in (accept_language or "").split(",")[:16]:
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return DEFAULT


def translator(lang: str) -> Callable[..., str]:
    """``_(english, **fields)`` for ``lang``: the translation, formatted with ``fields``."""
    table = CATALOG.get(lang, {})

    def _(text: str, /, **fields: Any) -> str:
        out = table.get(text, text) if lang != DEFAULT else text
        return out.format(**fields) if fields else out

    return _


class Formats:
    """Locale formatting of the values the pages show."""

    def __init__(self, lang: str) -> None:
        self.locale = LOCALES.get(lang, LOCALES[DEFAULT])

    def number(self, value: Any) -> str:
        if value is None or value == "":
            return ""
        return format_decimal(value, locale=self.locale)

    def money(self, minor: Any, currency: str | None) -> str:
        """A price kept in minor units (cents) of ``currency``."""
        if minor is None or minor == "":
            return ""
        code = (currency or "EUR").upper()
        try:
            digits = get_currency_precision(code)
        except (KeyError, ValueError):
            digits = 2
        amount = Decimal(int(minor)).scaleb(-digits)
        try:
            return format_currency(amount, code, locale=self.locale)
        except (KeyError, ValueError):
            return f"{format_decimal(amount, locale=self.locale)} {code}"

    def money_input(self, minor: Any, currency: str | None) -> str:
        """A price as the person would type it (no currency sign, locale decimals)."""
        if minor is None or minor == "":
            return ""
        try:
            digits = get_currency_precision((currency or "EUR").upper())
        except (KeyError, ValueError):
            digits = 2
        amount = Decimal(int(minor)).scaleb(-digits)
        return format_decimal(amount, locale=self.locale, group_separator=False)

    def when(self, ms: Any) -> str:
        if not ms:
            return ""
        moment = datetime.fromtimestamp(int(ms) / 1000, tz=UTC)
        return format_datetime(moment, "medium", locale=self.locale)

    def time(self, value: Any) -> Markup:
        """A moment (epoch ms, or an ISO 8601 UTC string as the node's status gives) as
        ``<time datetime=… data-local>``: rendered here in UTC (the server does not know
        the person's time zone), then shown in the browser's own zone by static/app.js."""
        if not value:
            return Markup("")
        try:
            if isinstance(value, str):
                moment = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
            else:
                moment = datetime.fromtimestamp(int(value) / 1000, tz=UTC)
        except (ValueError, OverflowError, OSError):
            return Markup("{}").format(str(value))
        text = format_datetime(moment, "medium", tzinfo=UTC, locale=self.locale) + " UTC"
        return Markup('<time datetime="{}" data-local>{}</time>').format(
            moment.strftime("%Y-%m-%dT%H:%M:%SZ"), text)

    def size(self, nbytes: int) -> str:
        units = ["B", "KB", "MB", "GB"]
        value = float(nbytes)
        unit = units[0]
        for unit in units:
            if value < 1024 or unit == units[-1]:
                break
            value /= 1024
        return f"{format_decimal(round(value, 1), locale=self.locale)} {unit}"
