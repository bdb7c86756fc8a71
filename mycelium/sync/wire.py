"""A bounded, canonical-only CBOR reader for sync messages (``protocols/sync.md`` §4.1).

A general CBOR decoder builds whatever the sender encoded before anyone can look at it:
a 1 MiB frame of a million empty arrays cost ~194 ms of CPU and 67 MB to refuse. This
reader knows the shape of every sync message: a map of at most six entries whose keys
come from a fixed set, and for each key the one item type allowed and its bound (a
version vector has at most ``max_vector_entries`` entries, a batch at most
``max_batch_envelopes`` byte strings...). Every count is checked from the item's head
*before* its body is read, and anything outside the shape is refused at the first byte
that shows it. Work per frame is therefore bounded by the largest legal message, not by
what the sender chose to encode.

It also accepts only the deterministic encoding (minimal heads, definite lengths, map
keys in canonical order, no trailing bytes), so a message has exactly one byte form: an
indefinite-length array of the right total length, for example, is ``bad_frame``.

Errors: ``bad_frame`` for malformed or non-canonical CBOR, ``bad_message`` for a
well-formed item of the wrong type or an extra key, ``unknown_message`` for a key no
message has (before a known type tag), and the count reasons of §5
(``too_many_entries``, ``too_many_envelopes``, ``too_many_spaces``, ``oversized_batch``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mycelium.errors import MyceliumError

if TYPE_CHECKING:
    from mycelium.sync.messages import MessageLimits

#: Entries of the largest message map (``hello``).
MAX_MAP_ENTRIES = 6
MAX_TAG_BYTES = 16
MAX_REASON_BYTES = 256  # 64 characters of up to 4 UTF-8 bytes
MAX_SALT_BYTES = 64
AUTHOR_BYTES = 32
KNOWN_TAGS = frozenset({"hello", "vv", "env", "live", "ack", "done", "want", "bye", "err",
                        "have", "prune", "heads"})

_UINT, _BYTES, _TEXT, _ARRAY, _MAP = 0, 2, 3, 4, 5


class WireError(MyceliumError):
    """A frame that is not a sync message; ``reason`` as in ``protocols/sync.md`` §6."""

    reason = "bad_frame"


def _fail(what: str, reason: str = "bad_frame") -> WireError:
    return WireError(what, reason=reason)


def _head(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(major type, argument, position after the head); minimal heads only."""
    try:
        ib = buf[pos]
    except IndexError:
        raise _fail("frame ends inside an item") from None
    major, ai = ib >> 5, ib & 31
    pos += 1
    if ai < 24:
        return major, ai, pos
    if ai > 27:
        raise _fail("indefinite length or reserved CBOR head")
    width = 1 << (ai - 24)
    end = pos + width
    if end > len(buf):
        raise _fail("frame ends inside a head")
    arg = int.from_bytes(buf[pos:end], "big")
    if arg < (24 if width == 1 else 1 << (4 * width)):
        raise _fail("CBOR head is not minimal (not the deterministic encoding)")
    return major, arg, end


def _expect(buf: bytes, pos: int, major: int, what: str) -> tuple[int, int]:
    got, arg, pos = _head(buf, pos)
    if got != major:
        raise _fail(f"{what} has the wrong CBOR type", "bad_message")
    return arg, pos


def _string(buf: bytes, pos: int, major: int, bound: int, what: str) -> tuple[bytes, int]:
    n, pos = _expect(buf, pos, major, what)
    if n > bound:
        raise _fail(f"{what} of {n} bytes is too long", "bad_message")
    end = pos + n
    if end > len(buf):
        raise _fail("frame ends inside a string")
    return buf[pos:end], end


def _text(buf: bytes, pos: int, bound: int, what: str) -> tuple[str, int]:
    raw, pos = _string(buf, pos, _TEXT, bound, what)
    try:
        return raw.decode("utf-8"), pos
    except UnicodeDecodeError:
        raise _fail(f"{what} is not UTF-8") from None


def _uint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    return _expect(buf, pos, _UINT, what)


