"""Control operations: the membership and key-epoch log of a space (protocols/spaces.md §3).

A control op is the plaintext ``ct`` of a CONTROL envelope (:mod:`mycelium.log.envelope`),
so it is signed and hash-chained by its author like any delta, but readable by relays.
This module only builds and decodes single ops; :mod:`mycelium.spaces.state` resolves a
set of them into members and epochs.

Every op carries ``lc``, a Lamport counter: one more than the highest ``lc`` its author
had seen in the space. Ops are totally ordered by ``(lc, author, seq)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mycelium.codec import cbor
from mycelium.errors import CodecError
from mycelium.spaces.errors import BadControlOp
from mycelium.spaces.keys import seal_group_key

Role = Literal["admin", "member"]
ROLES: tuple[Role, ...] = ("admin", "member")

#: Most key boxes in one epoch/grant op (keeps a CONTROL envelope well under 64 KiB).
MAX_KEYS_PER_OP = 200
#: Largest accepted sealed key box (85-byte plaintext + sealed-box overhead, with slack).
MAX_BOX_BYTES = 256
MAX_OP_BYTES = 60 * 1024
MAX_LC = 2**63 - 1


@dataclass(frozen=True, slots=True)
class EpochOp:
    """Start a new key epoch; ``keys`` maps member pub -> sealed group key."""

    lc: int
    keys: Mapping[bytes, bytes]


@dataclass(frozen=True, slots=True)
class GrantOp:
    """Deliver the key of an existing ``epoch`` to more members."""

    lc: int
    epoch: int
    keys: Mapping[bytes, bytes]


@dataclass(frozen=True, slots=True)
class AddMember:
    lc: int
    member: bytes
    role: Role


@dataclass(frozen=True, slots=True)
class RemoveMember:
    """Remove ``member``; its envelopes with ``seq <= keep`` stay valid (spaces.md §4.3)
    on the one chain whose envelope ``keep`` has the id ``head`` (None iff ``keep == 0``):
    the removed member cannot sign a second chain for those seqs."""

    lc: int
    member: bytes
    keep: int = 0
    head: bytes | None = None


@dataclass(frozen=True, slots=True)
class Revoke:
    """Stop delegated writers (protocols/delegation.md §4a): ``pins`` maps each delegate
    to ``(keep, head)`` like a removal's: its chain up to ``keep``, ending at ``head``
    (None iff ``keep == 0``), stays valid everywhere, nothing after it does."""

    lc: int
    pins: Mapping[bytes, tuple[int, bytes | None]]


@dataclass(frozen=True, slots=True)
class SetRole:
    lc: int
    member: bytes
    role: Role


ControlOp = EpochOp | GrantOp | AddMember | RemoveMember | Revoke | SetRole


# -- builders --------------------------------------------------------------------------
def seal_keys(space_id: bytes, group_key: bytes, recipients: Iterable[bytes]) -> dict[bytes, bytes]:
    """Seal one group key to each recipient (Ed25519 public keys)."""
    return {pub: seal_group_key(pub, space_id, group_key) for pub in sorted(set(recipients))}


def op_epoch(*, lc: int, keys: Mapping[bytes, bytes]) -> bytes:
    return _encode({"op": "epoch", "lc": lc, "keys": dict(keys)})


def op_grant(*, lc: int, epoch: int, keys: Mapping[bytes, bytes]) -> bytes:
    return _encode({"op": "grant", "lc": lc, "epoch": epoch, "keys": dict(keys)})


def op_add_member(*, lc: int, member: bytes, role: Role = "member") -> bytes:
    return _encode({"op": "add", "lc": lc, "member": member, "role": role})


def op_remove_member(*, lc: int, member: bytes, keep: int = 0,
                     head: bytes | None = None) -> bytes:
    """``keep``: the removed member's highest seq the remover holds (its writes until then);
    ``head``: the delta id of that envelope (required iff ``keep > 0``, spaces.md §3)."""
    m: dict[str, Any] = {"op": "remove", "lc": lc, "member": member, "keep": keep}
    if head is not None:
        m["head"] = head
    return _encode(m)


def op_revoke(*, lc: int, pins: Mapping[bytes, tuple[int, bytes | None]]) -> bytes:
    """Revoke 1..:data:`MAX_KEYS_PER_OP` delegates, each pinned at ``(keep, head)``: the
    highest seq of its chain the revoker holds and that envelope's delta id."""
    return _encode({"op": "revoke", "lc": lc,
                    "pins": {pub: [keep, head] for pub, (keep, head) in pins.items()}})


def op_set_role(*, lc: int, member: bytes, role: Role) -> bytes:
    return _encode({"op": "role", "lc": lc, "member": member, "role": role})


