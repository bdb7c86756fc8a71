"""did:key <-> PeerID: published vectors, py-libp2p agreement, round trips, error paths."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import Ed25519PublicKey, create_new_key_pair
from libp2p.peer.id import ID
from multiformats import multibase, multicodec

from mycelium.identity import didkey
from mycelium.identity.didkey import (
    DidError,
    convert,
    did_from_public_key,
    did_to_peer_id,
    peer_id_from_public_key,
    peer_id_to_did,
    public_key_from_did,
    public_key_from_peer_id,
)
from mycelium.identity.identity import Identity

from .conftest import load_vectors

VECTORS = load_vectors("identity-didkey.json")
keys = st.binary(min_size=32, max_size=32)


@pytest.mark.parametrize("vec", VECTORS["valid"], ids=lambda v: v["did"][-8:])
def test_published_vectors_map_both_ways(vec: dict[str, str]) -> None:
    pub = bytes.fromhex(vec["public_key_hex"])
    assert did_from_public_key(pub) == vec["did"]
    assert peer_id_from_public_key(pub) == vec["peer_id"]
    assert public_key_from_did(vec["did"]) == pub
    assert public_key_from_peer_id(vec["peer_id"]) == pub
    assert public_key_from_peer_id(vec["peer_id_cid"]) == pub
    assert convert(vec["did"]) == vec["peer_id"]
    assert convert(vec["peer_id"]) == vec["did"]
    assert convert(vec["peer_id_cid"]) == vec["did"]
    if vec.get("seed_hex"):
        ident = Identity.from_seed(bytes.fromhex(vec["seed_hex"]))
        assert ident.public_key == pub
        assert ident.did == vec["did"]
        assert ident.peer_id == vec["peer_id"]


@pytest.mark.parametrize("vec", VECTORS["invalid"], ids=lambda v: v["note"][:30])
def test_published_and_crafted_invalid_inputs(vec: dict[str, str]) -> None:
    with pytest.raises(DidError) as info:
        convert(vec["input"])
    assert info.value.reason == vec["reason"], str(info.value)


def test_spec_vector_contains_the_protobuf_bytes() -> None:
    vec = next(v for v in VECTORS["valid"] if "public_key_protobuf_hex" in v)
    raw = ID.from_base58(vec["peer_id"]).to_bytes()
    assert raw == bytes.fromhex("0024") + bytes.fromhex(vec["public_key_protobuf_hex"])
    assert raw[:6] == didkey.PEER_ID_PREFIX


@settings(max_examples=50, deadline=None)
@given(seed=keys)
def test_peer_id_matches_py_libp2p_host_key(seed: bytes) -> None:
    ident = Identity.from_seed(seed)
    kp = create_new_key_pair(seed)
    assert ident.peer_id == ID.from_pubkey(kp.public_key).to_base58()
    assert ident.peer_id == ID.from_pubkey(ident.libp2p_key_pair().public_key).to_base58()
    extracted = ID.from_base58(ident.peer_id).extract_public_key()
    assert extracted is not None and extracted.to_bytes() == ident.public_key


@settings(max_examples=200, deadline=None)
@given(pub=keys)
def test_round_trips_for_any_32_bytes(pub: bytes) -> None:
    did = did_from_public_key(pub)
    pid = peer_id_from_public_key(pub)
    assert did.startswith("did:key:z6Mk")
    assert pid.startswith("12D3KooW")
    assert public_key_from_did(did) == pub
    assert public_key_from_peer_id(pid) == pub
    assert did_to_peer_id(did) == pid
    assert peer_id_to_did(pid) == did
    assert pid == ID.from_pubkey(Ed25519PublicKey.from_bytes(pub)).to_base58()


@settings(max_examples=300, deadline=None)
@given(pub=keys, pos=st.integers(min_value=0), ch=st.characters(codec="ascii"), which=st.booleans())
def test_mutated_strings_fail_cleanly_or_name_another_key(
    pub: bytes, pos: int, ch: str, which: bool
) -> None:
    """Any one-character change either raises a DidError or parses to a different key."""
    text = did_from_public_key(pub) if which else peer_id_from_public_key(pub)
    i = pos % len(text)
    mutated = text[:i] + ch + text[i + 1 :]
    if mutated == text:
        return
    try:
        other = convert(mutated)
    except DidError:
        return
    parse = public_key_from_peer_id if other.startswith("12D3") else public_key_from_did
    back = parse(other)
    assert back != pub


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=300))
def test_arbitrary_text_never_crashes(text: str) -> None:
    try:
        convert(text)
    except DidError as exc:
        assert exc.reason


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_wrong_key_sizes(size: int) -> None:
    with pytest.raises(DidError) as info:
        did_from_public_key(b"\x01" * size)
    assert info.value.reason == "bad_length"
    with pytest.raises(DidError):
        peer_id_from_public_key(b"\x01" * size)


def test_non_canonical_varint_is_rejected() -> None:
    # 0xed01 written with a redundant continuation byte still means ed25519-pub to a lax
    # decoder; we insist on the single canonical string per key.
    raw = bytes([0xED, 0x81, 0x00]) + b"\x02" * 32
    did = "did:key:" + multibase.encode(raw, "base58btc")
    with pytest.raises(DidError) as info:
        public_key_from_did(did)
    assert info.value.reason in {"non_canonical", "unsupported_key_type"}


def test_ed25519_codec_prefix() -> None:
    assert multicodec.wrap("ed25519-pub", b"")[:2] == b"\xed\x01"


def test_too_long_input_is_refused() -> None:
    with pytest.raises(DidError) as info:
        convert("did:key:z" + "1" * 500)
    assert info.value.reason == "bad_length"
