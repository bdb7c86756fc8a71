"""Turn a chat message into an intent with its item, quantity, unit and price (en/es/pt).

"I have 5kg of tomatoes", "vendo 3 manojos de albahaca a 2 euros", "¿quién tiene huevos?":
people write to the gateway the way they write to a neighbour. This parser is rules, not a
model: it runs in-process in microseconds, needs no download, and every decision it makes
can be read in :mod:`mycelium.gateway.lexicon` and pinned by the table-driven corpus in
``tests/gateway/test_intent_corpus.py``.

How a message is read, in order:

1. **Clean**: cut to :data:`MAX_CHARS`, fold (lower case, no accents, see
   :func:`~mycelium.gateway.lexicon.fold`), drop emoji and other symbols, space out
   punctuation, keep currency signs.
2. **Language**: the caller's hint, else the language whose marker words the message uses
   most (:func:`detect_lang`); ties go to accents that only one language has, then English.
3. **Numbers**: number words become digits (text2num's ``alpha2digit`` with threshold 0, so
   "two"/"dos"/"dois" convert), then our own rules for what text2num leaves alone: halves
   ("2 and a half", "medio kilo", "meia dúzia", "½") and "a kilo" / "a dozen" meaning one.
   Decimals take a comma or a point ("2,5" and "2.5"); one separator followed by exactly
   three digits groups thousands ("1.500", "1,500").
4. **Price**: a number next to a currency sign or word ("€2", "2 euros", "R$ 10", "10
   reais"); a bare "$" is read by language (USD, MXN pesos, BRL reais).
5. **Quantity**: the first remaining number, with the unit word after it (canonical names
   from the alias table: kg, g, lb, l, ml, dozen, bunch, jar, unit); a number followed by
   an item word counts units ("12 eggs").
6. **Intent**: the first intent in :data:`~mycelium.gateway.lexicon.INTENT_ORDER` with a
   phrase in the message ("sold out" before "sold", "ya no tengo" before "tengo", "I want
   to sell" before "I want"); "link" and "help" only when the message starts with them or
   is that short; a question with "any"/"hay"/"tem" searches; failing all that, a question
   about an item searches and an item with a quantity or price is an offer.
7. **Item**: the first run of words not used above, cut at words that start a place, time
   or price ("in", "por", "em"...), without articles and politeness at its edges, given
   back with the accents the sender typed ("limões", not "limoes").

:func:`parse` never raises on a string: anything it cannot read is ``intent="unknown"``
and the gateway replies with help in the sender's language.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any

from mycelium.gateway import lexicon as lx

#: Longest message the parser reads; the rest is ignored (WhatsApp allows 4096 chars, but
#: an intent is in the first sentence or two, and a bound keeps hostile input cheap).
MAX_CHARS = 1000

_NUM = r"\d+(?:[.,]\d+)*"
_TOKEN = re.compile(rf"{_NUM}|r\$|us\$|u\$s|[$€£?,]|[a-z][a-z']*")
_FRACTIONS = {"½": " 0.5 ", "¼": " 0.25 ", "¾": " 0.75 "}
_KEEP_SYMBOLS = frozenset("$€£?'")


@dataclass(frozen=True, slots=True)
class Parsed:
    """What a message asks for. Fields the message does not state are ``None``."""

    intent: str
    item: str | None
    quantity: float | None
    unit: str | None
    price: float | None
    currency: str | None
    lang: str

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of ``mycelium gateway parse --json``."""
        return asdict(self)


