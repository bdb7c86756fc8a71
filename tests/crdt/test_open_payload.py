"""The compiled ``open_payload`` equals ``decode_payload(envelope.open(key))`` or defers.

Contract (docs/accel.md): it returns the very values the Python path builds — same types
all the way down — or None, and then the Python path decides. None must stay rare: for
the payloads real writers produce (scalar values, canonical CBOR) it must answer.
"""

from __future__ import annotations

import math
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium import accel
from mycelium.crdt import payload as payloads
from mycelium.crdt.hlc import Timestamp
from mycelium.errors import MyceliumError
from mycelium.log.envelope import Envelope, seal
from mycelium.log.limits import MAX_OPS_PER_DELTA

pytestmark = pytest.mark.skipif(not accel.active(), reason=f"compiled path off: "
                                f"{accel.disabled_reason}")

SIGNER = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
KEY = b"\x42" * 32


def _sealed(plaintext: bytes, seq: int = 2) -> Envelope:
    return seal(signer=SIGNER, space=b"\x03" * 32, seq=seq, prev=None if seq == 1 else bytes(32),
                epoch=7, payload=plaintext, group_key=KEY)


def _python(env: Envelope, key: bytes = KEY) -> Any:
    try:
        return payloads.decode_payload(env.open(key))
    except MyceliumError as exc:
        return exc.reason


def _shape(value: Any) -> Any:
    """Value with its exact types (1, 1.0 and True are equal in Python; NaN is not)."""
    if isinstance(value, tuple | list):
        return (type(value), tuple(_shape(v) for v in value))
    if isinstance(value, float) and math.isnan(value):
        return (float, "nan")
    return (type(value), value)


def _check(env: Envelope, *, must_answer: bool = False) -> None:
    compiled = accel.open_payload(env.raw, KEY)  # type: ignore[misc]
    python = _python(env)
    if compiled is None:
        assert not (must_answer and isinstance(python, payloads.Payload)), python
        return
    assert isinstance(python, payloads.Payload), f"compiled accepted what Python refuses: {python}"
    assert _shape(compiled) == _shape(python)
    assert type(compiled.hlc) is Timestamp
    assert all(type(op) is payloads.Op for op in compiled.ops)


scalars = st.one_of(
    st.integers(-(2**63), 2**64 - 1), st.booleans(), st.none(), st.text(max_size=40),
    st.binary(max_size=20), st.floats(width=16), st.floats(width=32), st.floats(),
    st.sampled_from([0.0, -0.0, 1.5, 2.5, 65504.0, 5.960464477539063e-08, math.inf, -math.inf]))
names = st.one_of(st.sampled_from(["title", "quantity", "status", "price", "x"]),
                  st.text(min_size=0, max_size=70))
ops = st.lists(st.one_of(
    st.fixed_dictionaries({"field": names, "value": scalars}),
    st.fixed_dictionaries({"field": names, "del": st.just(True)})), min_size=0, max_size=6)


@st.composite
def payload_maps(draw: st.DrawFn) -> dict[str, Any]:
    hlc = [draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 2**33)),
           draw(st.binary(max_size=34))]
    m = {"coll": draw(st.one_of(st.just("products"), st.text(max_size=70))),
         "doc": draw(st.one_of(st.just("p1"), st.text(max_size=140))),
         "ops": draw(st.one_of(ops, st.just([{"del": True}]))), "hlc": hlc}
    return m


@settings(max_examples=400, deadline=None)
@given(payload_maps(), st.booleans())
def test_compiled_equals_python_on_generated_payloads(m: dict[str, Any], canonical: bool) -> None:
    _check(_sealed(cbor2.dumps(m, canonical=canonical)))


@settings(max_examples=300, deadline=None)
@given(payload_maps(), st.data())
def test_compiled_never_accepts_what_python_refuses_on_corruptions(m: dict[str, Any],
                                                                   data: st.DataObject) -> None:
    plain = bytearray(cbor2.dumps(m, canonical=True))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(plain) - 1))
        plain[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        plain = plain[:data.draw(st.integers(0, len(plain)))]
    _check(_sealed(bytes(plain)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["title", "quantity", "status", "location", "price"]),
                          st.one_of(st.text(max_size=30), st.integers(0, 10**6),
                                    st.floats(0, 1e6, allow_nan=False), st.booleans(),
                                    st.none())),
                min_size=1, max_size=5, unique_by=lambda t: t[0]),
       st.integers(0, 2**62), st.integers(0, 2**32 - 1))
def test_compiled_answers_for_what_writers_produce(fields: list[tuple[str, Any]], wall: int,
                                                   counter: int) -> None:
    body = payloads.set_fields("products", "doc-1", dict(fields), Timestamp(wall, counter, b"n"))
    _check(_sealed(body.encode()), must_answer=True)
    delete = payloads.delete_doc("products", "doc-1", Timestamp(wall, counter, b"n"))
    _check(_sealed(delete.encode()), must_answer=True)


def _one_field(**extra: Any) -> dict[str, Any]:
    return {"coll": "products", "doc": "p", "hlc": [1, 0, b"n"],
            "ops": [{"field": "title", "value": "x"}], **extra}


