"""The envelope decoder's fast paths accept exactly what the precise path accepts.

Two fast paths are checked everywhere: the Python one (``_decode_fast``) and its compiled
twin (``mycelium._accel``, see docs/accel.md), through the ``fast`` fixture."""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium import accel
from mycelium.codec import cbor
from mycelium.errors import MyceliumError
from mycelium.log import envelope as envelope_mod
from mycelium.log.envelope import Envelope, Kind, seal

SIGNER = Ed25519PrivateKey.from_private_bytes(b"\x09" * 32)


def _data(seq: int = 3) -> Envelope:
    return seal(signer=SIGNER, space=bytes(32), seq=seq, prev=None if seq == 1 else b"\x01" * 32,
                epoch=2, payload=b"hello", group_key=bytes(32), nonce=bytes(24))


def _control() -> Envelope:
    return seal(signer=SIGNER, space=bytes(32), seq=1, prev=None, epoch=0, payload=b"op",
                group_key=None, kind=Kind.CONTROL)


def _compiled(data: bytes) -> Envelope | None:
    assert accel.decode_envelope is not None
    return accel.decode_envelope(data)  # type: ignore[no-any-return]


@pytest.fixture(params=["python", "compiled"])
def fast(request: pytest.FixtureRequest):
    if request.param == "python":
        return envelope_mod._decode_fast
    if not accel.active():
        pytest.skip(f"compiled path off: {accel.disabled_reason}")
    return _compiled


def _same(a: Envelope | None, b: Envelope | str) -> bool:
    """Equal envelopes, down to the memoised id and the very input object as ``raw``."""
    return (isinstance(a, Envelope) and a == b and isinstance(b, Envelope)
            and a.delta_id == b.delta_id and a.raw is not None)


def test_compiled_path_is_built() -> None:
    """setup.sh builds the extension; if it silently fell back to Python, say so here."""
    if accel.disabled_reason == "disabled by MYCELIUM_NO_ACCEL":
        pytest.skip("disabled by MYCELIUM_NO_ACCEL")
    assert accel.active(), accel.disabled_reason


def _precise(data: bytes) -> Envelope | str:
    try:
        return envelope_mod._decode_precise(data)
    except MyceliumError as exc:
        return exc.reason


def test_ordered_maps_encode_canonically() -> None:
    for env in (_data(1), _data(7), _control()):
        assert cbor.encode_ordered(env.header()) == cbor.encode(env.header())
        assert cbor.encode_ordered(env.unsigned_map()) == cbor.encode(env.unsigned_map())
        assert env.raw == cbor.encode({**env.unsigned_map(), "sig": env.sig})


def test_fast_path_takes_valid_envelopes(fast) -> None:
    for env in (_data(1), _data(7), _control()):
        got = fast(env.raw)
        assert got == env == _precise(env.raw)
        assert _same(got, _precise(env.raw)) and got.raw is env.raw


@pytest.mark.parametrize("mutate", [
    lambda m: cbor2.dumps(dict(reversed(list(m.items())))),       # keys out of order
    lambda m: cbor2.dumps({**m, "seq": 2**70}),                    # bignum seq
    lambda m: cbor2.dumps({**m, "v": True}),                       # true is not 1
    lambda m: cbor2.dumps({**m, "epoch": 2.0}),                    # float epoch
    lambda m: cbor2.dumps({**m, "prev": {"b": 1, "a": 2}}),        # nested unsorted map
    # a 32-byte CID under tag 42: libipld would hand back plain 32 bytes
    lambda m: cbor2.dumps({**m, "prev": cbor2.CBORTag(42, b"\x00\x01\x55\x00\x1c" + bytes(28))}),
    lambda m: cbor2.dumps(m) + b"\x00",                            # trailing byte
    lambda m: cbor2.dumps(m)[:-1],                                 # truncated
    lambda m: cbor2.dumps({**m, "extra": 1}, canonical=True),      # unknown field
    # canonical, but breaking a shape rule
    lambda m: cbor2.dumps({**m, "ct": b"x" * 15}, canonical=True),  # shorter than the tag
    lambda m: cbor2.dumps({**m, "nonce": bytes(23)}, canonical=True),
    lambda m: cbor2.dumps({**m, "seq": 1}, canonical=True),          # seq 1 with a prev
    lambda m: cbor2.dumps({**m, "prev": None}, canonical=True),      # seq > 1 without
    lambda m: cbor2.dumps({**m, "prev": bytes(31)}, canonical=True),
    lambda m: cbor2.dumps({**m, "seq": 0}, canonical=True),
    lambda m: cbor2.dumps({**m, "kind": 2}, canonical=True),
    lambda m: cbor2.dumps({**m, "kind": 1}, canonical=True),         # CONTROL with a nonce
    lambda m: cbor2.dumps({**m, "sig": bytes(63)}, canonical=True),
    lambda m: cbor2.dumps({**m, "author": bytes(33)}, canonical=True),
    lambda m: cbor2.dumps({**m, "space": "x" * 32}, canonical=True),
    lambda m: cbor2.dumps({**m, "v": 2}, canonical=True),
])
def test_fast_path_leaves_doubtful_input_to_the_precise_path(fast, mutate) -> None:
    data = mutate(cbor.decode(_data().raw))
    assert fast(data) is None
    with pytest.raises(MyceliumError):
        envelope_mod.decode(data)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([_data(1), _data(5), _control()]), st.data())
