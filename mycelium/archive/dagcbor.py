"""DAG-CBOR encoding with cbor2 (protocols/archive.md §2).

Why not libipld: its encoder turns any byte string that parses as a CID into a tag-42
link (NOTES.md), and archives are full of random-looking bytes. cbor2's canonical mode is
the deterministic encoding DAG-CBOR asks for (shortest heads, definite lengths, map keys
sorted by length then bytes — identical to bytewise order of the encoded text keys); links
are written explicitly as tag 42 around ``0x00`` + the binary CID. A test compares these
bytes with libipld's independent encoder.

Decoding accepts only what this module would write: text map keys, no tags but 42, no
floats, and the bytes must re-encode identically (so a block has one meaning).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

from mycelium.archive import cid as cids
from mycelium.archive.errors import BadArchive

LINK_TAG = 42


@dataclass(frozen=True, slots=True)
class Link:
    """An IPLD link to a block (its binary CID)."""

    cid: bytes


def encode(value: Any) -> bytes:
    """Deterministic DAG-CBOR bytes of ``value`` (dicts with str keys, lists, bytes, str,
    ints, bools, None and :class:`Link`)."""
    return cbor2.dumps(_tagged(value), canonical=True)


def decode(data: bytes) -> Any:
    """Inverse of :func:`encode`; raises :class:`BadArchive` for anything else."""
    try:
        value = cbor2.loads(data, tag_hook=_tag_hook)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        cause = exc.__cause__ or exc.__context__  # cbor2 wraps what the tag hook raised
        if isinstance(cause, BadArchive):
            raise cause from None
        raise BadArchive(f"block is not DAG-CBOR: {exc}") from exc
    _check_types(value)
    if encode(value) != data:
        raise BadArchive("block is not in deterministic DAG-CBOR form")
    return value


def _tagged(value: Any) -> Any:
    if isinstance(value, Link):
        return cbor2.CBORTag(LINK_TAG, b"\x00" + value.cid)
    if isinstance(value, dict):
        return {k: _tagged(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tagged(v) for v in value]
    return value


def _tag_hook(tag: cbor2.CBORTag, immutable: bool) -> Link:  # cbor2 6 hook signature
    if tag.tag != LINK_TAG:
        raise BadArchive(f"CBOR tag {tag.tag} is not allowed in DAG-CBOR (only 42)")
    raw = tag.value
    if not isinstance(raw, bytes) or not raw.startswith(b"\x00"):
        raise BadArchive("a tag-42 link must be a byte string starting with 0x00")
    cids.check(raw[1:])
    return Link(raw[1:])


def _check_types(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise BadArchive("DAG-CBOR map keys must be text")
            _check_types(item)
    elif isinstance(value, list):
        for item in value:
            _check_types(item)
    elif not (value is None or isinstance(value, (bool, int, bytes, str, Link))):
        raise BadArchive(f"{type(value).__name__} values are not used in archives")
