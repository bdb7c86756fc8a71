"""Regenerate protocols/vectors/archive.json: ``python -m tests.archive.vectors_gen``.

Randomness comes from :func:`vector_rand` (spec §8), so everything but the sealed box
(libsodium draws its own ephemeral key) is reproducible by another implementation.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mycelium.archive import cid as cids
from mycelium.archive import dagcbor, keyslots
from mycelium.archive import format as fmt
from mycelium.codec import cbor
from mycelium.identity.identity import Identity
from mycelium.spaces.genesis import make_genesis

PATH = Path(__file__).resolve().parents[2] / "protocols" / "vectors" / "archive.json"
OWNER_SEED = bytes([0x44]) * 32
MEMBER_SEED = bytes([0x22]) * 32
ARCHIVE_KEY = bytes([0x5A]) * 32
ENVELOPES = [b"first envelope bytes, exactly as stored", bytes(range(256)) * 3]


def vector_rand(seed: bytes) -> Callable[[int], bytes]:
    """rand(n) = SHAKE-256(seed || u32be(counter)) first n bytes; counter 0, 1, 2, …"""
    counter = 0

    def rand(n: int) -> bytes:
        nonlocal counter
        out = hashlib.shake_256(seed + struct.pack(">I", counter)).digest(n)
        counter += 1
        return out

    return rand


def personal_archive() -> tuple[dict[str, Any], fmt.Archive]:
    owner = Identity.from_seed(OWNER_SEED)
    genesis = make_genesis(owner, "personal", "personal", 0, salt=b"")
    rand_seed = b"mycelium archive vector"
    archive = fmt.build(genesis, ENVELOPES, signer=owner,
                        wrap_key=keyslots.personal_wrap_key(owner), created_ms=1_765_000_000_000,
                        rand=vector_rand(rand_seed))
    manifest = archive.blocks[0][1]
    decoded = dagcbor.decode(manifest)
    return {
        "signer_seed_hex": OWNER_SEED.hex(), "rand_seed_hex": rand_seed.hex(),
        "created_ms": 1_765_000_000_000, "genesis_hex": genesis.hex(),
        "envelopes_hex": [e.hex() for e in ENVELOPES],
        "root": archive.cid, "manifest_hex": manifest.hex(),
        "chunks": [cids.to_text(c.cid) for c in decoded["chunks"]],
        "chunk_block_sha256_hex": [hashlib.sha256(b).hexdigest() for _, b in archive.blocks[1:]],
    }, archive


def generate() -> dict[str, Any]:
    owner, member = Identity.from_seed(OWNER_SEED), Identity.from_seed(MEMBER_SEED)
    personal_slot = keyslots.make_slots(ARCHIVE_KEY, wrap_key=keyslots.personal_wrap_key(owner),
                                        rand=vector_rand(b"slots"))
    sealed_slot = keyslots.make_slots(ARCHIVE_KEY, members=[member.public_key],
                                      rand=vector_rand(b"slots"))
    archive, built = personal_archive()
    header = fmt.parse_stream(_stream(built, owner))
    return {
        "description": "IPFS archives (protocols/archive.md). rand(n) for reproducible "
                       "vectors = SHAKE-256(rand_seed || u32be(counter)), first n bytes, "
                       "counter 0,1,2,... per call (§8). Checked by tests/archive/test_vectors.py.",
        "personal_wrap_key": [
            {"seed_hex": s.hex(), "label": keyslots.PERSONAL_KEY_LABEL.decode(),
             "key_hex": keyslots.personal_wrap_key(Identity.from_seed(s)).hex()}
            for s in (bytes(32), OWNER_SEED)],
        "key_slots": {
            "archive_key_hex": ARCHIVE_KEY.hex(),
            "personal": {"seed_hex": OWNER_SEED.hex(), "rand_seed_hex": b"slots".hex(),
                         "slots_hex": [s.hex() for s in personal_slot]},
            "sealed": {"reader_seed_hex": MEMBER_SEED.hex(),
                       "slots_hex": [s.hex() for s in sealed_slot]},
        },
        "chunk_aad": [{"index": i, "count": n, "aad_hex": fmt.chunk_aad(i, n).hex()}
                      for i, n in ((0, 1), (3, 7))],
        "dag_cbor": [{
            "manifest": {"type": "mycelium-archive", "v": 1, "keys_hex": ["07" * 103],
                         "chunks": [cids.to_text(cids.cid_of(b"\x40"))]},
            "hex": dagcbor.encode({"type": "mycelium-archive", "v": 1, "keys": [b"\x07" * 103],
                                   "chunks": [dagcbor.Link(cids.cid_of(b"\x40"))]}).hex(),
        }],
        "personal_archive": {**archive, "signer": header.signer.hex(),
                             "header_hex": _header(built, owner).hex()},
    }


def _stream(archive: fmt.Archive, owner: Identity) -> bytes:
    from mycelium.crypto import aead

    blocks = dict(archive.blocks)
    slots, chunk_cids = fmt.verify_blocks(archive.root, blocks)
    key = keyslots.open_slots(slots, owner)
    out = b""
    for i, c in enumerate(chunk_cids):
        sealed = dagcbor.decode(blocks[c])
        out += aead.decrypt(key, sealed[:24], sealed[24:], fmt.chunk_aad(i, len(chunk_cids)))
    return out


def _header(archive: fmt.Archive, owner: Identity) -> bytes:
    stream = _stream(archive, owner)
    (size,) = struct.unpack(">I", stream[:4])
    header = stream[4:4 + size]
    cbor.decode_canonical(header)
    return header


if __name__ == "__main__":
    PATH.write_text(json.dumps(generate(), indent=2) + "\n")
    print(f"wrote {PATH}")