def test_fast_and_precise_agree_on_corruptions(env: Envelope, data: st.DataObject) -> None:
    raw = bytearray(env.raw)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):  # and sometimes cut or extend it
        cut = data.draw(st.integers(0, len(raw)))
        raw = raw[:cut] + bytearray(data.draw(st.binary(max_size=3)))
    blob = bytes(raw)
    python = envelope_mod._decode_fast(blob)
    if python is not None:
        assert _same(python, _precise(blob))
    if accel.active():  # the compiled twin takes exactly what the Python fast path takes
        compiled = _compiled(blob)
        assert (compiled is None) == (python is None)
        if compiled is not None:
            assert _same(compiled, _precise(blob))


@settings(max_examples=200, deadline=None)
@given(seq=st.one_of(st.integers(1, 300), st.integers(1, 2**64 - 1)),
       epoch=st.one_of(st.integers(0, 300), st.integers(0, 2**64 - 1)),
       payload=st.one_of(st.binary(max_size=40), st.binary(min_size=230, max_size=300),
                         st.binary(min_size=65_400, max_size=65_600)))
def test_aad_cut_from_raw_bytes_equals_the_encoded_header(seq: int, epoch: int,
                                                          payload: bytes) -> None:
    """Every width of ``ct`` and ``seq`` head, ``prev`` null or not, after a decode."""
    env = seal(signer=SIGNER, space=b"\x05" * 32, seq=seq, prev=None if seq == 1 else b"\x01" * 32,
               epoch=epoch, payload=payload, group_key=bytes(32))
    expected = cbor.encode(env.header())
    assert env.aad() == expected
    if len(env.raw) <= envelope_mod.MAX_ENVELOPE_BYTES:
        assert envelope_mod.decode(env.raw).aad() == expected


def _item(major: int, arg: int, wide: bool) -> bytes:
    """A CBOR head; ``wide`` uses the next larger argument width (never canonical)."""
    widths = [(24, 0), (0x100, 1), (0x10000, 2), (2**32, 4), (2**64, 8)]
    step = next(i for i, (limit, _) in enumerate(widths) if arg < limit) + (1 if wide else 0)
    size = widths[min(step, 4)][1]
    if size == 0:
        return bytes([major << 5 | arg])
    return bytes([major << 5 | {1: 24, 2: 25, 4: 26, 8: 27}[size]]) + arg.to_bytes(size, "big")


def _encode_widening(m: dict, target: str) -> bytes:
    """Encode the (canonically ordered) envelope map by hand, widening one head:
    ``map``, ``key:<name>`` or ``value:<name>``."""
    out = _item(5, len(m), target == "map")
    for key, value in m.items():
        out += _item(3, len(key), target == f"key:{key}") + key.encode()
        wide = target == f"value:{key}"
        if value is None:
            out += b"\xf6"
        elif isinstance(value, bytes):
            out += _item(2, len(value), wide) + value
        else:
            out += _item(0, value, wide)
    return out


_TARGETS = ["map"] + [f"{part}:{k}" for k in envelope_mod._WIRE_ORDER for part in ("key", "value")]


@pytest.mark.parametrize("env", [_data(1), _data(30), _data(70_000), _control()],
                         ids=["seq1", "seq30", "seq70000", "control"])
def test_any_widened_head_is_refused_by_both_paths(fast, env: Envelope) -> None:
    m = cbor.decode(env.raw)
    assert _encode_widening(m, "none") == env.raw  # the hand encoder is the canonical one
    for target in _TARGETS:
        if target.startswith("value:") and m[target[6:]] is None:
            continue
        data = _encode_widening(m, target)
        assert fast(data) is None, target
        with pytest.raises(MyceliumError) as info:
            envelope_mod.decode(data)
        assert info.value.reason == "non_canonical", target


@settings(max_examples=200, deadline=None)
@given(seq=st.integers(1, 2**64 - 1), epoch=st.integers(0, 2**64 - 1),
       payload=st.binary(max_size=300), control=st.booleans())
def test_canonical_size_is_the_encoded_length(seq: int, epoch: int, payload: bytes,
                                              control: bool) -> None:
    env = seal(signer=SIGNER, space=b"\x05" * 32, seq=seq, prev=None if seq == 1 else b"\x01" * 32,
               epoch=epoch, payload=payload, group_key=None if control else bytes(32),
               kind=Kind.CONTROL if control else Kind.DATA)
    assert envelope_mod._canonical_size(env) == len(env.raw)
    assert envelope_mod._decode_fast(env.raw) == env
    if accel.active() and len(env.raw) <= envelope_mod.MAX_ENVELOPE_BYTES:
        assert _same(_compiled(env.raw), env)
