"""The archive format: build an archive from envelopes, open one back (protocols/archive.md).

Pure functions over bytes (no store, no network), so a relay, the CLI and the tests share
one implementation. An archive is a set of DAG-CBOR blocks:

* the **manifest** (root): ``{"chunks": [link…], "keys": [slot…], "type":
  "mycelium-archive", "v": 1}`` — no space id, name, member or size field;
* **chunks**: byte strings ``nonce(24) || XChaCha20-Poly1305(archive key, nonce,
  piece, aad = CHUNK_DOMAIN || u32 index || u32 count)``, every piece exactly
  :data:`CHUNK_PLAINTEXT` bytes, so a chunk block is just under 256 KiB.

The pieces, concatenated, are the **stream**: items ``u32 length || bytes``; item 0 is the
signed header, then every envelope exactly as stored, then a zero length, then zero
padding. The header ``{v, genesis, space, created_ms, count, digest, signer, sig}``
names the space (inside the encryption), and its Ed25519 signature covers the sha256
``digest`` of the envelope items, so the whole content is signed by the archive's writer
whose key is hidden from non-readers too.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mycelium.archive import cid as cids
from mycelium.archive import dagcbor, keyslots
from mycelium.archive.car import write_car
from mycelium.archive.errors import BadArchive, BadSignature, MissingBlock
from mycelium.codec import cbor
from mycelium.crypto import aead
from mycelium.errors import CodecError
from mycelium.log.envelope import MAX_ENVELOPE_BYTES
from mycelium.spaces.keys import KeyHolder

VERSION = 1
TYPE = "mycelium-archive"
SIGN_DOMAIN = b"mycelium-archive-v1"
CHUNK_DOMAIN = b"mycelium-archive-chunk-v1"
#: IPFS's customary block size; every chunk block stays below it.
BLOCK_LIMIT = 256 * 1024
#: 256 KiB minus the chunk block's overhead (5-byte CBOR head, nonce, tag) rounded down.
CHUNK_PLAINTEXT = BLOCK_LIMIT - 64
#: 4096 chunks = 1 GiB of stream: the largest archive read or written.
MAX_CHUNKS = 4096
MAX_HEADER_BYTES = 4096
MAX_MANIFEST_BYTES = 64 + MAX_CHUNKS * 40 + keyslots.MAX_SLOTS * (keyslots.SLOT_BYTES + 3)
HEADER_FIELDS = frozenset({"v", "genesis", "space", "created_ms", "count", "digest", "signer",
                           "sig"})
_U32 = struct.Struct(">I")


@dataclass(frozen=True)
class Archive:
    """A built archive: its root CID and blocks (manifest first), ready for a CAR."""

    root: bytes
    blocks: list[tuple[bytes, bytes]]

    @property
    def cid(self) -> str:
        return cids.to_text(self.root)

    def car(self) -> bytes:
        return write_car(self.root, self.blocks)

    @property
    def stored_bytes(self) -> int:
        return sum(len(data) for _, data in self.blocks)


@dataclass(frozen=True)
class Contents:
    """An opened, verified archive: the space's genesis and its envelopes in stream order."""

    genesis: bytes
    space_id: bytes
    created_ms: int
    signer: bytes
    envelopes: list[bytes]


