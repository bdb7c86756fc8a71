"""The keyless relay store on its own: chains, pending, membership from control ops,
quotas, reopening after a crash, and exact bytes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mycelium.log.envelope import decode, seal
from mycelium.node.relay_link import registration_envelopes
from mycelium.relay.errors import BadRequest, Forbidden, Limited
from mycelium.relay.store import RelayStore, StoreLimits
from mycelium.spaces import service
from tests.relay.conftest import community, envelopes_of


def _store(tmp_path: Path, limits: StoreLimits | None = None) -> RelayStore:
    return RelayStore.open(tmp_path / "relay.db", limits=limits)


def test_register_then_ingest_stores_exact_bytes_and_survives_reopen(tmp_path: Path) -> None:
    com = community(tmp_path)
    for i in range(10):
        com.b.put_doc(com.space, "products", f"b{i}", {"title": f"beans {i}"})
    store = _store(tmp_path)
    space, new = store.register(com.a.genesis(com.space),
                                 registration_envelopes(com.a, com.space),
                                 com.a.identity.public_key)
    assert (space, new) == (com.space, True)
    sent = envelopes_of(com.b, com.space)
    result = store.ingest(com.space, sent)
    assert not result.rejected
    assert store.version_vector(com.space) == com.b.version_vector(com.space)
    held = set(store.envelopes_since(com.space, {}, limit=1000, max_bytes=1 << 30))
    assert set(sent) <= held
    store.close()
    again = _store(tmp_path)  # what a restart (or kill -9) sees
    assert again.version_vector(com.space) == com.b.version_vector(com.space)
    assert again.may_read(com.space, com.b.identity.public_key)
    assert again.space_bytes(com.space) == sum(map(len, held))
    assert again.ingest(com.space, sent).duplicates == len(sent)


def test_gap_and_unknown_author_are_pending_until_resolved(tmp_path: Path) -> None:
    com = community(tmp_path)
    store = _store(tmp_path)
    # only the genesis: B is not a member yet as far as the relay knows
    store.register(com.a.genesis(com.space), [], com.a.identity.public_key)
    com.b.put_doc(com.space, "products", "x", {"title": "early"})
    mine = set(envelopes_of(com.a, com.space))  # B's: its device chain and certificate
    b_envs = [e for e in envelopes_of(com.b, com.space) if e not in mine]
    assert b_envs
    result = store.ingest(com.space, b_envs[::-1])  # newest first: gaps too
    assert result.pending == len(b_envs) and not result.accepted
    assert store.usage()["pending"] == len(b_envs)
    result = store.ingest(com.space, registration_envelopes(com.a, com.space))
    assert len(result.accepted) >= len(b_envs)  # the admin's ops released B's chain
    assert store.version_vector(com.space) == com.b.version_vector(com.space)
    assert store.usage()["pending"] == 0


def test_forged_foreign_and_non_member_envelopes_are_refused(tmp_path: Path) -> None:
    com = community(tmp_path)
    store = _store(tmp_path)
    store.register(com.a.genesis(com.space), registration_envelopes(com.a, com.space),
                   com.a.identity.public_key)
    good = envelopes_of(com.a, com.space)[-1]
    forged = good[:-1] + bytes([good[-1] ^ 1])
    assert store.ingest(com.space, [forged]).rejected[0][1] == "bad_signature"
    other = service.create_space(com.c, "elsewhere")
    foreign = envelopes_of(com.c, other)
    assert {r for _, r in store.ingest(com.space, foreign).rejected} == {"wrong_space"}
    # C signs a data envelope for the space without being a member: held, never readable
    raw = seal(signer=com.c.identity.signing_key, space=com.space, seq=1, prev=None,
               epoch=1, payload=b"x" * 10, group_key=bytes(32)).raw
    assert store.ingest(com.space, [raw]).pending == 1
    assert com.c.identity.public_key not in store.version_vector(com.space)
    assert store.ingest(b"\x00" * 32, [raw]).rejected == [(None, "unknown_space")]


def test_registration_refusals(tmp_path: Path) -> None:
    com = community(tmp_path)
    store = _store(tmp_path, StoreLimits(spaces_per_identity=1))
    with pytest.raises(BadRequest) as bad:
        store.register(b"not a genesis", [], com.a.identity.public_key)
    assert bad.value.reason == "bad_genesis"
    with pytest.raises(Forbidden):
        store.register(com.a.genesis(com.space), [], com.b.identity.public_key)
    assert store.usage() == {"spaces": 0, "envelopes": 0, "bytes": 0, "pending": 0}
    store.register(com.a.genesis(com.space), [], com.a.identity.public_key)
    personal = service.ensure_personal_space(com.a)
    with pytest.raises(Limited) as limited:
        store.register(com.a.genesis(personal), [], com.a.identity.public_key)
    assert limited.value.reason == "too_many_spaces"


def test_identity_quota_counts_across_spaces(tmp_path: Path) -> None:
    com = community(tmp_path)
    personal = service.ensure_personal_space(com.a)
    for i in range(20):
        com.a.put_doc(personal, "diary", f"d{i}", {"body": "z" * 500})
        com.a.put_doc(com.space, "products", f"p{i}", {"title": "t", "description": "y" * 500})
    store = _store(tmp_path, StoreLimits(identity_bytes=16_000))
    store.register(com.a.genesis(personal), [], com.a.identity.public_key)
    store.register(com.a.genesis(com.space), [], com.a.identity.public_key)
    first = store.ingest(personal, envelopes_of(com.a, personal))
    second = store.ingest(com.space, envelopes_of(com.a, com.space))
    reasons = {r for _, r in first.rejected + second.rejected}
    assert reasons == {"over_quota"}
    assert store.author_bytes(com.a.identity.public_key) <= 16_000
    rows = store.conn.execute("SELECT SUM(length(raw)) FROM envelopes").fetchone()[0]
    pending = store.conn.execute("SELECT COALESCE(SUM(length(raw)), 0) FROM pending"
                                 ).fetchone()[0]
    # everything stored is charged to someone (a device's certificate to the device key,
    # which the certificate has not made the identity's yet when it arrives)
    assert rows + pending == sum(store._author_bytes.values())


def test_database_holds_no_key_material(tmp_path: Path) -> None:
    com = community(tmp_path)
    com.a.put_doc(com.space, "products", "p", {"title": "secret tomatoes"})
    store = _store(tmp_path)
    store.register(com.a.genesis(com.space), envelopes_of(com.a, com.space),
                   com.a.identity.public_key)
    store.close()
    conn = sqlite3.connect(tmp_path / "relay.db")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"meta", "spaces", "envelopes", "pending"}
    epoch = com.a.space_state(com.space).current_epoch
    key = com.a.space_state(com.space).epoch_key(epoch, com.a.identity)
    assert key is not None
    blob = (tmp_path / "relay.db").read_bytes() + b"".join(
        p.read_bytes() for p in tmp_path.glob("relay.db-*"))
    assert key not in blob and b"secret tomatoes" not in blob


def test_strangers_share_a_small_pending_pool(tmp_path: Path) -> None:
    from mycelium.log.limits import MAX_PENDING_PER_STRANGER

    com = community(tmp_path)
    store = _store(tmp_path)
    store.register(com.a.genesis(com.space), registration_envelopes(com.a, com.space),
                   com.a.identity.public_key)
    prev = None
    flood = []
    for seq in range(1, MAX_PENDING_PER_STRANGER + 11):
        env = seal(signer=com.c.identity.signing_key, space=com.space, seq=seq, prev=prev,
                   epoch=1, payload=b"spam", group_key=bytes(32))
        flood.append(env.raw)
        prev = env.delta_id
    result = store.ingest(com.space, flood)
    assert result.pending == MAX_PENDING_PER_STRANGER
    assert {r for _, r in result.rejected} == {"pending_full"}
    # a member's envelopes ahead of a gap still find room
    com.b.put_doc(com.space, "products", "x", {"title": "one"})
    com.b.put_doc(com.space, "products", "y", {"title": "two"})
    b_envs = [e for e in envelopes_of(com.b, com.space) if decode(e).author not in
              {decode(x).author for x in envelopes_of(com.a, com.space)}]
    assert store.ingest(com.space, b_envs[1:]).pending == len(b_envs) - 1