def _bytes_head(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    """(length, position after the head) of a byte string item at ``pos``, through the
    general :func:`_head` (its precise errors); :func:`_byte_array` reads legal heads
    inline and comes here for the rest."""
    major, n, pos = _head(buf, pos)
    if major != _BYTES:
        raise _fail(f"{what}: items must be byte strings", "bad_message")
    return n, pos


def _byte_array(buf: bytes, pos: int, bound: int, too_many: str, item_bound: int,
                total_bound: int | None, what: str) -> tuple[list[bytes], int]:
    n, pos = _expect(buf, pos, _ARRAY, what)
    if n > bound:
        raise _fail(f"{what}: {n} items exceed {bound}", too_many)
    out: list[bytes] = []
    append = out.append
    total = 0
    end_buf = len(buf)
    limit = total_bound if total_bound is not None else end_buf
    for _ in range(n):
        # The bulk path (one iteration per envelope of a batch): minimal byte string
        # heads of lengths 0-23, 24-255 and 256-65535 read inline; others (4- and
        # 8-byte lengths, errors) through _bytes_head.
        ib = buf[pos] if pos < end_buf else -1
        if ib == 0x59 and pos + 3 <= end_buf and buf[pos + 1]:
            k, pos = (buf[pos + 1] << 8) | buf[pos + 2], pos + 3
        elif 0x40 <= ib <= 0x57:
            k, pos = ib - 0x40, pos + 1
        elif ib == 0x58 and pos + 2 <= end_buf and buf[pos + 1] >= 24:
            k, pos = buf[pos + 1], pos + 2
        else:
            k, pos = _bytes_head(buf, pos, what)
        if k > item_bound:
            raise _fail(f"{what}: item of {k} bytes is too long", "bad_message")
        end = pos + k
        if end > end_buf:
            raise _fail("frame ends inside a string")
        total += k
        if total > limit:  # only a batch has a total bound below the frame's length
            raise _fail(f"{what}: more than {total_bound} bytes", "oversized_batch")
        append(buf[pos:end])
        pos = end
    return out, pos


#: The head of every version vector key: a byte string of 32 bytes.
_AUTHOR_HEAD = bytes([0x58, AUTHOR_BYTES])


def _vector(buf: bytes, pos: int, limits: MessageLimits) -> tuple[dict[bytes, int], int]:
    n, pos = _expect(buf, pos, _MAP, "version vector")
    if n > limits.max_vector_entries:
        raise _fail(f"version vector of {n} entries exceeds {limits.max_vector_entries}",
                    "too_many_entries")
    out: dict[bytes, int] = {}
    prev = b""
    end_buf = len(buf)
    for _ in range(n):
        if buf[pos:pos + 2] == _AUTHOR_HEAD and pos + 34 <= end_buf:  # the only legal key
            author, pos = buf[pos + 2:pos + 34], pos + 34
        else:
            author, pos = _string(buf, pos, _BYTES, AUTHOR_BYTES, "version vector key")
            if len(author) != AUTHOR_BYTES:
                raise _fail("version vector key must be a 32-byte author key", "bad_message")
        if author <= prev:
            raise _fail("version vector keys out of canonical order")
        prev = author
        ib = buf[pos] if pos < end_buf else -1  # minimal uint heads up to 4 bytes inline
        if 0 <= ib < 24:
            out[author], pos = ib, pos + 1
        elif ib == 0x19 and pos + 3 <= end_buf and buf[pos + 1]:
            out[author], pos = (buf[pos + 1] << 8) | buf[pos + 2], pos + 3
        elif ib == 0x1A and pos + 5 <= end_buf and (buf[pos + 1] or buf[pos + 2]):
            out[author], pos = int.from_bytes(buf[pos + 1:pos + 5], "big"), pos + 5
        elif ib == 0x18 and pos + 2 <= end_buf and buf[pos + 1] >= 24:
            out[author], pos = buf[pos + 1], pos + 2
        else:
            out[author], pos = _uint(buf, pos, "version vector seq")
    return out, pos


def _text_item(text: str) -> bytes:
    """The deterministic encoding of a short text (under 24 bytes)."""
    raw = text.encode()
    return bytes([0x60 + len(raw)]) + raw


#: Encoded message key -> key, for the keys of this version (read without decoding).
_KEYS = {_text_item(k): k for k in ("s", "v", "n", "b", "t", "vv", "e", "offers", "salt",
                                    "caps", "credit", "r", "h")}
#: Encoded type tag -> tag (ASCII: one byte per character).
_TAGS = {_text_item(t): t for t in KNOWN_TAGS}


def _canonical_key_order(a: bytes, b: bytes) -> bool:
    """``a`` sorts strictly before ``b`` (length first, then bytewise: RFC 7049 §3.9)."""
    return (len(a), a) < (len(b), b)


def read_message_map(payload: bytes, limits: MessageLimits) -> dict[str, Any]:
    """The message map of ``payload``, read within the bounds of ``limits``.

    Values have the types :mod:`mycelium.sync.messages` expects; the per-type checks
    (which keys a type needs, value ranges) stay there.
    """
    if len(payload) > limits.max_frame:
        raise _fail(f"frame of {len(payload)} bytes exceeds {limits.max_frame}",
                    "oversized_frame")
    buf = payload
    major, n, pos = _head(buf, 0)
    if major != _MAP:
        raise _fail("message is not a CBOR map", "bad_message")
    if n > MAX_MAP_ENTRIES:
        raise _fail(f"message map of {n} entries", "bad_message")
    out: dict[str, Any] = {}
    prev = b""
    for _ in range(n):
        key_start = pos
        ib = buf[pos] if pos < len(buf) else -1
        raw_key = buf[pos:pos + 1 + (ib - 0x60)] if 0x61 <= ib <= 0x66 else b""
        key = _KEYS.get(raw_key)  # the keys of this version, without decoding
        if key is not None:
            pos += len(raw_key)
        else:
            key, pos = _text(buf, pos, 8, "message key")
            raw_key = buf[key_start:pos]
        if prev and not _canonical_key_order(prev, raw_key):
            raise _fail("message keys out of canonical order")
        prev = raw_key
        value: Any
        if key in ("s", "v", "n", "b"):
            ib = buf[pos] if pos < len(buf) else -1
            if 0 <= ib < 24:
                value, pos = ib, pos + 1
            else:
                value, pos = _uint(buf, pos, key)
        elif key == "t":
            ib = buf[pos] if pos < len(buf) else -1
            tag = _TAGS.get(buf[pos:pos + 1 + (ib - 0x60)]) if 0x61 <= ib <= 0x70 else None
            if tag is not None:
                value, pos = tag, pos + 1 + len(tag)
            else:
                value, pos = _text(buf, pos, MAX_TAG_BYTES, "message type")
        elif key == "vv":
            value, pos = _vector(buf, pos, limits)
        elif key == "e":
            value, pos = _byte_array(buf, pos, limits.max_batch_envelopes, "too_many_envelopes",
                                     limits.max_batch_bytes, limits.max_batch_bytes, "batch")
        elif key == "offers":
            value, pos = _byte_array(buf, pos, limits.max_spaces, "too_many_spaces", 64, None,
                                     "offers")
        elif key == "salt":
            value, pos = _string(buf, pos, _BYTES, MAX_SALT_BYTES, "salt")
        elif key == "caps":
            count, pos = _expect(buf, pos, _ARRAY, "caps")
            if count > 16:
                raise _fail("too many caps", "bad_message")
            value = []
            for _ in range(count):
                cap, pos = _text(buf, pos, 32, "cap")
                value.append(cap)
        elif key == "credit":
            count, pos = _expect(buf, pos, _ARRAY, "credit")
            if count != 2:
                raise _fail("credit must be [envelopes, bytes]", "bad_message")
            credit_n, pos = _uint(buf, pos, "credit")
            credit_b, pos = _uint(buf, pos, "credit")
            value = [credit_n, credit_b]
        elif key == "r":
            value, pos = _text(buf, pos, MAX_REASON_BYTES, "error reason")
        elif key == "h":  # HEADS: 8 bytes per vector entry (messages.HEAD_PREFIX_BYTES)
            value, pos = _string(buf, pos, _BYTES, 8 * limits.max_vector_entries, "heads")
        else:
            # A key no message of this version has: an extra field of a message we
            # know, or else a message we do not know.
            known = out.get("t") in KNOWN_TAGS
            raise _fail(f"unknown message key {key!r}",
                        "bad_message" if known else "unknown_message")
        out[key] = value
    if pos != len(buf):
        raise _fail(f"{len(buf) - pos} bytes after the message")
    return out