def build(genesis: bytes, envelopes: Sequence[bytes], *, signer: KeyHolder,
          members: Sequence[bytes] = (), wrap_key: bytes | None = None, created_ms: int,
          rand: keyslots.Random = os.urandom) -> Archive:
    """Encrypt ``envelopes`` (with the space's ``genesis``) for ``members`` and/or the
    personal ``wrap_key``; the header is signed by ``signer``. ``rand`` is injectable for
    test vectors."""
    digest = hashlib.sha256()
    items = []
    for env in envelopes:
        if not 0 < len(env) <= MAX_ENVELOPE_BYTES:
            raise BadArchive(f"envelope of {len(env)} bytes cannot be archived")
        item = _U32.pack(len(env)) + env
        digest.update(item)
        items.append(item)
    digest.update(_U32.pack(0))
    body = {"v": VERSION, "genesis": genesis, "space": hashlib.sha256(genesis).digest(),
            "created_ms": created_ms, "count": len(envelopes), "digest": digest.digest(),
            "signer": signer.public_key}
    header = cbor.encode({**body, "sig": signer.signing_key.sign(SIGN_DOMAIN + cbor.encode(body))})
    stream = b"".join([_U32.pack(len(header)), header, *items, _U32.pack(0)])
    count = -(-len(stream) // CHUNK_PLAINTEXT)
    if count > MAX_CHUNKS:
        raise BadArchive(f"space too large for one archive ({count} chunks > {MAX_CHUNKS})")
    stream += bytes(count * CHUNK_PLAINTEXT - len(stream))
    key = rand(aead.KEY_BYTES)
    blocks = []
    for index in range(count):
        nonce = rand(aead.NONCE_BYTES)
        piece = stream[index * CHUNK_PLAINTEXT:(index + 1) * CHUNK_PLAINTEXT]
        block = dagcbor.encode(nonce + aead.encrypt(key, nonce, piece, chunk_aad(index, count)))
        blocks.append((cids.cid_of(block), block))
    manifest = dagcbor.encode({
        "type": TYPE, "v": VERSION,
        "keys": keyslots.make_slots(key, members=members, wrap_key=wrap_key, rand=rand),
        "chunks": [dagcbor.Link(c) for c, _ in blocks],
    })
    root = cids.cid_of(manifest)
    return Archive(root=root, blocks=[(root, manifest), *blocks])


def chunk_aad(index: int, count: int) -> bytes:
    """Binds a chunk to its position and to the chunk count (no reordering, no truncation)."""
    return CHUNK_DOMAIN + _U32.pack(index) + _U32.pack(count)


def parse_manifest(block: bytes) -> tuple[list[bytes], list[bytes]]:
    """``(key slots, chunk CIDs)`` of a manifest block; :class:`BadArchive` if malformed."""
    if len(block) > MAX_MANIFEST_BYTES:
        raise BadArchive("manifest too large")
    m = dagcbor.decode(block)
    if not isinstance(m, dict) or set(m) != {"type", "v", "keys", "chunks"}:
        raise BadArchive("manifest must be a map {chunks, keys, type, v}")
    if m["type"] != TYPE or m["v"] != VERSION:
        raise BadArchive(f"not a {TYPE} v{VERSION} manifest")
    keys, chunks = m["keys"], m["chunks"]
    if (not isinstance(keys, list) or not 0 < len(keys) <= keyslots.MAX_SLOTS
            or not all(isinstance(k, bytes) and len(k) == keyslots.SLOT_BYTES for k in keys)):
        raise BadArchive(f"manifest keys must be 1..{keyslots.MAX_SLOTS} slots of "
                         f"{keyslots.SLOT_BYTES} bytes")
    if (not isinstance(chunks, list) or not 0 < len(chunks) <= MAX_CHUNKS
            or not all(isinstance(c, dagcbor.Link) for c in chunks)):
        raise BadArchive(f"manifest chunks must be 1..{MAX_CHUNKS} links")
    return keys, [c.cid for c in chunks]


def verify_blocks(root: bytes, blocks: Mapping[bytes, bytes]) -> tuple[list[bytes], list[bytes]]:
    """Check the manifest and every chunk block against their CIDs (before anything is
    decrypted or stored); returns ``(key slots, chunk CIDs)``."""
    if root not in blocks:
        raise MissingBlock(f"manifest block {cids.to_text(root)} missing")
    cids.verify_block(root, blocks[root])
    slots, chunk_cids = parse_manifest(blocks[root])
    for chunk in chunk_cids:
        if chunk not in blocks:
            raise MissingBlock(f"chunk block {cids.to_text(chunk)} missing")
        cids.verify_block(chunk, blocks[chunk])
    return slots, chunk_cids


def open_archive(root: bytes, blocks: Mapping[bytes, bytes], identity: KeyHolder) -> Contents:
    """Verify every block, open the key slot, decrypt, check header, signature and genesis.

    Raises :class:`TamperedBlock`, :class:`MissingBlock`, :class:`NotARecipient`,
    :class:`BadArchive` or :class:`BadSignature`; returns only fully verified contents.
    """
    slots, chunk_cids = verify_blocks(root, blocks)
    key = keyslots.open_slots(slots, identity)
    count = len(chunk_cids)
    pieces = []
    for index, chunk in enumerate(chunk_cids):
        sealed = dagcbor.decode(blocks[chunk])
        if not isinstance(sealed, bytes) or len(sealed) < aead.NONCE_BYTES + aead.TAG_BYTES:
            raise BadArchive(f"chunk {cids.to_text(chunk)} is not a sealed byte string")
        try:
            pieces.append(aead.decrypt(key, sealed[:aead.NONCE_BYTES], sealed[aead.NONCE_BYTES:],
                                       chunk_aad(index, count)))
        except aead.DecryptError as exc:
            raise BadArchive(f"chunk {index} ({cids.to_text(chunk)}) does not decrypt") from exc
    return parse_stream(b"".join(pieces))


def parse_stream(stream: bytes) -> Contents:
    """Split the decrypted stream into header and envelopes and verify the header."""
    view = memoryview(stream)
    header_raw, pos = _item(view, 0, MAX_HEADER_BYTES)
    header = _header(bytes(header_raw))
    first = pos
    envelopes: list[bytes] = []
    append, unpack, end = envelopes.append, _U32.unpack_from, len(stream) - 4
    while True:  # _item inlined: this loop runs once per envelope
        if pos > end:
            raise BadArchive("stream ends inside an item length")
        (size,) = unpack(stream, pos)
        pos += 4
        if not size:
            break
        if size > MAX_ENVELOPE_BYTES or pos + size > len(stream):
            raise BadArchive(f"stream item of {size} bytes at {pos - 4} is too long")
        append(stream[pos:pos + size])
        pos += size
    if any(view[pos:]):
        raise BadArchive("stream padding is not zero")
    digest = hashlib.sha256(view[first:pos]).digest()  # the items and the terminator
    if len(envelopes) != header["count"] or digest != header["digest"]:
        raise BadSignature("archive content does not match its signed header")
    return Contents(genesis=header["genesis"], space_id=header["space"],
                    created_ms=header["created_ms"], signer=header["signer"],
                    envelopes=envelopes)


def _item(view: memoryview, pos: int, limit: int) -> tuple[memoryview, int]:
    if pos + 4 > len(view):
        raise BadArchive("stream ends inside an item length")
    (size,) = _U32.unpack(view[pos:pos + 4])
    if size > limit or pos + 4 + size > len(view):
        raise BadArchive(f"stream item of {size} bytes at {pos} is too long")
    return view[pos + 4:pos + 4 + size], pos + 4 + size


def _header(raw: bytes) -> dict[str, Any]:
    try:
        header = cbor.decode_canonical(raw, max_bytes=MAX_HEADER_BYTES)
    except CodecError as exc:
        raise BadArchive(f"archive header is not canonical CBOR: {exc}") from exc
    if not isinstance(header, dict) or set(header) != HEADER_FIELDS:
        raise BadArchive(f"archive header must have exactly the fields {sorted(HEADER_FIELDS)}")
    sig = header.pop("sig")
    types = {"v": int, "genesis": bytes, "space": bytes, "created_ms": int, "count": int,
             "digest": bytes, "signer": bytes}
    for name, kind in types.items():
        if not isinstance(header[name], kind) or isinstance(header[name], bool):
            raise BadArchive(f"archive header field {name} must be {kind.__name__}")
    if header["v"] != VERSION:
        raise BadArchive(f"archive header version must be {VERSION}")
    if hashlib.sha256(header["genesis"]).digest() != header["space"]:
        raise BadArchive("archive genesis does not hash to its space id")
    if not isinstance(sig, bytes) or len(sig) != 64 or len(header["signer"]) != 32:
        raise BadSignature("archive header signature or signer malformed")
    try:
        Ed25519PublicKey.from_public_bytes(header["signer"]).verify(
            sig, SIGN_DOMAIN + cbor.encode(header))
    except (InvalidSignature, ValueError) as exc:
        raise BadSignature("archive header signature does not verify") from exc
    return header
