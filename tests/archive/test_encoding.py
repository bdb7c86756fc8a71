"""DAG-CBOR, CIDs and CARv1 as written by mycelium/archive, against independent codecs."""

from __future__ import annotations

import hashlib

import cbor2
import libipld
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multiformats import CID

from mycelium.archive import car, dagcbor
from mycelium.archive import cid as cids
from mycelium.archive.errors import BadArchive, BadCid, TamperedBlock

LINK = cids.cid_of(b"\xa0")


def test_cid_matches_multiformats_and_libipld() -> None:
    block = dagcbor.encode({"a": 1})
    ours = cids.cid_of(block)
    theirs = CID("base32", 1, "dag-cbor", ("sha2-256", hashlib.sha256(block).digest()))
    assert ours == bytes(theirs) and cids.to_text(ours) == str(theirs)
    assert libipld.encode_cid(ours) == cids.to_text(ours)
    assert cids.from_text(str(theirs)) == ours


@pytest.mark.parametrize("text", ["", "x", "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
                                  "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
                                  "b!!!!", "b" + "a" * 200])
def test_bad_cid_text_is_named(text: str) -> None:
    with pytest.raises(BadCid):
        cids.from_text(text)


def test_verify_block_names_the_cid() -> None:
    with pytest.raises(TamperedBlock, match=cids.to_text(LINK)):
        cids.verify_block(LINK, b"\xa1")


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=80)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)


@given(_values)
def test_dagcbor_matches_libipld_byte_for_byte(value: object) -> None:
    """libipld is an independent DAG-CBOR encoder (Rust); it writes links for byte strings
    that parse as CIDs, so links are given to it that way and plain bytes that happen to
    parse as CIDs are left out."""
    try:
        libipld.decode_cid(value) if isinstance(value, bytes) else None
        is_cid = isinstance(value, bytes)
    except (ValueError, TypeError):
        is_cid = False
    if is_cid:
        return
    ours = dagcbor.encode({"v": value, "link": dagcbor.Link(LINK)})
    theirs = libipld.encode_dag_cbor({"v": value, "link": LINK})
    assert ours == theirs
    assert dagcbor.decode(ours) == {"v": value, "link": dagcbor.Link(LINK)}


def test_manifest_shape_matches_libipld() -> None:
    manifest = {"type": "mycelium-archive", "v": 1, "keys": [b"\x07" * 103, b"\x08" * 103],
                "chunks": [dagcbor.Link(LINK), dagcbor.Link(cids.cid_of(b"\x40"))]}
    theirs = libipld.encode_dag_cbor({**manifest, "chunks": [LINK, cids.cid_of(b"\x40")]})
    assert dagcbor.encode(manifest) == theirs


def test_32_byte_strings_stay_bytes() -> None:
    """The libipld pitfall (NOTES.md): bytes that parse as a CID stay bytes with cbor2."""
    value = {"prev": b"\x01" * 32}
    encoded = dagcbor.encode(value)
    assert b"\xd8\x2a" not in encoded and dagcbor.decode(encoded) == value


@pytest.mark.parametrize("data,why", [
    (cbor2.dumps({"b": 1, "a": 2}), "deterministic"),                  # unsorted keys
    (bytes.fromhex("a1616119000a"), "deterministic"),                   # non-minimal int
    (cbor2.dumps({1: 2}), "text"),                                      # int key
    (cbor2.dumps(1.5), "not used"),                                     # float
    (cbor2.dumps(cbor2.CBORTag(43, b"x")), "tag 43"),                   # other tag
    (cbor2.dumps(cbor2.CBORTag(42, b"\x01" + LINK)), "0x00"),          # link prefix
    (b"\xa1", "not DAG-CBOR"),                                          # truncated
])
def test_dagcbor_decode_refuses(data: bytes, why: str) -> None:
    with pytest.raises(BadArchive, match=why):
        dagcbor.decode(data)


def test_car_round_trip_and_libipld_reads_it() -> None:
    blocks = [(cids.cid_of(b), b) for b in (dagcbor.encode({"x": i}) for i in range(3))]
    data = car.write_car(blocks[0][0], blocks)
    assert car.read_car(data, max_blocks=3) == ([blocks[0][0]], blocks)
    header, decoded = libipld.decode_car(data)
    assert header == {"version": 1, "roots": [blocks[0][0]]}
    assert decoded == {c: libipld.decode_dag_cbor(b) for c, b in blocks}
    with pytest.raises(BadArchive, match="more than 2"):
        car.read_car(data, max_blocks=2)
    with pytest.raises(BadArchive, match="truncated"):
        car.read_car(data[:-1], max_blocks=3)


@given(st.integers(0, 2**63 - 1))  # multiformats varints: at most 9 bytes
def test_varint_round_trip(n: int) -> None:
    encoded = car.encode_varint(n)
    assert car.decode_varint(encoded, 0) == (n, len(encoded))
