from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.codec import cbor
from mycelium.spaces.errors import BadGenesis
from mycelium.spaces.genesis import make_genesis, parse_genesis

from .conftest import ident


def test_roundtrip_and_space_id_is_hash_of_bytes() -> None:
    alice = ident(1)
    raw = make_genesis(alice, "market", "community", 1_700_000_000_000)
    g = parse_genesis(raw)
    assert (g.name, g.kind, g.creator, g.created_ms) == ("market", "community", alice.public_key,
                                                         1_700_000_000_000)
    import hashlib
    assert g.space_id == hashlib.sha256(raw).digest()
    assert len(g.salt) == 16


def test_fixed_salt_is_deterministic_random_salt_is_not() -> None:
    alice = ident(1)
    assert make_genesis(alice, "personal", "personal", 0, b"") == make_genesis(
        alice, "personal", "personal", 0, b"")
    assert make_genesis(alice, "x", "community", 1) != make_genesis(alice, "x", "community", 1)


def test_tampered_field_breaks_signature() -> None:
    raw = make_genesis(ident(1), "market", "community", 5, b"s")
    m = cbor.decode(raw)
    m["name"] = "mark3t"
    with pytest.raises(BadGenesis, match="signature"):
        parse_genesis(cbor.encode(m))


def test_creator_swap_breaks_signature() -> None:
    raw = make_genesis(ident(1), "market", "community", 5, b"s")
    m = cbor.decode(raw)
    m["creator"] = ident(2).public_key
    with pytest.raises(BadGenesis):
        parse_genesis(cbor.encode(m))


@pytest.mark.parametrize("name", ["", "x" * 65, "tab\there"])
def test_bad_names_refused(name: str) -> None:
    with pytest.raises(BadGenesis, match="name"):
        make_genesis(ident(1), name, "community", 0)


def test_bad_kind_and_extra_field_refused() -> None:
    with pytest.raises(BadGenesis, match="kind"):
        make_genesis(ident(1), "n", "shared", 0)  # type: ignore[arg-type]
    m = cbor.decode(make_genesis(ident(1), "n", "community", 0))
    m["extra"] = 1
    with pytest.raises(BadGenesis, match="fields"):
        parse_genesis(cbor.encode(m))


def test_non_canonical_refused() -> None:
    raw = make_genesis(ident(1), "n", "community", 0)
    import cbor2
    non_canonical = cbor2.dumps(cbor.decode(raw), canonical=False)
    if non_canonical != raw:
        with pytest.raises(BadGenesis):
            parse_genesis(non_canonical)
    with pytest.raises(BadGenesis):
        parse_genesis(raw + b"\x00")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_bad_genesis(data: bytes) -> None:
    with pytest.raises(BadGenesis):
        parse_genesis(data)
