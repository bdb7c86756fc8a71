"""protocols/vectors/archive.json against the implementation (and independent checks)."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import libipld
import pytest

from mycelium.archive import cid as cids
from mycelium.archive import dagcbor, keyslots
from mycelium.archive import format as fmt
from mycelium.archive.errors import NotARecipient
from mycelium.identity.identity import Identity

from .vectors_gen import PATH, generate, vector_rand

V = json.loads(PATH.read_text())


def _hkdf_sha256(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 with an empty salt, written out (independent of ``cryptography``)."""
    prk = hmac.new(bytes(32), ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


@pytest.mark.parametrize("case", V["personal_wrap_key"])
def test_personal_wrap_key(case: dict[str, str]) -> None:
    seed = bytes.fromhex(case["seed_hex"])
    assert case["label"].encode() == keyslots.PERSONAL_KEY_LABEL
    assert _hkdf_sha256(seed, case["label"].encode()).hex() == case["key_hex"]
    assert keyslots.personal_wrap_key(Identity.from_seed(seed)).hex() == case["key_hex"]


def test_key_slots() -> None:
    ks = V["key_slots"]
    key = bytes.fromhex(ks["archive_key_hex"])
    owner = Identity.from_seed(bytes.fromhex(ks["personal"]["seed_hex"]))
    rebuilt = keyslots.make_slots(key, wrap_key=keyslots.personal_wrap_key(owner),
                                  rand=vector_rand(bytes.fromhex(ks["personal"]["rand_seed_hex"])))
    assert [s.hex() for s in rebuilt] == ks["personal"]["slots_hex"]
    assert keyslots.open_slots(rebuilt, owner) == key
    sealed = [bytes.fromhex(s) for s in ks["sealed"]["slots_hex"]]
    reader = Identity.from_seed(bytes.fromhex(ks["sealed"]["reader_seed_hex"]))
    assert keyslots.open_slots(sealed, reader) == key
    assert {len(s) for s in [*sealed, *rebuilt]} == {keyslots.SLOT_BYTES}
    with pytest.raises(NotARecipient):
        keyslots.open_slots(sealed, owner)


@pytest.mark.parametrize("case", V["chunk_aad"])
def test_chunk_aad(case: dict[str, object]) -> None:
    index, count = case["index"], case["count"]
    assert isinstance(index, int) and isinstance(count, int)
    assert fmt.chunk_aad(index, count).hex() == case["aad_hex"]


@pytest.mark.parametrize("case", V["dag_cbor"])
def test_dag_cbor(case: dict[str, object]) -> None:
    m = case["manifest"]
    assert isinstance(m, dict)
    links = [cids.from_text(c) for c in m["chunks"]]
    keys = [bytes.fromhex(k) for k in m["keys_hex"]]
    ours = dagcbor.encode({"type": m["type"], "v": m["v"], "keys": keys,
                           "chunks": [dagcbor.Link(c) for c in links]})
    assert ours.hex() == case["hex"]
    assert libipld.encode_dag_cbor({"type": m["type"], "v": m["v"], "keys": keys,
                                    "chunks": links}).hex() == case["hex"]


def test_personal_archive_rebuilds_and_opens() -> None:
    pa = V["personal_archive"]
    owner = Identity.from_seed(bytes.fromhex(pa["signer_seed_hex"]))
    envelopes = [bytes.fromhex(e) for e in pa["envelopes_hex"]]
    archive = fmt.build(bytes.fromhex(pa["genesis_hex"]), envelopes, signer=owner,
                        wrap_key=keyslots.personal_wrap_key(owner), created_ms=pa["created_ms"],
                        rand=vector_rand(bytes.fromhex(pa["rand_seed_hex"])))
    assert archive.cid == pa["root"]
    assert archive.blocks[0][1].hex() == pa["manifest_hex"]
    assert [cids.to_text(c) for c, _ in archive.blocks[1:]] == pa["chunks"]
    assert [hashlib.sha256(b).hexdigest() for _, b in archive.blocks[1:]] == \
        pa["chunk_block_sha256_hex"]
    contents = fmt.open_archive(archive.root, dict(archive.blocks), owner)
    assert contents.envelopes == envelopes and contents.signer.hex() == pa["signer"]
    assert contents.genesis.hex() == pa["genesis_hex"]


def test_vectors_are_current_and_named_in_the_spec() -> None:
    fresh = generate()
    fresh["key_slots"]["sealed"] = V["key_slots"]["sealed"]  # sealed boxes are random
    assert fresh == V
    spec = (PATH.parents[1] / "archive.md").read_text()
    assert "vectors/archive.json" in spec
    assert Path(__file__).name in V["description"]
