"""Deterministic CBOR (RFC 8949 §4.2.1 core deterministic encoding, via cbor2 canonical).

One way to turn values into bytes for everything that is hashed or signed: maps with
sorted keys, shortest integer/length encodings, no indefinite lengths, no floats unless
the schema asks for them. :func:`decode_canonical` additionally re-encodes and compares,
so a peer cannot send two byte strings that mean the same value (malleability).
"""

from __future__ import annotations

from typing import Any

import cbor2

from mycelium.errors import CodecError, LimitExceeded

#: Default upper bound for a single decoded CBOR item (bytes).
DEFAULT_MAX_BYTES = 1 << 20


def encode(value: Any) -> bytes:
    """Encode ``value`` as deterministic CBOR."""
    try:
        return cbor2.dumps(value, canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise CodecError(f"cannot encode value as CBOR: {exc}") from exc


def decode(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Decode one CBOR item, rejecting oversized input and trailing bytes.

    Raises :class:`LimitExceeded` when ``len(data) > max_bytes`` and :class:`CodecError`
    for anything that is not exactly one well-formed CBOR item.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise LimitExceeded(f"CBOR item of {len(data)} bytes exceeds limit {max_bytes}")
    try:
        value, used = _loads_with_length(bytes(data))
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise CodecError(f"malformed CBOR: {exc}") from exc
    if used != len(data):
        raise CodecError(f"trailing bytes after CBOR item ({len(data) - used} extra)")
    return value


def decode_canonical(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Decode and insist that ``data`` is the deterministic encoding of its value."""
    value = decode(data, max_bytes=max_bytes)
    if encode(value) != bytes(data):
        raise CodecError(
            "CBOR is well-formed but not in deterministic encoding", reason="non_canonical"
        )
    return value


def _loads_with_length(data: bytes) -> tuple[Any, int]:
    import io

    fp = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(fp)
    value = decoder.decode()
    return value, fp.tell()
