"""Deterministic CBOR (RFC 8949 §4.2.1 core deterministic encoding, via cbor2 canonical).

One way to turn values into bytes for everything that is hashed or signed: maps with
sorted keys, shortest integer/length encodings, no indefinite lengths, no floats unless
the schema asks for them. :func:`decode_canonical` additionally re-encodes and compares,
so a peer cannot send two byte strings that mean the same value (malleability).

Hot paths (every received delta) decode with libipld, a compiled DAG-CBOR decoder, 3x
faster than cbor2 (docs/decisions.md). DAG-CBOR is this same deterministic encoding
restricted to text map keys, no tags but 42, no undefined and 64-bit floats; libipld
decodes that subset (leniently about integer sizes) to the values cbor2 gives, except tag
42 (a CID object). :func:`decode_fast` hands any input that contains the bytes of tag 42,
and anything libipld refuses, to cbor2: its results equal cbor2's for every input, only
faster. libipld is not used to encode anything that leaves the node: its encoder turns
byte strings that happen to parse as a CID into tag 42. It does encode the node's own
stored document states (:func:`encode_stored`), which hold no byte strings.
"""

from __future__ import annotations

import io
import re
from typing import Any

import cbor2
import libipld

from mycelium.errors import CodecError, LimitExceeded

#: Default upper bound for a single decoded CBOR item (bytes).
DEFAULT_MAX_BYTES = 1 << 20
_BYTES_LIKE = (bytes, bytearray, memoryview)
_DECODE_ERRORS = (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError)
_FAST_ERRORS = (ValueError, TypeError, OverflowError, RecursionError)
#: Tag 42 in any header width (libipld takes non-shortest ones too). A match inside a byte
#: string is a false alarm that only costs the slower decoder.
_TAG_42 = re.compile(rb"\xd8\x2a|\xd9\x00\x2a|\xda\x00{3}\x2a|\xdb\x00{7}\x2a")


def encode(value: Any) -> bytes:
    """Encode ``value`` as deterministic CBOR."""
    try:
        return cbor2.dumps(value, canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise CodecError(f"cannot encode value as CBOR: {exc}") from exc


def encode_ordered(value: dict[str, Any]) -> bytes:
    """:func:`encode` for a map whose keys are already in deterministic order and whose
    values are flat (bytes, text, ints, null): cbor2 then emits the deterministic
    encoding without sorting, several times faster. For hot paths with fixed key sets
    (envelope AAD and signing input); a test checks each caller against :func:`encode`."""
    try:
        return cbor2.dumps(value)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise CodecError(f"cannot encode value as CBOR: {exc}") from exc


#: libipld writes -0.0 as this (+0.0): any output containing these bytes is written by
#: cbor2 instead, which keeps the sign (a false alarm only costs the slower encoder).
_FLOAT_ZERO = b"\xfb" + bytes(8)


def encode_stored(value: Any) -> bytes:
    """Encode state the node keeps for itself (never sent, signed or hashed): DAG-CBOR via
    libipld, ~6x faster than cbor2, for values of text, numbers, booleans, null, lists
    and text-keyed maps. What DAG-CBOR cannot carry (integers beyond 64 bits, NaN, -0.0) is
    written by cbor2 instead; :func:`decode_stored` reads both.

    Callers store no byte strings this way: libipld's encoder may write one as a CID
    (tag 42), which only libipld decodes back to the same bytes."""
    try:
        out = libipld.encode_dag_cbor(value)
        if _FLOAT_ZERO not in out:
            return out
    except _FAST_ERRORS:
        pass
    try:
        return cbor2.dumps(value)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise CodecError(f"cannot encode value as CBOR: {exc}") from exc


def decode_stored(data: bytes) -> Any:
    """Inverse of :func:`encode_stored`; also reads rows written by plain ``cbor2.dumps``
    (map keys in any order). Raises :class:`CodecError`."""
    try:
        return libipld.decode_dag_cbor(data)
    except _FAST_ERRORS:
        pass
    try:
        return cbor2.loads(data)
    except _DECODE_ERRORS as exc:
        raise CodecError(f"malformed CBOR: {exc}") from exc


def loads_or_none(data: bytes) -> Any:
    """The value of ``data`` if it is one well-formed DAG-CBOR item (no trailing bytes),
    else None. Unlike cbor2, it gives tag 42 (a CID) as the bare CID bytes, so only use it
    where the caller re-encodes the value with cbor2 and compares with ``data`` (which no
    tagged input can pass), falling back to a precise decode (the envelope decoder)."""
    try:
        return libipld.decode_dag_cbor(data)
    except _FAST_ERRORS:
        return None


def decode_fast(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Exactly :func:`decode` (same values, same errors), faster on the common input."""
    data = _checked_bytes(data, max_bytes)
    # Every tag-42 head has a byte 0x2a. (An int operand: ``bytes in bytes`` first tries
    # the operand as an int and builds a TypeError, which costs more than the search.)
    if 0x2A not in data or _TAG_42.search(data) is None:
        try:
            return libipld.decode_dag_cbor(data)
        except _FAST_ERRORS:
            pass
    return decode(data, max_bytes=max_bytes)


def decode(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Decode one CBOR item, rejecting oversized input and trailing bytes.

    Raises :class:`LimitExceeded` when ``len(data) > max_bytes`` and :class:`CodecError`
    for anything that is not exactly one well-formed CBOR item.
    """
    data = _checked_bytes(data, max_bytes)
    fp = io.BytesIO(data)
    try:
        value = cbor2.load(fp)
    except _DECODE_ERRORS as exc:
        raise CodecError(f"malformed CBOR: {exc}") from exc
    used = fp.tell()
    if used != len(data):
        raise CodecError(f"trailing bytes after CBOR item ({len(data) - used} extra)")
    return value


def decode_canonical(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Decode and insist that ``data`` is the deterministic encoding of its value.

    ``loads`` ignores trailing bytes, but the re-encoding must equal ``data`` exactly, so
    trailing bytes cannot pass; they are told apart from other non-canonical input only
    to give the precise reason.
    """
    data = _checked_bytes(data, max_bytes)
    try:
        value = cbor2.loads(data)
        again = cbor2.dumps(value, canonical=True)
    except _DECODE_ERRORS as exc:
        raise CodecError(f"malformed CBOR: {exc}") from exc
    except cbor2.CBOREncodeError as exc:  # decodes to something with no canonical form
        raise CodecError(f"CBOR has no deterministic encoding: {exc}",
                         reason="non_canonical") from exc
    if again != data:
        if data.startswith(again):
            raise CodecError(f"trailing bytes after CBOR item ({len(data) - len(again)} extra)")
        raise CodecError(
            "CBOR is well-formed but not in deterministic encoding", reason="non_canonical"
        )
    return value


def _checked_bytes(data: object, max_bytes: int) -> bytes:
    if not isinstance(data, _BYTES_LIKE):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise LimitExceeded(f"CBOR item of {len(data)} bytes exceeds limit {max_bytes}")
    return data if type(data) is bytes else bytes(data)