@pytest.mark.parametrize("m", [
    _one_field(ops=[]),                                               # no ops
    _one_field(ops=[{"field": "a", "value": 1}] * 2),                 # a field twice
    _one_field(ops=[{"del": True}, {"field": "a", "value": 1}]),      # doc delete not alone
    _one_field(ops=[{"field": "a", "del": False}]),                   # del must be true
    _one_field(ops=[{"field": "", "value": 1}]),                      # empty field name
    _one_field(ops=[{"field": "a" * 65, "value": 1}]),                # field name too long
    _one_field(ops=[{"field": "a", "value": 1}] * (MAX_OPS_PER_DELTA + 1)),
    _one_field(coll="bad\nname"), _one_field(doc=""), _one_field(doc="d" * 129),
    _one_field(hlc=[1, 0]), _one_field(hlc=[2**63, 0, b"n"]), _one_field(hlc=[1, 2**32, b"n"]),
    _one_field(hlc=[1, 0, bytes(33)]), _one_field(hlc=[True, 0, b"n"]),
    _one_field(extra=1), {"coll": "products"},
])
def test_malformed_payloads_go_to_the_python_path(m: dict[str, Any]) -> None:
    env = _sealed(cbor2.dumps(m, canonical=True))
    assert accel.open_payload(env.raw, KEY) is None  # type: ignore[misc]
    assert not isinstance(_python(env), payloads.Payload)


def test_wrong_key_or_control_or_junk_defers() -> None:
    env = _sealed(cbor2.dumps(_one_field(), canonical=True))
    assert accel.open_payload(env.raw, KEY) is not None  # type: ignore[misc]
    assert accel.open_payload(env.raw, b"\x43" * 32) is None  # type: ignore[misc]
    assert accel.open_payload(env.raw, KEY[:31]) is None  # type: ignore[misc]
    assert accel.open_payload(env.raw[:-1], KEY) is None  # type: ignore[misc]
    first = _sealed(cbor2.dumps(_one_field(), canonical=True), seq=1)  # prev null: other AAD
    assert accel.open_payload(first.raw, KEY) == _python(first)  # type: ignore[misc]


def test_values_and_stamps_keep_their_types() -> None:
    m = _one_field(ops=[{"field": "a", "value": 1.0}, {"field": "b", "value": True},
                        {"field": "c", "value": -(2**63)}, {"field": "d", "value": 2**64 - 1},
                        {"field": "e", "value": None}, {"field": "f", "del": True}])
    env = _sealed(cbor2.dumps(m, canonical=True))
    _check(env, must_answer=True)
    # a big negative int (beyond int64) and an array value are left to Python
    for value in (-(2**63) - 1, [1, 2], {"k": 1}):
        _check(_sealed(cbor2.dumps(_one_field(ops=[{"field": "a", "value": value}]))))


def _python_checked(env: Envelope, now: int, kind: str) -> Any:
    """What Soil's _open_data does: decode, schema check, drift rule."""
    from mycelium.crdt.hlc import HLC
    from mycelium.market.collections import REGISTRY

    try:
        p = payloads.decode_payload(env.open(KEY))
        REGISTRY.check(p, kind)  # type: ignore[arg-type]
        HLC(b"me").check(p.hlc, now)
        return p
    except MyceliumError as exc:
        return exc.reason


product_values = st.one_of(st.text(max_size=210), st.integers(-3, 10**13), st.booleans(),
                           st.floats(-1, 2e9), st.sampled_from(["available", "sold", "lost"]),
                           st.none(), st.just(float("nan")), st.just(float("inf")))
product_fields = st.sampled_from(["title", "quantity", "status", "price", "unit", "currency",
                                  "created_ms", "nope"])


@settings(max_examples=500, deadline=None)
@given(coll=st.sampled_from(["products", "diary", "health", "unknown"]),
       fields=st.dictionaries(product_fields, product_values, min_size=1, max_size=4),
       wall=st.integers(0, 10**6), kind=st.sampled_from(["community", "personal"]))
def test_schema_and_drift_checks_equal_the_python_ones(coll: str, fields: dict[str, Any],
                                                       wall: int, kind: str) -> None:
    from mycelium.log.limits import MAX_CLOCK_DRIFT_MS
    from mycelium.market.collections import REGISTRY

    body = cbor2.dumps({"coll": coll, "doc": "d", "hlc": [wall, 0, b"n"],
                        "ops": [{"field": k, "del": True} if v is None else
                                {"field": k, "value": v} for k, v in sorted(fields.items())]},
                       canonical=True)
    env = _sealed(body)
    now = 500_000 - MAX_CLOCK_DRIFT_MS  # walls beyond 500_000 are too far ahead
    compiled = accel.open_payload(env.raw, KEY, REGISTRY.compiled(kind),  # type: ignore[misc]
                                  now + MAX_CLOCK_DRIFT_MS)
    python = _python_checked(env, now, kind)
    if compiled is None:
        # deferring is only allowed where the Python path refuses (or sees a float NaN)
        assert not isinstance(python, payloads.Payload), python
        return
    assert isinstance(python, payloads.Payload), python
    assert _shape(compiled) == _shape(python)
