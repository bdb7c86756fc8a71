"""Invite codes: a space's genesis and control log as one copy-pasteable token (spaces.md §6).

``code = "z" + base58btc(canonical CBOR {"v": 1, "genesis": bstr, "envelopes": [bstr…]})``
(multibase base58btc, no characters that chat apps mangle). The code carries no secret
beyond what the control log already holds: group keys inside it are sealed to members.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from multiformats import multibase

from mycelium.codec import cbor
from mycelium.errors import CodecError
from mycelium.spaces.errors import BadInvite, InviteTooLarge

VERSION = 1
#: Upper bound on the CBOR inside a code (~65k characters of base58).
MAX_INVITE_BYTES = 48 * 1024
MAX_CODE_CHARS = 70_000
FIELDS = frozenset({"v", "genesis", "envelopes"})


@dataclass(frozen=True, slots=True)
class Invite:
    genesis: bytes
    envelopes: tuple[bytes, ...]


def encode_invite(genesis: bytes, envelopes: Sequence[bytes]) -> str:
    """Pack a genesis and envelopes; raises :class:`InviteTooLarge` past the limit."""
    data = cbor.encode({"v": VERSION, "genesis": genesis, "envelopes": list(envelopes)})
    if len(data) > MAX_INVITE_BYTES:
        raise InviteTooLarge(
            f"control log of {len(data)} bytes does not fit in an invite code ({MAX_INVITE_BYTES})")
    return str(multibase.encode(data, "base58btc"))


def decode_invite(code: str) -> Invite:
    """Unpack a code; raises :class:`BadInvite` (never anything else) on malformed input."""
    code = code.strip()
    if not code.startswith("z") or len(code) > MAX_CODE_CHARS:
        raise BadInvite("invite code must be a base58btc multibase string starting with 'z'")
    try:
        data = multibase.decode(code)
    except (ValueError, KeyError) as exc:
        raise BadInvite(f"invite code is not valid base58btc: {exc}") from exc
    try:
        m = cbor.decode_canonical(bytes(data), max_bytes=MAX_INVITE_BYTES)
    except CodecError as exc:
        raise BadInvite(f"invite code content is not canonical CBOR: {exc}") from exc
    if not isinstance(m, dict) or set(m) != FIELDS or m["v"] != VERSION:
        raise BadInvite(f"invite must be a version {VERSION} map with fields {sorted(FIELDS)}")
    genesis, envelopes = m["genesis"], m["envelopes"]
    if not isinstance(genesis, bytes) or not isinstance(envelopes, list):
        raise BadInvite("invite genesis must be bytes and envelopes a list")
    if not all(isinstance(e, bytes) for e in envelopes):
        raise BadInvite("invite envelopes must be envelope bytes")
    return Invite(genesis=genesis, envelopes=tuple(envelopes))
