"""The archive format without a network: round trip, what it reveals, what it refuses."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mycelium.archive import dagcbor, keyslots
from mycelium.archive import format as fmt
from mycelium.archive.errors import (
    BadArchive,
    BadSignature,
    MissingBlock,
    NotARecipient,
    TamperedBlock,
)
from mycelium.archive.service import open_verified
from mycelium.crypto.kdf import LABELS
from mycelium.identity.identity import Identity
from mycelium.spaces.service import ensure_personal_space
from mycelium.store.soil import Soil

from .helpers import ADMIN, MARKER, MEMBER, SPACE_NAME, STRANGER, community


def _archive(tmp_path: Path, docs: int = 20, signer: Identity = ADMIN,
             big: bool = False) -> tuple[fmt.Archive, list[bytes]]:
    soil, space = community(tmp_path / "a.db", docs, big=big)
    envelopes = soil.envelopes_since(space, {}, limit=10**6, max_bytes=10**9)
    members = sorted(soil.space_state(space).members)
    archive = fmt.build(soil.genesis(space), envelopes, signer=signer, members=members,
                        created_ms=1)
    soil.close()
    return archive, envelopes


def test_member_opens_what_admin_wrote(tmp_path: Path) -> None:
    archive, envelopes = _archive(tmp_path)
    contents, state = open_verified(archive.root, dict(archive.blocks), MEMBER)
    assert contents.envelopes == envelopes
    assert state.name == SPACE_NAME and contents.signer == ADMIN.public_key
    assert hashlib.sha256(contents.genesis).digest() == contents.space_id


def test_stranger_with_every_block_learns_nothing(tmp_path: Path) -> None:
    archive, _ = _archive(tmp_path)
    with pytest.raises(NotARecipient):
        fmt.open_archive(archive.root, dict(archive.blocks), STRANGER)
    everything = b"".join(data for _, data in archive.blocks)
    for secret in (SPACE_NAME.encode(), MARKER.encode(), ADMIN.public_key, MEMBER.public_key,
                   ADMIN.did.encode(), MEMBER.did.encode()):
        assert secret not in everything
    manifest = dagcbor.decode(archive.blocks[0][1])
    assert sorted(manifest) == ["chunks", "keys", "type", "v"]
    assert len(manifest["keys"]) == keyslots.MIN_SLOTS  # 2 members, padded
    assert {len(k) for k in manifest["keys"]} == {keyslots.SLOT_BYTES}
    assert {len(b) for _, b in archive.blocks[1:]} == {len(archive.blocks[1][1])}


def test_chunks_are_fixed_size_and_below_256_kib(tmp_path: Path) -> None:
    small, _ = _archive(tmp_path / "s", docs=1)
    big, _ = _archive(tmp_path / "b", docs=150, big=True)
    sizes = {len(b) for a in (small, big) for _, b in a.blocks[1:]}
    assert len(sizes) == 1 and sizes.pop() <= fmt.BLOCK_LIMIT
    assert len(small.blocks) == 2 and len(big.blocks) > 2


def test_slot_count_is_padded_to_a_power_of_two() -> None:
    assert [keyslots.padded_count(n) for n in (1, 4, 5, 9, 100)] == [4, 4, 8, 16, 128]


def test_tampered_missing_and_reordered_blocks(tmp_path: Path) -> None:
    archive, _ = _archive(tmp_path, docs=150, big=True)
    blocks = dict(archive.blocks)
    chunk_cid, chunk = archive.blocks[1]
    bad = {**blocks, chunk_cid: chunk[:-1] + bytes([chunk[-1] ^ 1])}
    with pytest.raises(TamperedBlock):
        fmt.open_archive(archive.root, bad, MEMBER)
    with pytest.raises(MissingBlock):
        fmt.open_archive(archive.root, {k: v for k, v in blocks.items() if k != chunk_cid},
                         MEMBER)
    # A manifest with the chunks swapped (re-hashed, so every CID is right) is refused.
    manifest = dagcbor.decode(blocks[archive.root])
    manifest["chunks"] = manifest["chunks"][::-1]
    block = dagcbor.encode(manifest)
    from mycelium.archive import cid as cids
    root = cids.cid_of(block)
    with pytest.raises(BadArchive, match="does not decrypt"):
        fmt.open_archive(root, {**blocks, root: block}, MEMBER)


def test_signer_must_be_a_member_or_trusted(tmp_path: Path) -> None:
    archive, _ = _archive(tmp_path, signer=STRANGER)
    with pytest.raises(BadSignature, match="neither a member"):
        open_verified(archive.root, dict(archive.blocks), MEMBER)
    contents, _ = open_verified(archive.root, dict(archive.blocks), MEMBER,
                                trusted_signers={STRANGER.public_key})
    assert contents.signer == STRANGER.public_key


def test_truncated_stream_fails_the_signed_digest(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    soil, space = community(tmp_path / "a.db", 2)
    envs = soil.envelopes_since(space, {}, limit=100, max_bytes=10**9)
    archive = fmt.build(soil.genesis(space), envs, signer=ADMIN, members=[MEMBER.public_key],
                        created_ms=1)
    contents = fmt.open_archive(archive.root, dict(archive.blocks), MEMBER)
    # Same archive, one envelope dropped from the stream: digest and count no longer match.
    original = fmt.parse_stream
    def drop_last(stream: bytes) -> fmt.Contents:
        cut = stream.rfind(envs[-1])
        return original(stream[:cut - 4] + b"\0" * (len(stream) - cut + 4))
    monkeypatch.setattr(fmt, "parse_stream", drop_last)
    with pytest.raises(BadSignature, match="does not match its signed header"):
        fmt.open_archive(archive.root, dict(archive.blocks), MEMBER)
    assert len(contents.envelopes) == len(envs)
    soil.close()


def test_personal_archive_opens_only_with_the_same_seed(tmp_path: Path) -> None:
    owner = Identity.from_seed(b"\x44" * 32)
    soil = Soil.open(tmp_path / "p.db", owner)
    space = ensure_personal_space(soil)
    soil.put_doc(space, "diary", "d1", {"title": MARKER, "body": "dear diary"})
    envs = soil.envelopes_since(space, {}, limit=100, max_bytes=10**9)
    archive = fmt.build(soil.genesis(space), envs, signer=owner,
                        wrap_key=keyslots.personal_wrap_key(owner), created_ms=1)
    soil.close()
    recovered = Identity.from_seed(owner.seed)  # e.g. rebuilt by guardians on a new device
    contents, state = open_verified(archive.root, dict(archive.blocks), recovered)
    assert contents.envelopes == envs and state.kind == "personal"
    for other in (ADMIN, MEMBER):
        with pytest.raises(NotARecipient):
            fmt.open_archive(archive.root, dict(archive.blocks), other)
    assert MARKER.encode() not in b"".join(b for _, b in archive.blocks)


def test_personal_label_is_its_own() -> None:
    assert keyslots.PERSONAL_KEY_LABEL not in LABELS
    assert keyslots.personal_wrap_key(ADMIN) != keyslots.personal_wrap_key(MEMBER)


def _stream(envelopes: list[bytes], tail: bytes = b"\0\0\0\0") -> bytes:
    """A stream as build() lays it out (header signed by ADMIN), with a chosen tail."""
    import struct

    from mycelium.codec import cbor
    from mycelium.spaces.genesis import make_genesis

    genesis = make_genesis(ADMIN, "g", "community", 0)
    items = b"".join(struct.pack(">I", len(e)) + e for e in envelopes)
    body = {"v": 1, "genesis": genesis, "space": hashlib.sha256(genesis).digest(),
            "created_ms": 0, "count": len(envelopes),
            "digest": hashlib.sha256(items + b"\0\0\0\0").digest(), "signer": ADMIN.public_key}
    sig = ADMIN.signing_key.sign(fmt.SIGN_DOMAIN + cbor.encode(body))
    header = cbor.encode({**body, "sig": sig})
    return struct.pack(">I", len(header)) + header + items + tail


def test_stream_parsing_refuses_what_build_never_writes() -> None:
    assert fmt.parse_stream(_stream([b"a", b"bc"]) + bytes(7)).envelopes == [b"a", b"bc"]
    with pytest.raises(BadArchive, match="padding is not zero"):
        fmt.parse_stream(_stream([b"a"]) + b"\1")
    with pytest.raises(BadArchive, match="ends inside an item length"):
        fmt.parse_stream(_stream([b"a"], tail=b"\0\0"))
    with pytest.raises(BadArchive, match="too long"):
        fmt.parse_stream(_stream([b"a"], tail=b"\0\0\0\x09abc"))
    with pytest.raises(BadSignature, match="signed header"):
        fmt.parse_stream(_stream([b"a"], tail=b"\0\0\0\1b\0\0\0\0"))
