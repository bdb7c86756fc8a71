"""The envelope decoder's fast path accepts exactly what the precise path accepts."""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_fast_path_takes_valid_envelopes() -> None:
    for env in (_data(1), _data(7), _control()):
        fast = envelope_mod._decode_fast(env.raw)
        assert fast == env == _precise(env.raw)


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
])
def test_fast_path_leaves_doubtful_input_to_the_precise_path(mutate) -> None:
    data = mutate(cbor.decode(_data().raw))
    assert envelope_mod._decode_fast(data) is None
    with pytest.raises(MyceliumError):
        envelope_mod.decode(data)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([_data(1), _data(5), _control()]), st.data())
def test_fast_and_precise_agree_on_corruptions(env: Envelope, data: st.DataObject) -> None:
    raw = bytearray(env.raw)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    blob = bytes(raw)
    fast = envelope_mod._decode_fast(blob)
    if fast is not None:
        assert fast == _precise(blob)


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
