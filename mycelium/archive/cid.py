"""CIDv1 of DAG-CBOR blocks hashed with sha2-256, the only CIDs an archive uses
(protocols/archive.md §2).

Binary form: ``0x01`` (CIDv1) ``0x71`` (dag-cbor) ``0x12 0x20`` (sha2-256, 32 bytes) + the
digest. Text form: multibase base32 lower case without padding (``b`` + …), which is what
Kubo and js-ipfs print (``bafyrei…``). Checking a block is recomputing its digest here:
IPFS nodes may hand back bytes that do not match (js-ipfs imports such blocks).
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from mycelium.archive.errors import BadCid, TamperedBlock

PREFIX = bytes([0x01, 0x71, 0x12, 0x20])
CID_BYTES = len(PREFIX) + 32
#: Longest CID text we parse (a 36-byte CID is 59 characters in base32).
MAX_TEXT = 128


def cid_of(block: bytes) -> bytes:
    """The binary CID of a DAG-CBOR block."""
    return PREFIX + hashlib.sha256(block).digest()


def to_text(cid: bytes) -> str:
    """``bafyrei…`` for a binary CID."""
    check(cid)
    return "b" + base64.b32encode(cid).decode().lower().rstrip("=")


def from_text(text: str) -> bytes:
    """Parse a ``bafyrei…`` CID; raises :class:`BadCid` naming what is wrong."""
    text = text.strip()
    if not 1 < len(text) <= MAX_TEXT or text[0] != "b":
        raise BadCid(f"not a base32 CIDv1 (bafyrei…): {text[:MAX_TEXT]!r}")
    body = text[1:].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError) as exc:
        raise BadCid(f"CID {text!r} is not valid base32") from exc
    check(raw)
    return raw


def check(cid: bytes) -> None:
    """Raise :class:`BadCid` unless ``cid`` is a CIDv1 dag-cbor sha2-256 in binary form."""
    if len(cid) != CID_BYTES or not cid.startswith(PREFIX):
        raise BadCid("archive CIDs must be CIDv1, dag-cbor, sha2-256 (bafyrei…)")


def verify_block(cid: bytes, block: bytes) -> None:
    """Raise :class:`TamperedBlock` (naming the CID) unless ``block`` hashes to ``cid``."""
    check(cid)
    if hashlib.sha256(block).digest() != cid[len(PREFIX):]:
        raise TamperedBlock(f"block {to_text(cid)} does not match its CID (tampered or corrupt)")