def parse(text: str, lang: str | None = None) -> Parsed:
    """Read ``text`` (any string; see the module docstring for the rules)."""
    original = text[:MAX_CHARS]
    clean = _clean(original)
    language = lang if lang in lx.LANGS else detect_lang(clean, original)
    digits = _numbers(clean, language)
    tokens = [_Token(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(digits)]

    price, currency = _take_price(tokens, language)
    quantity, unit = _take_quantity(tokens)
    intent = _classify(digits, tokens)
    item = _item(tokens, original)
    if intent == "unknown" and item is not None:
        asks_other = bool(tokens) and tokens[0].text in lx.QUESTION_WORDS
        if "?" in digits and not asks_other:
            intent = "search"
        elif quantity is not None or price is not None:
            intent = "offer"
    if intent in ("help", "link", "unknown"):
        item = None
    return Parsed(intent, item, quantity, unit, price, currency, language)


def detect_lang(clean: str, original: str = "") -> str:
    """The language of a cleaned message: most marker words, then telling accents, then en."""
    words = clean.replace("?", " ").split()
    scores = {lang: sum(w in lx.LANG_MARKERS[lang] for w in words) for lang in lx.LANGS}
    lowered = original.casefold()
    if any(c in lowered for c in "ãõç"):
        scores["pt"] += 2
    if any(c in lowered for c in "ñ¿¡"):
        scores["es"] += 2
    best = max(scores.values())
    if best == 0:
        return "en"
    for lang in ("en", "es", "pt"):
        if scores[lang] == best:
            return lang
    return "en"  # pragma: no cover - the loop always returns


# -- cleaning and numbers ---------------------------------------------------------------

def _clean(text: str) -> str:
    for char, repl in _FRACTIONS.items():
        text = text.replace(char, repl)
    folded = lx.fold(unicodedata.normalize("NFKC", text))
    out = []
    for c in folded:
        cat = unicodedata.category(c)
        if c.isalnum() or c in _KEEP_SYMBOLS or c in ".,":
            out.append(c)
        elif c in "!;:":
            out.append(",")
        elif cat.startswith("Z") or c in "\n\t-_/":
            out.append(" ")
        else:
            out.append(" ")  # emoji, ¿¡, quotes, brackets: word boundaries only
    clean = "".join(out)
    # A comma or point is part of a number only between digits ("2,5"); elsewhere it ends
    # a clause. Question marks stand alone so "honey?" is the word "honey" and a "?".
    clean = re.sub(r"(?<!\d)[.,]|[.,](?!\d)", " , ", clean)
    clean = clean.replace("?", " ? ")
    # Digits glued to letters ("5kg", "2€") are two tokens.
    clean = re.sub(r"(\d)([a-z€$£])", r"\1 \2", clean)
    clean = re.sub(r"([a-z€$£])(\d)", r"\1 \2", clean)
    clean = re.sub(r"r \$", "r$", clean)
    return " ".join(clean.split())


_UNIT_ALT = "|".join(sorted((re.escape(a) for a in lx.UNIT_ALIASES), key=len, reverse=True))
_UNIT_ALT_LONG = "|".join(
    sorted((re.escape(a) for a in lx.UNIT_ALIASES if len(a) > 1), key=len, reverse=True)
)
_AND_A_HALF = re.compile(
    rf"\b({_NUM}) (?:{'|'.join(re.escape(p) for p in lx.AND_A_HALF)})\b"
)
_NUM_UNIT_AND_A_HALF = re.compile(
    rf"\b({_NUM}) ({_UNIT_ALT}) (?:{'|'.join(re.escape(p) for p in lx.AND_A_HALF)})\b"
)
_HALF_UNIT = re.compile(
    rf"\b(?:{'|'.join(lx.HALF_WORDS)}) (?:a |an |un |una |um |uma )?({_UNIT_ALT_LONG})\b"
)
_ONE_UNIT = re.compile(rf"(?<![\d.,] )\b(?:{'|'.join(lx.ONE_WORDS)}) ({_UNIT_ALT_LONG})\b")


def _numbers(clean: str, lang: str) -> str:
    """Number words to digits, then halves and "a kilo" (what text2num leaves alone)."""
    try:
        from text_to_num import alpha2digit

        text = alpha2digit(clean, lang, threshold=0)
    except Exception:  # text2num is a parser of free text too: never let it fail a message
        text = clean
    text = lx.fold(text)
    text = _NUM_UNIT_AND_A_HALF.sub(lambda m: f"{_fmt(_to_float(m.group(1)) + 0.5)} "
                                    f"{m.group(2)}", text)
    text = _AND_A_HALF.sub(lambda m: _fmt(_to_float(m.group(1)) + 0.5), text)
    text = _HALF_UNIT.sub(lambda m: f"0.5 {m.group(1)}", text)
    text = _ONE_UNIT.sub(lambda m: f"1 {m.group(1)}", text)
    return text


def _to_float(number: str) -> float:
    """"2,5" and "2.5" -> 2.5; "1.500" and "1,500" -> 1500; "1.234,56" -> 1234.56."""
    if "," in number and "." in number:
        decimal = "," if number.rfind(",") > number.rfind(".") else "."
        group = "." if decimal == "," else ","
        return float(number.replace(group, "").replace(decimal, "."))
    for sep in ",.":
        if sep in number:
            parts = number.split(sep)
            if len(parts) > 2 or (len(parts[1]) == 3 and parts[0] != "0"):
                return float("".join(parts))
            return float(number.replace(sep, "."))
    return float(number)


def _fmt(value: float) -> str:
    return f"{value:g}"


# -- tokens -----------------------------------------------------------------------------

@dataclass(slots=True)
class _Token:
    text: str
    start: int
    end: int
    used: bool = False

    @property
    def is_number(self) -> bool:
        return self.text[0].isdigit()

    @property
    def is_word(self) -> bool:
        return self.text[0].isalpha() and self.text not in lx.CURRENCY_SYMBOLS

    def value(self) -> float | None:
        if not self.is_number:
            return None
        try:
            value = _to_float(self.text)
        except ValueError:
            return None
        return value if value == value and value < 1e12 else None  # no NaN, no absurdities


def _currency(token: _Token, lang: str) -> str | None:
    code = lx.CURRENCY_SYMBOLS.get(token.text) or lx.CURRENCY_WORDS.get(token.text)
    if code == "$":
        return lx.DOLLAR_SIGN[lang]
    return code


def _take_price(tokens: list[_Token], lang: str) -> tuple[float | None, str | None]:
    """A number with a currency sign or word on either side; marks the tokens used."""
    for i, tok in enumerate(tokens):
        code = _currency(tok, lang)
        if code is None:
            continue
        for j in (i + 1, i - 1) if tok.text in lx.CURRENCY_SYMBOLS else (i - 1, i + 1):
            if 0 <= j < len(tokens) and not tokens[j].used and tokens[j].value() is not None:
                tok.used = tokens[j].used = True
                if tok.text == "$" and j + 1 < len(tokens) and tokens[j + 1].text in (
                    "pesos", "peso"
                ):
                    tokens[j + 1].used = True
                    code = "MXN"
                _take_per_unit(tokens, max(i, j) + 1)
                return tokens[j].value(), code
    # No currency: a number followed by "each"/"cada" is still a price ("3.50 each").
    for i, tok in enumerate(tokens[:-1]):
        if not tok.used and tok.value() is not None and tokens[i + 1].text in lx.EACH_WORDS:
            tok.used = tokens[i + 1].used = True
            return tok.value(), None
    return None, None


def _take_per_unit(tokens: list[_Token], k: int) -> None:
    """After a price, "/kg", "per kg", "el kilo", "o quilo", "each" belong to the price."""
    words = [t.text for t in tokens[k : k + 2]]
    if words[:1] in (["each"], ["cada"], ["c"]):
        tokens[k].used = True
    elif len(words) == 2 and words[0] in ("per", "por", "el", "la", "o", "a", "the", "a") and (
        words[1] in lx.UNIT_ALIASES
    ):
        tokens[k].used = tokens[k + 1].used = True


def _take_quantity(tokens: list[_Token]) -> tuple[float | None, str | None]:
    """The first unused number and its unit; a number before an item word counts units."""
    for i, tok in enumerate(tokens):
        if tok.used or tok.value() is None:
            continue
        value = tok.value()
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        tok.used = True
        if nxt is not None and not nxt.used and nxt.text in lx.UNIT_ALIASES:
            nxt.used = True
            return value, lx.UNIT_ALIASES[nxt.text]
        if (
            nxt is not None and nxt.is_word and not nxt.used
            and nxt.text not in lx.FILLER_WORDS and nxt.text not in lx.ITEM_STOP_WORDS
        ):
            return value, "unit"
        return value, None
    return None, None


# -- intent -----------------------------------------------------------------------------

def _phrase_pattern(phrases: tuple[str, ...]) -> re.Pattern[str]:
    alternation = "|".join(
        re.escape(p.strip()) for p in sorted(phrases, key=len, reverse=True)
    )
    return re.compile(rf"(?<![a-z0-9'])(?:{alternation})(?![a-z0-9'])")


_PATTERNS: dict[str, re.Pattern[str]] = {
    name: _phrase_pattern(lx.INTENT_PHRASES[name])
    for name in lx.INTENT_PHRASES
}
_PATTERNS["offer_wish"] = _phrase_pattern(lx.OFFER_WISHES)
_QUESTION_SEARCH = _phrase_pattern(lx.QUESTION_SEARCH)
#: "link" and "help" only at the start of a message, or when it is about that short.
_COMMAND_WORDS = 4


def _classify(text: str, tokens: list[_Token]) -> str:
    for name in lx.INTENT_ORDER:
        match = _PATTERNS[name].search(text)
        if match is None:
            continue
        if name in ("link", "help") and match.start() > 0 and len(tokens) > _COMMAND_WORDS:
            continue
        for each in _PATTERNS[name].finditer(text):
            _use_span(tokens, each.start(), each.end())
        if name == "offer_wish":
            for each in _PATTERNS["offer"].finditer(text):
                _use_span(tokens, each.start(), each.end())
            return "offer"
        return name
    if "?" in text:
        match = _QUESTION_SEARCH.search(text)
        if match is not None:
            _use_span(tokens, match.start(), match.end())
            return "search"
    return "unknown"


def _use_span(tokens: list[_Token], start: int, end: int) -> None:
    for tok in tokens:
        if tok.start >= start and tok.end <= end:
            tok.used = True


# -- item -------------------------------------------------------------------------------

def _item(tokens: list[_Token], original: str) -> str | None:
    """The first run of unused words, without fillers at its edges (see module docstring)."""
    run: list[_Token] = []
    for tok in tokens:
        boundary = tok.used or not tok.is_word or tok.text in lx.ITEM_STOP_WORDS
        if boundary:
            if _strip_edges(run):
                break
            run = []
            continue
        run.append(tok)
    words = _strip_edges(run)
    if not words:
        return None
    folded = " ".join(t.text for t in words)
    return _with_accents(folded, original) or folded


def _strip_edges(run: list[_Token]) -> list[_Token]:
    start, end = 0, len(run)
    while start < end and run[start].text in lx.FILLER_WORDS:
        start += 1
    while end > start and run[end - 1].text in lx.FILLER_WORDS:
        end -= 1
    return run[start:end]


def _with_accents(folded: str, original: str) -> str | None:
    """Find ``folded`` in ``original`` ignoring case and accents; return it as typed."""
    chars: list[str] = []
    index: list[int] = []
    lowered = original.casefold()
    for i, c in enumerate(lowered):
        for f in lx.fold(c):
            chars.append(f if f.isalnum() else " ")
            index.append(i)
    haystack = "".join(chars)
    haystack_norm = re.sub(r" ", " ", haystack)
    pattern = re.compile(r"(?<![a-z0-9])" + r"\W+".join(map(re.escape, folded.split()))
                         + r"(?![a-z0-9])")
    match = pattern.search(haystack_norm)
    if match is None:
        return None
    return lowered[index[match.start()] : index[match.end() - 1] + 1]


def match_key(text: str) -> str:
    """A key for matching items across messages: folded, singular-ish ("Tomates" -> "tomat").

    Used to find "my tomatoes" among listings titled "Tomato" or "tomates": strips accents,
    case and the common plural endings of the three languages. Deliberately crude: a match
    proposes, the person confirms.
    """
    words = []
    for word in re.findall(r"[a-z]+", lx.fold(text)):
        if word in lx.FILLER_WORDS:
            continue
        for suffix in ("oes", "aes", "ies", "es", "ao", "s"):
            if len(word) > len(suffix) + 2 and word.endswith(suffix):
                word = word[: -len(suffix)]
                break
        if len(word) > 3 and word[-1] in "aeo":
            word = word[:-1]
        words.append(word)
    return " ".join(words)
