"""Every message has Spanish and Portuguese; forms give typed values or named problems."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest

from mycelium.market.collections import PRODUCTS
from mycelium.web import app as web_app
from mycelium.web import forms
from mycelium.web.catalog import CATALOG
from mycelium.web.forms import Input
from mycelium.web.i18n import Formats, pick_language, translator

WEB = Path(web_app.__file__).parent
MESSAGE = re.compile(r"""_\(\s*(["'])((?:(?!\1).)+)\1""")


def messages() -> set[str]:
    found: set[str] = set()
    for path in [*WEB.glob("templates/*.html"), WEB / "app.py", WEB / "forms.py"]:
        found.update(m.group(2) for m in MESSAGE.finditer(path.read_text()))
    found.add(web_app.EXPIRED_FORM)
    return found


def fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@pytest.mark.parametrize("lang", ["es", "pt"])
def test_every_message_is_translated(lang: str) -> None:
    missing = sorted(m for m in messages() if m not in CATALOG[lang])
    assert not missing, f"{lang}: no translation for {missing}"
    for english, translated in CATALOG[lang].items():
        assert fields(english) == fields(translated), (lang, english)


def test_language_choice() -> None:
    assert pick_language("pt", "es-ES,es;q=0.9") == "pt"
    assert pick_language(None, "de-DE,es;q=0.8,en;q=0.5") == "es"
    assert pick_language("xx", None) == "en"
    assert translator("es")("{n} listings", n=3) == "3 anuncios"


def test_locale_formats() -> None:
    assert Formats("es").money(123456, "EUR") == "1.234,56\xa0€"
    assert Formats("en").money(123456, "EUR") == "€1,234.56"
    assert Formats("pt").money(990, "BRL") == "R$\xa09,90"
    assert Formats("pt").number(1.5) == "1,5"


def test_form_parsing_types_and_problems() -> None:
    inputs = {"title": Input("text", required=True), "quantity": Input("number"),
              "price": Input("money"), "shared": Input("bool")}
    ok = forms.parse_fields({"title": "Tomatoes", "quantity": "2,5", "price": "3,20",
                             "shared": "on"}, inputs, PRODUCTS, translator("es"), "es_ES")
    assert ok.ok and ok.data == {"title": "Tomatoes", "quantity": 2.5, "price": 320,
                                 "shared": True}
    bad = forms.parse_fields({"title": "x" * 201, "quantity": "many", "price": "-1"},
                             inputs, PRODUCTS, translator("pt"), "pt_BR")
    assert bad.errors == {"title": "No máximo 200 caracteres.",
                          "quantity": "Deve ser um número.",
                          "price": "Deve ser pelo menos 0."}
    empty = forms.parse_fields({}, inputs, PRODUCTS, translator("en"), "en_US")
    assert empty.errors == {"title": "Please fill in this field."}


def test_form_body_limits() -> None:
    assert forms.parse_body(b"a=1&b=%C3%A9") == {"a": "1", "b": "é"}
    with pytest.raises(forms.FormTooLarge):
        forms.parse_body(b"a=" + b"x" * forms.MAX_FORM_BYTES)
    with pytest.raises(forms.FormTooLarge):
        forms.parse_body("&".join(f"k{i}=v" for i in range(100)).encode())


@pytest.mark.parametrize(("typed", "locale", "value"), [
    ("3,50", "en_US", "3.50"), ("3.50", "es_ES", "3.50"), ("1.500", "es_ES", "1500"),
    ("1.500", "en_US", "1.500"), ("1,500", "en_US", "1500"), ("1.234,5", "en_US", "1234.5"),
    ("1,234.5", "pt_BR", "1234.5"), ("1.000.000", "pt_BR", "1000000"), (",5", "es_ES", "0.5"),
])
def test_decimals_typed_either_way(typed: str, locale: str, value: str) -> None:
    from decimal import Decimal

    assert forms._decimal(typed, locale) == Decimal(value)


@pytest.mark.parametrize("typed", ["abc", "1e5", "nan", "inf", "--1", ""])
def test_not_numbers(typed: str) -> None:
    assert forms._decimal(typed, "en_US") is None
