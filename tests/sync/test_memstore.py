"""MemoryStore: real envelope checks, chains, pending gaps, shared verification cache."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mycelium.log.envelope import seal
from mycelium.sync.cache import CachedRejection, VerifyCache
from mycelium.sync.memstore import MemoryStore

from .pair import GROUP_KEY, Node

SPACE = b"S" * 32
OTHER = b"T" * 32


def forge(raw: bytes) -> bytes:
    """Same envelope with one bit of the signature flipped (still canonical CBOR)."""
    i = len(raw) - 1  # "sig" sorts last in canonical order: the final byte is in the sig
    return raw[:i] + bytes([raw[i] ^ 1])


@pytest.fixture
def chain() -> list[bytes]:
    src = Node("src", MemoryStore())
    return src.write(SPACE, 6)


def test_in_order_ingest_and_vector(chain: list[bytes]) -> None:
    st = MemoryStore()
    st.add_space(SPACE)
    res = st.ingest(SPACE, chain)
    assert len(res.accepted) == 6 and not res.rejected
    author = next(iter(st.version_vector(SPACE)))
    assert st.version_vector(SPACE) == {author: 6}
    assert st.envelopes(SPACE) == chain


def test_gap_is_held_pending_then_drained(chain: list[bytes]) -> None:
    st = MemoryStore()
    st.add_space(SPACE)
    res = st.ingest(SPACE, chain[3:])
    assert res.pending == 3 and not res.accepted
    assert st.version_vector(SPACE) == {} and st.pending_count(SPACE) == 3
    assert st.ingest(SPACE, chain[3:4]).duplicates == 1  # already parked
    res = st.ingest(SPACE, chain[:3])
    assert len(res.accepted) == 6 and st.pending_count(SPACE) == 0
    assert list(st.version_vector(SPACE).values()) == [6]


def test_duplicates_are_idempotent(chain: list[bytes]) -> None:
    st = MemoryStore()
    st.add_space(SPACE)
    st.ingest(SPACE, chain)
    res = st.ingest(SPACE, chain + chain)
    assert res.duplicates == 12 and not res.accepted and not res.rejected
    assert len(st.envelopes(SPACE)) == 6


def test_rejections_have_reasons(chain: list[bytes]) -> None:
    st = MemoryStore()
    st.add_space(SPACE)
    res = st.ingest(SPACE, [forge(chain[0]), b"\xa0", b"\xff\xff"])
    assert [r for _, r in res.rejected] == ["bad_signature", "unknown_version", "bad_cbor"]
    assert st.ingest(OTHER, chain[:1]).rejected[0][1] == "unknown_space"
    st.add_space(OTHER)
    assert st.ingest(OTHER, chain[:1]).rejected[0][1] == "wrong_space"
    assert st.rejections["bad_signature"] == 1


def test_fork_and_broken_chain_are_rejected(chain: list[bytes]) -> None:
    key = Ed25519PrivateKey.generate()
    a = seal(signer=key, space=SPACE, seq=1, prev=None, epoch=0, payload=b"a", group_key=GROUP_KEY)
    b = seal(signer=key, space=SPACE, seq=1, prev=None, epoch=0, payload=b"b", group_key=GROUP_KEY)
    bad_prev = seal(signer=key, space=SPACE, seq=2, prev=os.urandom(32), epoch=0, payload=b"c",
                    group_key=GROUP_KEY)
    st = MemoryStore()
    st.add_space(SPACE)
    st.ingest(SPACE, [a.raw])
    assert [r for _, r in st.ingest(SPACE, [b.raw, bad_prev.raw]).rejected] == [
        "fork", "broken_chain"]


def test_membership_hook(chain: list[bytes]) -> None:
    st = MemoryStore(is_member=lambda space, author: False)
    st.add_space(SPACE)
    assert st.ingest(SPACE, chain[:1]).rejected[0][1] == "not_member"


def test_pending_is_bounded(chain: list[bytes]) -> None:
    st = MemoryStore(max_pending=2)
    st.add_space(SPACE)
    res = st.ingest(SPACE, chain[2:])
    assert res.pending == 2 and [r for _, r in res.rejected] == ["pending_full", "pending_full"]


def test_envelopes_since_respects_limits(chain: list[bytes]) -> None:
    st = MemoryStore()
    st.add_space(SPACE)
    st.ingest(SPACE, chain)
    author = next(iter(st.version_vector(SPACE)))
    assert st.envelopes_since(SPACE, {author: 4}, limit=10, max_bytes=1 << 20) == chain[4:]
    assert st.envelopes_since(SPACE, {}, limit=2, max_bytes=1 << 20) == chain[:2]
    assert st.envelopes_since(SPACE, {}, limit=10, max_bytes=1) == chain[:1]  # at least one
    assert st.envelopes_since(SPACE, {author: 6}, limit=10, max_bytes=1 << 20) == []


def test_shared_cache_verifies_each_envelope_once(chain: list[bytes]) -> None:
    cache = VerifyCache()
    stores = [MemoryStore(cache=cache) for _ in range(20)]
    for st in stores:
        st.add_space(SPACE)
        st.ingest(SPACE, chain)
        st.ingest(SPACE, [forge(chain[0])])
    assert cache.verifies == 2 and cache.decodes == 7  # one chain signature + the forgery
    with pytest.raises(CachedRejection) as exc:
        cache.verified(forge(chain[0]))
    assert exc.value.reason == "bad_signature"


def test_cache_is_bounded(chain: list[bytes]) -> None:
    cache = VerifyCache(max_entries=3)
    for raw in chain:
        cache.verified(raw)
    assert len(cache) <= 3
    assert cache.verified(chain[0]).seq == 1  # evicted entries are simply recomputed


def test_chained_batch_costs_one_signature(chain: list[bytes]) -> None:
    cache = VerifyCache()
    st = MemoryStore(cache=cache)
    st.add_space(SPACE)
    res = st.ingest(SPACE, list(reversed(chain)))
    assert len(res.accepted) == 6 and cache.verifies == 1


def test_chain_shortcut_does_not_launder_forgeries(chain: list[bytes]) -> None:
    cache = VerifyCache()
    st = MemoryStore(cache=cache)
    st.add_space(SPACE)
    res = st.ingest(SPACE, [*chain[:5], forge(chain[5])])
    assert len(res.accepted) == 5 and [r for _, r in res.rejected] == ["bad_signature"]
    # the forged newest vouches for nothing: the others were checked on their own
    assert cache.verifies == 2  # forged newest, then chain[4] vouches for chain[:4]


def test_duplicate_fast_path_skips_verification(chain: list[bytes]) -> None:
    cache = VerifyCache()
    st = MemoryStore(cache=cache)
    st.add_space(SPACE)
    st.ingest(SPACE, chain)
    cache._verified.clear()  # as if the verdicts had been evicted
    before = cache.verifies
    res = st.ingest(SPACE, [*chain, *chain[:2]])
    assert res.duplicates == 8 and not res.accepted and not res.rejected
    assert cache.verifies == before  # equal bytes at (author, seq): no signature check
    # a forgery of a held (author, seq) is not a duplicate: it is verified and refused
    res = st.ingest(SPACE, [forge(chain[2])])
    assert res.duplicates == 0 and [r for _, r in res.rejected] == ["bad_signature"]


def test_take_since_matches_envelopes_since_plus_the_session_prefix() -> None:
    from mycelium.sync.session import SyncSession

    cache = VerifyCache()
    writers = [Node(f"w{i}", MemoryStore(cache=cache)) for i in range(3)]
    st = MemoryStore(cache=cache)
    st.add_space(SPACE)
    for i, w in enumerate(writers):
        st.ingest(SPACE, w.write(SPACE, 4 + i, size=40 + 30 * i))
    authors = list(st.version_vector(SPACE))
    session = SyncSession(MemoryStore(cache=cache), local_id=b"a" * 32, remote_id=b"b" * 32,
                          initiator=False, now=0.0, cache=cache)
    sizes = sorted({len(r) for r in st.envelopes(SPACE)})
    for start in ({}, {authors[0]: 2}, {authors[0]: 4, authors[1]: 5}, dict.fromkeys(authors, 9)):
        for limit in (1, 3, 5, 64):
            for max_bytes in (sizes[0] - 1, sizes[0], sizes[-1] + 1, 500, 1 << 20):
                view_a, view_b = dict(start), dict(start)
                batch = st.envelopes_since(SPACE, view_a, limit=limit, max_bytes=max_bytes)
                kept, size = session._take(view_a, batch, limit, max_bytes)
                blocked = bool(batch) and len(batch[0]) > max_bytes
                assert st.take_since(SPACE, view_b, limit=limit, max_bytes=max_bytes) == (
                    kept, size, blocked)
                assert view_a == view_b
