"""Identity derivations and the HKDF labels."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.peer.id import ID

from mycelium.crypto.kdf import LABELS, STORAGE_KEY_LABEL, KdfError, derive_key
from mycelium.crypto.sealed import open_sealed, seal_to
from mycelium.identity.identity import Identity, IdentityError, verify_signature

from .conftest import load_vectors


@pytest.mark.parametrize("vec", load_vectors("identity-kdf.json")["vectors"])
def test_kdf_vectors(vec: dict[str, object]) -> None:
    seed = bytes.fromhex(str(vec["seed_hex"]))
    okm = derive_key(seed, str(vec["label"]).encode(), int(str(vec["length"])))
    assert okm.hex() == vec["okm_hex"]


@pytest.mark.parametrize("vec", load_vectors("identity-didkey.json")["valid"][:5])
def test_x25519_conversion_matches_did_key_vectors(vec: dict[str, str]) -> None:
    ident = Identity.from_seed(bytes.fromhex(vec["seed_hex"]))
    assert ident.x25519_public().hex() == vec["x25519_public_hex"]
    assert ident.x25519_private().hex() == vec["x25519_private_hex"]


def test_storage_key_is_labelled_hkdf() -> None:
    ident = Identity.from_seed(bytes(range(32)))
    assert ident.storage_key == derive_key(ident.seed, STORAGE_KEY_LABEL)
    assert ident.storage_key not in (ident.seed, ident.public_key, ident.x25519_private())
    assert len(set(LABELS)) == len(LABELS)


def test_kdf_rejects_bad_input() -> None:
    with pytest.raises(KdfError):
        derive_key(b"short", STORAGE_KEY_LABEL)
    with pytest.raises(KdfError):
        derive_key(bytes(32), b"")
    with pytest.raises(KdfError):
        derive_key(bytes(32), STORAGE_KEY_LABEL, 0)


@settings(max_examples=30, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), msg=st.binary(max_size=200))
def test_sign_verify_and_determinism(seed: bytes, msg: bytes) -> None:
    a, b = Identity.from_seed(seed), Identity.from_seed(seed)
    assert a == b and a.did == b.did and hash(a) == hash(b)
    sig = a.sign(msg)
    assert verify_signature(a.public_key, msg, sig)
    assert not verify_signature(a.public_key, msg + b"x", sig)
    assert seal_to(a.public_key, msg) != msg
    assert open_sealed(b, seal_to(a.public_key, msg)) == msg


def test_generate_is_random_and_libp2p_agrees() -> None:
    a, b = Identity.generate(), Identity.generate()
    assert a.did != b.did
    assert ID.from_pubkey(a.libp2p_key_pair().public_key).to_base58() == a.peer_id
    assert a.seed.hex() not in repr(a)


@pytest.mark.parametrize("seed", [b"", b"\x00" * 31, b"\x00" * 64])
def test_bad_seed(seed: bytes) -> None:
    with pytest.raises(IdentityError):
        Identity.from_seed(seed)


def test_verify_rejects_garbage() -> None:
    assert not verify_signature(b"\x00" * 31, b"m", b"\x00" * 64)
    assert not verify_signature(Identity.generate().public_key, b"m", b"\x00" * 63)
