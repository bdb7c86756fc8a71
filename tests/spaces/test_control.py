from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.codec import cbor
from mycelium.spaces import control
from mycelium.spaces.control import (
    AddMember,
    EpochOp,
    GrantOp,
    RemoveMember,
    SetRole,
    decode_op,
)
from mycelium.spaces.errors import BadControlOp

PUB = bytes(range(32))
BOX = b"\x01" * 133


def test_builders_roundtrip() -> None:
    assert decode_op(control.op_epoch(lc=1, keys={PUB: BOX})) == EpochOp(1, {PUB: BOX})
    assert decode_op(control.op_grant(lc=2, epoch=7, keys={PUB: BOX})) == GrantOp(2, 7, {PUB: BOX})
    assert decode_op(control.op_add_member(lc=3, member=PUB)) == AddMember(3, PUB, "member")
    head = b"\x09" * 32
    assert decode_op(control.op_remove_member(lc=4, member=PUB, keep=9, head=head)) == \
        RemoveMember(4, PUB, 9, head)
    assert decode_op(control.op_remove_member(lc=4, member=PUB)) == RemoveMember(4, PUB, 0)
    role = control.op_set_role(lc=5, member=PUB, role="admin")
    assert decode_op(role) == SetRole(5, PUB, "admin")


@pytest.mark.parametrize("m, match", [
    ({"op": "nuke", "lc": 1}, "unknown"),
    ({"op": "remove", "lc": 0, "member": PUB, "keep": 0}, "lc"),
    ({"op": "remove", "lc": True, "member": PUB, "keep": 0}, "lc"),
    ({"op": "remove", "lc": 1, "member": PUB[:31], "keep": 0}, "member"),
    ({"op": "remove", "lc": 1, "member": PUB, "keep": -1}, "keep"),
    ({"op": "remove", "lc": 1, "member": PUB}, "fields"),
    ({"op": "add", "lc": 1, "member": PUB, "role": "owner"}, "role"),
    ({"op": "epoch", "lc": 1, "keys": {}}, "keys"),
    ({"op": "epoch", "lc": 1, "keys": {PUB: b""}}, "boxes"),
    ({"op": "grant", "lc": 1, "epoch": 0, "keys": {PUB: BOX}}, "epoch"),
    ({"op": "grant", "lc": 1, "epoch": 2**64, "keys": {PUB: BOX}}, "epoch"),
])
def test_malformed_ops_refused(m: dict[str, object], match: str) -> None:
    with pytest.raises(BadControlOp, match=match):
        decode_op(cbor.encode(m))


def test_too_many_keys_refused() -> None:
    keys = {i.to_bytes(32, "big"): BOX for i in range(control.MAX_KEYS_PER_OP + 1)}
    with pytest.raises(BadControlOp):
        control.op_epoch(lc=1, keys=keys)


def test_full_epoch_op_fits_in_an_envelope() -> None:
    from mycelium.log.envelope import MAX_ENVELOPE_BYTES
    keys = {i.to_bytes(32, "big"): b"\xff" * control.MAX_BOX_BYTES
            for i in range(control.MAX_KEYS_PER_OP)}
    assert len(control.op_epoch(lc=2**63 - 1, keys=keys)) + 300 < MAX_ENVELOPE_BYTES


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.dictionaries(
    st.sampled_from(["op", "lc", "member", "role", "keys", "epoch"]),
    st.one_of(st.integers(-2, 2**64), st.binary(max_size=40), st.text(max_size=8),
              st.dictionaries(st.binary(max_size=33), st.binary(max_size=5), max_size=3)),
).map(cbor.encode)))
def test_random_input_only_raises_bad_control_op(data: bytes) -> None:
    with contextlib.suppress(BadControlOp):
        decode_op(data)