def _encode(m: dict[str, Any]) -> bytes:
    """Encode and round-trip through :func:`decode_op`, so builders never emit bad ops."""
    data = cbor.encode(m)
    decode_op(data)
    return data


# -- decoding --------------------------------------------------------------------------
_FIELDS: dict[str, frozenset[str]] = {
    "epoch": frozenset({"op", "lc", "keys"}),
    "grant": frozenset({"op", "lc", "epoch", "keys"}),
    "add": frozenset({"op", "lc", "member", "role"}),
    "remove": frozenset({"op", "lc", "member", "keep"}),
    "remove+head": frozenset({"op", "lc", "member", "keep", "head"}),
    "role": frozenset({"op", "lc", "member", "role"}),
    "revoke": frozenset({"op", "lc", "pins"}),
}

_OPS = frozenset({"epoch", "grant", "add", "remove", "role", "revoke"})


def decode_op(payload: bytes) -> ControlOp:
    """Parse a CONTROL payload; raises :class:`BadControlOp` for anything malformed."""
    try:
        m = cbor.decode_canonical(payload, max_bytes=MAX_OP_BYTES)
    except CodecError as exc:
        raise BadControlOp(f"control op is not canonical CBOR: {exc}") from exc
    if not isinstance(m, dict):
        raise BadControlOp("control op must be a CBOR map")
    name = m.get("op")
    if not isinstance(name, str) or name not in _OPS:
        raise BadControlOp(f"unknown control op {name!r}")
    if name == "remove" and "head" in m:
        name = "remove+head"
    if set(m) != _FIELDS[name]:
        fields = sorted(_FIELDS[name])
        raise BadControlOp(f"control op {name!r} must have exactly the fields {fields}")
    lc = m["lc"]
    _need(_is_uint(lc) and 1 <= lc <= MAX_LC, "lc must be an integer in 1..2^63-1")
    if name == "epoch":
        return EpochOp(lc=lc, keys=_keys(m["keys"]))
    if name == "grant":
        _need(_is_uint(m["epoch"]) and 0 < m["epoch"] < 2**64, "epoch must be a uint64 > 0")
        return GrantOp(lc=lc, epoch=m["epoch"], keys=_keys(m["keys"]))
    if name == "revoke":
        return Revoke(lc=lc, pins=_pins(m["pins"]))
    member = _pub(m["member"])
    if name.startswith("remove"):
        keep = m["keep"]
        _need(_is_uint(keep) and keep < 2**64, "keep must be a uint64")
        head = m.get("head")
        _need((head is None) == (keep == 0), "head must be present iff keep > 0")
        _need(head is None or (isinstance(head, bytes) and len(head) == 32),
              "head must be a 32-byte delta id")
        return RemoveMember(lc=lc, member=member, keep=keep, head=head)
    role = m["role"]
    _need(role in ROLES, f"role must be one of {ROLES}")
    if name == "add":
        return AddMember(lc=lc, member=member, role=role)
    return SetRole(lc=lc, member=member, role=role)


def _keys(value: object) -> dict[bytes, bytes]:
    _need(isinstance(value, dict) and 1 <= len(value) <= MAX_KEYS_PER_OP,
          f"keys must be a map of 1..{MAX_KEYS_PER_OP} entries")
    assert isinstance(value, dict)
    for pub, box in value.items():
        _pub(pub)
        _need(isinstance(box, bytes) and 0 < len(box) <= MAX_BOX_BYTES,
              f"key boxes must be 1..{MAX_BOX_BYTES} bytes")
    return dict(value)


def _pins(value: object) -> dict[bytes, tuple[int, bytes | None]]:
    _need(isinstance(value, dict) and 1 <= len(value) <= MAX_KEYS_PER_OP,
          f"pins must be a map of 1..{MAX_KEYS_PER_OP} entries")
    assert isinstance(value, dict)
    out: dict[bytes, tuple[int, bytes | None]] = {}
    for pub, pin in value.items():
        _need(isinstance(pin, list) and len(pin) == 2, "a pin is [keep, head]")
        keep, head = pin
        _need(_is_uint(keep) and keep < 2**64, "keep must be a uint64")
        _need((head is None) == (keep == 0), "head must be present iff keep > 0")
        _need(head is None or (isinstance(head, bytes) and len(head) == 32),
              "head must be a 32-byte delta id")
        out[_pub(pub)] = (keep, head)
    return out


def _pub(value: object) -> bytes:
    _need(isinstance(value, bytes) and len(value) == 32, "member must be a 32-byte Ed25519 key")
    assert isinstance(value, bytes)
    return value


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise BadControlOp(f"control op: {what}")


def _is_uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
