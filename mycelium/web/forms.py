"""Form input -> typed document fields, with a message per field in the person's language.

The collection schemas (:mod:`mycelium.market.collections`) stay the one source of the
rules: this module only turns the strings a browser sends into typed values (numbers in
the locale's notation, prices into minor units) and asks each field's
:class:`~mycelium.crdt.schema.FieldSpec` what is wrong, translating its answer. The
operation itself (``node.ops``) checks the schema again when it writes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import parse_qsl

from babel.numbers import get_currency_precision, get_decimal_symbol

from mycelium.crdt.schema import Collection, FieldSpec

InputKind = Literal["text", "number", "money", "bool"]
Translate = Callable[..., str]

#: A urlencoded form body larger than this is refused before parsing.
MAX_FORM_BYTES = 64 * 1024
MAX_FORM_FIELDS = 64


@dataclass(frozen=True)
class Input:
    """How one form field maps to a document field."""

    kind: InputKind = "text"
    required: bool = False


@dataclass
class Parsed:
    """Typed ``data`` for the operation, raw ``values`` to refill the form, and ``errors``."""

    values: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


class FormTooLarge(ValueError):
    """A form body over :data:`MAX_FORM_BYTES` or with too many fields."""


def parse_body(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict (last value wins)."""
    if len(body) > MAX_FORM_BYTES:
        raise FormTooLarge(f"form body over {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                          max_num_fields=MAX_FORM_FIELDS, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormTooLarge(str(exc)) from exc
    return dict(pairs)


def parse_fields(form: Mapping[str, str], inputs: Mapping[str, Input], coll: Collection,
                 _: Translate, locale: str, *, currency: str = "EUR") -> Parsed:
    """Read ``inputs`` from ``form`` and check them against ``coll``'s field specs."""
    out = Parsed()
    for name, spec in inputs.items():
        raw = form.get(name, "")
        out.values[name] = raw
        text = raw.strip()
        if spec.kind == "bool":
            out.data[name] = raw in ("on", "true", "1", "yes")
            continue
        if not text:
            if spec.required:
                out.errors[name] = _("Please fill in this field.")
            continue
        value: Any = text
        if spec.kind in ("number", "money"):
            number = _decimal(text, locale)
            if number is None or not number.is_finite() or abs(number) > 10**15:
                out.errors[name] = _("Must be a number.")
                continue
            if spec.kind == "money":
                try:
                    digits = get_currency_precision(currency)
                except (KeyError, ValueError):
                    digits = 2
                value = int((number * (10 ** digits)).to_integral_value())
            elif coll.fields[name].type == "int":
                value = int(number.to_integral_value())
            else:
                value = float(number)
        problem = coll.fields[name].problem(value)
        if problem is not None:
            out.errors[name] = translate_problem(problem, coll.fields[name], _)
            continue
        out.data[name] = value
    return out


def translate_problem(problem: str, spec: FieldSpec, _: Translate) -> str:
    """A schema problem (:meth:`FieldSpec.problem`, English) in the person's language."""
    if problem.startswith("longer than"):
        return _("At most {n} characters.", n=spec.max_chars)
    if problem.startswith("must be one of"):
        return _("Choose one of the options.")
    if problem.startswith("must be >="):
        return _("Must be at least {n}.", n=_plain(spec.minimum))
    if problem.startswith("must be <="):
        return _("Must be at most {n}.", n=_plain(spec.maximum))
    if problem == "must be text":
        return _("Must be text.")
    return _("Must be a number.")


def field_of(message: str) -> str | None:
    """The field named in a schema error raised by an operation (``field 'x': …``)."""
    found = re.match(r"field '([a-z_]+)'", message)
    return found.group(1) if found else None


def _decimal(text: str, locale: str) -> Decimal | None:
    """A number typed the way people type: "2,5" and "2.5" both mean two and a half in any
    language (keyboards and habits differ); "1.234,5" and "1,234.5" use the last mark as
    the decimal one; a single mark followed by exactly three digits ("1.500") follows the
    locale (thousands in es/pt, a decimal point in en)."""
    compact = text.replace(" ", "").replace("\u00a0", "").replace("\u202f", "")
    if not re.fullmatch(r"[+-]?[0-9.,]*[0-9][0-9.,]*", compact):
        return None
    marks = [c for c in compact if c in ".,"]
    if marks:
        last = compact.rfind(marks[-1])
        digits_after = len(compact) - last - 1
        if len(set(marks)) == 2:
            decimal_mark = marks[-1]
        elif len(marks) > 1:
            decimal_mark = None  # "1.000.000": only grouping
        elif digits_after == 3:
            decimal_mark = marks[0] if marks[0] == get_decimal_symbol(locale) else None
        else:
            decimal_mark = marks[0]
        if decimal_mark is None:
            compact = compact.replace(marks[0], "")
        else:
            group = "," if decimal_mark == "." else "."
            compact = compact.replace(group, "").replace(decimal_mark, ".")
    try:
        return Decimal(compact)
    except (InvalidOperation, ValueError):
        return None


def _plain(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else str(value)
