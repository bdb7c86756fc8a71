"""The gateway's intent parser against a table of real-looking messages (en/es/pt).

``intent_corpus.tsv`` holds one message per line with every field the parser must give
back; an empty cell is null. Add a line when a message is read wrongly in the field, fix
the lexicon or the rules, and keep every other line passing.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mycelium.gateway.intent import MAX_CHARS, Parsed, _to_float, match_key, parse
from mycelium.gateway.lexicon import LANGS, UNITS

CORPUS = Path(__file__).with_name("intent_corpus.tsv")
FIELDS = ("intent", "item", "quantity", "unit", "price", "currency", "lang")
INTENTS = {"offer", "request", "search", "cancel", "help", "link", "unknown"}


def _rows() -> list[tuple[str, dict[str, object]]]:
    rows = []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        text, *cells = line.split("\t")
        assert len(cells) == len(FIELDS), f"malformed corpus line: {line!r}"
        expected: dict[str, object] = {}
        for name, cell in zip(FIELDS, cells, strict=True):
            if cell == "":
                expected[name] = None
            elif name in ("quantity", "price"):
                expected[name] = float(cell)
            else:
                expected[name] = cell
        rows.append((text, expected))
    return rows


ROWS = _rows()


def test_corpus_is_large_and_covers_every_language_and_intent() -> None:
    assert len(ROWS) >= 200
    langs = Counter(str(expected["lang"]) for _, expected in ROWS)
    intents = Counter(str(expected["intent"]) for _, expected in ROWS)
    assert all(langs[lang] >= 40 for lang in LANGS), langs
    assert set(intents) == INTENTS, intents
    assert len({text for text, _ in ROWS}) == len(ROWS), "duplicate messages in the corpus"


@pytest.mark.parametrize(("text", "expected"), ROWS, ids=[t[:40] for t, _ in ROWS])
def test_message(text: str, expected: dict[str, object]) -> None:
    assert parse(text).as_dict() == expected


def test_as_dict_has_exactly_the_cli_fields() -> None:
    assert list(parse("I have 5kg of tomatoes").as_dict()) == list(FIELDS)


def test_language_hint_wins_over_detection() -> None:
    # "dos" is "two" in Spanish and "of the" in Portuguese: the hint decides.
    assert parse("tengo dos kilos de papas", lang="es").quantity == 2
    assert parse("tenho dois quilos dos tomates", lang="pt").quantity == 2
    assert parse("I have 5kg of tomatoes", lang="pt").lang == "pt"
    assert parse("I have 5kg of tomatoes", lang="xx").lang == "en"  # unknown hint ignored


@pytest.mark.parametrize(
    ("number", "value"),
    [("2", 2.0), ("2,5", 2.5), ("2.5", 2.5), ("1.500", 1500.0), ("1,500", 1500.0),
     ("0,500", 0.5), ("1.234,56", 1234.56), ("1,234.56", 1234.56), ("1.000.000", 1e6),
     ("3,25", 3.25)],
)
def test_decimal_and_grouping_separators(number: str, value: float) -> None:
    assert _to_float(number) == value


def test_every_unit_alias_is_read_after_a_number() -> None:
    for canonical, aliases in UNITS.items():
        for alias in aliases:
            parsed = parse(f"I have 3 {alias} of something", lang="en")
            assert (parsed.quantity, parsed.unit) == (3.0, canonical), alias


def test_match_key_folds_case_accents_and_plurals() -> None:
    assert match_key("Tomatoes") == match_key("tomato") == match_key("tomates")
    assert match_key("Limões") == match_key("limão")
    assert match_key("huevos") == match_key("Huevo") != match_key("honey")
    assert match_key("the eggs") == match_key("egg")


def test_long_message_is_cut_not_refused() -> None:
    text = "I have 5kg of tomatoes " + "blah " * 10_000
    parsed = parse(text)
    assert (parsed.intent, parsed.quantity, parsed.unit) == ("offer", 5.0, "kg")
    assert len(text) > MAX_CHARS


@given(st.text(max_size=300))
def test_never_raises_and_gives_well_formed_fields(text: str) -> None:
    parsed = parse(text)
    assert isinstance(parsed, Parsed)
    assert parsed.intent in INTENTS
    assert parsed.lang in LANGS
    assert parsed.unit is None or parsed.unit in UNITS
    for number in (parsed.quantity, parsed.price):
        assert number is None or (math.isfinite(number) and number >= 0)
    assert parsed.item is None or parsed.item.strip() == parsed.item != ""


@given(st.lists(st.sampled_from(
    ["I", "have", "5", "kg", "of", "tomatoes", "¿", "?", "€", "$", "R$", "2,5", "y", "medio",
     "and", "a", "half", "dozen", "vendo", "ya", "no", "tengo", "who", "has", "🍅", "½", ",",
     "quilo", "e", "meio", "each", "cada", "1.500", "dos", "dois", "help", "link"]),
    max_size=25))
def test_never_raises_on_word_salad_of_the_lexicon(words: list[str]) -> None:
    parsed = parse(" ".join(words))
    assert parsed.intent in INTENTS
