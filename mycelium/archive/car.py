"""CARv1 (content-addressable archive) reading and writing (protocols/archive.md §3).

Layout: ``varint(len(header)) header`` then for each block ``varint(len(cid) + len(data))
cid data``; the header is DAG-CBOR ``{"roots": [link], "version": 1}``. This is what
``dag/import`` takes and ``dag/export`` gives back. Reading only splits the bytes; every
block is checked against its CID by the caller.
"""

from __future__ import annotations

from collections.abc import Iterable

from mycelium.archive import dagcbor
from mycelium.archive.errors import BadArchive
from mycelium.codec.frames import encode_uvarint

#: A varint longer than this cannot describe a section we would accept.
MAX_VARINT_BYTES = 9


#: Unsigned LEB128, as multiformats uses it (the same as our frames' length prefix).
encode_varint = encode_uvarint


def decode_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """``(value, next position)``; raises :class:`BadArchive` on truncation or overlong."""
    value = shift = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise BadArchive("CAR truncated inside a varint")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if i and byte == 0:
                raise BadArchive("CAR varint is not minimally encoded")
            return value, pos + i + 1
        shift += 7
    raise BadArchive("CAR varint too long")


def write_car(root: bytes, blocks: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A CARv1 with one root and the given ``(cid, data)`` blocks, in that order."""
    header = dagcbor.encode({"roots": [dagcbor.Link(root)], "version": 1})
    parts = [encode_varint(len(header)), header]
    for cid, data in blocks:
        parts += [encode_varint(len(cid) + len(data)), cid, data]
    return b"".join(parts)


def read_car(data: bytes, *, max_blocks: int) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    """``(roots, [(cid, data), ...])`` of a CARv1; at most ``max_blocks`` blocks."""
    view = memoryview(data)
    size, pos = decode_varint(view, 0)
    header = dagcbor.decode(bytes(view[pos:pos + size]))
    pos += size
    if (not isinstance(header, dict) or header.get("version") != 1
            or not isinstance(header.get("roots"), list)
            or not all(isinstance(r, dagcbor.Link) for r in header["roots"])):
        raise BadArchive("CAR header must be {roots: [links], version: 1}")
    blocks: list[tuple[bytes, bytes]] = []
    while pos < len(view):
        if len(blocks) >= max_blocks:
            raise BadArchive(f"CAR holds more than {max_blocks} blocks")
        size, pos = decode_varint(view, pos)
        end = pos + size
        if end > len(view):
            raise BadArchive("CAR truncated inside a block")
        cid_end = _cid_end(view, pos, end)
        blocks.append((bytes(view[pos:cid_end]), bytes(view[cid_end:end])))
        pos = end
    return [r.cid for r in header["roots"]], blocks


def _cid_end(view: memoryview, pos: int, end: int) -> int:
    """Where the CIDv1 at ``pos`` ends: version, codec, hash code, digest length, digest."""
    if view[pos] != 1:
        raise BadArchive("CAR block without a CIDv1")
    cursor = pos + 1
    for _ in range(3):  # codec, multihash code, digest length
        value, cursor = decode_varint(view, cursor)
    cursor += value
    if cursor > end:
        raise BadArchive("CAR block's CID runs past its section")
    return cursor
