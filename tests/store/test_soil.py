"""Soil end to end: local writes, reads, queries, sync between two stores, persistence."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mycelium.crdt.schema import SchemaError
from mycelium.errors import MyceliumError
from mycelium.log.envelope import Kind, seal
from mycelium.spaces import service
from mycelium.store.soil import AmbiguousSpace, Soil, UnknownSpace

from .conftest import A, B, C, Market, did, open_soil, sync

TOMATO = {"title": "Tomatoes", "quantity": 5, "unit": "kg", "price": 250, "currency": "EUR",
          "location": "North", "status": "available"}


def test_put_get_list_delete(market: Market) -> None:
    a, s = market.a, market.space
    env = a.put_doc(s, "products", "p1", TOMATO)
    assert env.kind is Kind.DATA and env.author == A.public_key
    assert a.get_doc(s, "products", "p1") == {"_id": "p1", **TOMATO}
    a.put_doc(s, "products", "p2", {**TOMATO, "location": "South", "status": "sold"})
    a.put_doc(s, "products", "p1", {"price": None})
    assert "price" not in (a.get_doc(s, "products", "p1") or {})
    assert [d["_id"] for d in a.list_docs(s, "products")] == ["p1", "p2"]
    assert [d["_id"] for d in a.list_docs(s, "products", status="sold")] == ["p2"]
    assert [d["_id"] for d in a.list_docs(s, "products", location="North", status="available",
                                          title="Tomatoes")] == ["p1"]
    a.delete_doc(s, "products", "p1")
    assert a.get_doc(s, "products", "p1") is None
    assert [d["_id"] for d in a.list_docs(s, "products")] == ["p2"]


def test_index_rows_follow_updates(market: Market) -> None:
    a, s = market.a, market.space
    a.put_doc(s, "products", "p1", TOMATO)
    a.put_doc(s, "products", "p1", {"status": "sold"})
    assert a.list_docs(s, "products", status="available") == []
    assert len(a.list_docs(s, "products", status="sold")) == 1


def test_schema_checked_on_write(market: Market) -> None:
    with pytest.raises(SchemaError):
        market.a.put_doc(market.space, "products", "p", {"price": "free"})
    with pytest.raises(SchemaError):
        market.a.put_doc(market.space, "diary", "d", {"body": "x"})
    with pytest.raises(MyceliumError):
        market.a.put_doc(market.space, "products", "p", {})


def test_sync_both_ways_converges(market: Market) -> None:
    a, b, s = market.a, market.b, market.space
    a.put_doc(s, "products", "p1", TOMATO)
    b.put_doc(s, "products", "p2", {"title": "Eggs", "quantity": 12})
    sync(a, b, s)
    b.put_doc(s, "products", "p1", {"status": "reserved"})  # b has seen a's write: wins
    sync(a, b, s)
    sync(b, a, s)
    assert a.version_vector(s) == b.version_vector(s)
    assert a.list_docs(s, "products") == b.list_docs(s, "products")
    assert (b.get_doc(s, "products", "p1") or {})["status"] == "reserved"
    assert a.member_spaces() == [s] + [x for x in a.member_spaces() if x != s]


def test_reopen_restores_everything(tmp_path: Path, market: Market) -> None:
    a, s = market.a, market.space
    a.put_doc(s, "products", "p1", TOMATO)
    vv, state = a.version_vector(s), a.space_state(s).members
    a.close()
    again = open_soil(tmp_path / "a.db", A)
    assert again.version_vector(s) == vv
    assert again.space_state(s).members == state
    assert again.get_doc(s, "products", "p1") == {"_id": "p1", **TOMATO}
    again.put_doc(s, "products", "p1", {"quantity": 4})  # chain continues after reopen
    assert again.version_vector(s)[A.public_key] == vv[A.public_key] + 1
    market.a = again


def test_gap_is_held_then_drained(market: Market) -> None:
    a, b, s = market.a, market.b, market.space
    sync(a, b, s)
    base = b.version_vector(s).get(A.public_key, 0)
    for i in range(5):
        a.put_doc(s, "products", f"p{i}", {"title": f"t{i}"})
    missing = a.envelopes_since(s, b.version_vector(s), limit=100, max_bytes=1 << 20)
    assert [len(missing)] == [5]
    r = b.ingest(s, missing[2:])
    assert r.pending == 3 and not r.accepted and b.pending_count(s) == 3
    r = b.ingest(s, missing[:2])
    assert len(r.accepted) == 5 and b.pending_count(s) == 0
    assert b.version_vector(s)[A.public_key] == base + 5
    assert len(b.list_docs(s, "products")) == 5


def test_duplicates_and_bad_input_counted(market: Market) -> None:
    a, b, s = market.a, market.b, market.space
    a.put_doc(s, "products", "p1", TOMATO)
    batch = a.envelopes_since(s, {}, limit=100, max_bytes=1 << 20)
    b.ingest(s, batch)
    r = b.ingest(s, [*batch, b"\x00garbage", b""])
    assert r.duplicates == len(batch) and not r.accepted
    assert sorted(reason for _, reason in r.rejected) == ["bad_cbor", "bad_cbor"]
    m = b.metrics()
    assert m["rejected.bad_cbor"] == 2 and m["duplicates"] >= len(batch)
    r = b.ingest(b"\x09" * 32, batch[:1])
    assert r.rejected == [(None, "unknown_space")]
    assert b.metrics()["rejected.unknown_space"] == 1


def test_outsider_and_bad_content_never_materialize(market: Market) -> None:
    a, b, s = market.a, market.b, market.space
    key = a.space_state(s).epoch_key(a.space_state(s).current_epoch, A)
    epoch = a.space_state(s).current_epoch
    assert key is not None
    outsider = seal(signer=C.signing_key, space=s, seq=1, prev=None, epoch=epoch,
                    payload=b"x", group_key=key)
    r = b.ingest(s, [outsider.raw])
    assert r.pending == 1  # may become a member later: held, bounded
    junk = seal(signer=A.signing_key, space=s, seq=a.version_vector(s)[A.public_key] + 1,
                prev=_head(a, s), epoch=epoch, payload=b"not cbor",
                group_key=key)
    a.ingest(s, [junk.raw])
    assert a.metrics().get("unapplied.bad_payload") == 1
    a.put_doc(s, "products", "after", {"title": "chain still works"})
    assert a.get_doc(s, "products", "after") is not None


def _head(soil: Soil, space: bytes, author: bytes = A.public_key) -> bytes:
    rows = soil.conn.execute("SELECT head FROM vv WHERE space=? AND author=?",
                             (space, author)).fetchone()
    return bytes(rows[0])


def test_removed_member_writes_up_to_keep_only(tmp_path: Path, market: Market) -> None:
    """C's writes known to the remover stay valid everywhere (``keep`` of the remove op);
    later ones, whatever epoch they claim, are rejected as ``removed_author``."""
    a, b, s = market.a, market.b, market.space
    c = open_soil(tmp_path / "c.db", C)
    service.join(c, service.invite(a, s, did(C)))
    sync(a, c, s)
    c.put_doc(s, "products", "by-c", {"title": "written while a member"})
    sync(c, a, s)
    service.remove(a, s, did(C))
    sync(a, b, s)  # b learns of C's write and of the removal together
    assert b.get_doc(s, "products", "by-c") is not None
    assert a.version_vector(s) == b.version_vector(s)
    sync(a, c, s)
    with pytest.raises(MyceliumError):  # c holds no key for the current epoch
        c.put_doc(s, "products", "late", {"title": "written after removal"})
    state = c.space_state(s)
    old_epoch = max(state.epochs.values(), key=lambda e: C.public_key in e.recipients).id
    head = c.version_vector(s)[C.public_key]
    late = seal(signer=C.signing_key, space=s, seq=head + 1, prev=_head(c, s, C.public_key),
                epoch=old_epoch, payload=b"x", group_key=state.epoch_key(old_epoch, C))
    r = a.ingest(s, [late.raw])
    assert r.rejected == [(late.delta_id, "removed_author")]
    c.close()


def test_envelopes_since_limits_and_order(market: Market) -> None:
    a, s = market.a, market.space
    for i in range(10):
        a.put_doc(s, "products", f"p{i}", {"title": "x" * 100})
    everything = a.envelopes_since(s, {}, limit=1000, max_bytes=1 << 20)
    assert len(a.envelopes_since(s, {}, limit=3, max_bytes=1 << 20)) == 3
    assert len(a.envelopes_since(s, {}, limit=100, max_bytes=1)) == 1
    assert a.envelopes_since(s, a.version_vector(s), limit=100, max_bytes=1 << 20) == []
    assert a.envelopes_since(s, {}, limit=0, max_bytes=1 << 20) == []
    assert everything[0] == a.control_envelopes(s)[0]


def test_resolve_space(market: Market) -> None:
    a, s = market.a, market.space
    assert a.resolve_space("market") == s and a.resolve_space(s.hex()) == s
    with pytest.raises(UnknownSpace):
        a.resolve_space("nope")
    service.create_space(a, "market")
    with pytest.raises(AmbiguousSpace):
        a.resolve_space("market")


def test_database_is_sane_after_work(tmp_path: Path, market: Market) -> None:
    market.a.put_doc(market.space, "products", "p1", TOMATO)
    conn = sqlite3.connect(tmp_path / "a.db")
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_unknown_space_errors(market: Market) -> None:
    with pytest.raises(UnknownSpace):
        market.a.get_doc(b"\x01" * 32, "products", "x")
    assert market.a.version_vector(b"\x01" * 32) == {}
    assert market.a.envelopes_since(b"\x01" * 32, {}, limit=5, max_bytes=100) == []
    assert B.public_key in market.a.space_state(market.space).members


def test_far_future_delta_waits_for_the_clock(tmp_path: Path) -> None:
    from mycelium.crdt.hlc import Timestamp
    from mycelium.crdt.payload import set_fields
    from mycelium.log.limits import MAX_CLOCK_DRIFT_MS

    from .conftest import Clock

    clock = Clock()
    a = open_soil(tmp_path / "a.db", A, clock)
    space = service.create_space(a, "market")
    state = a.space_state(space)
    key = state.epoch_key(state.current_epoch, A)
    b_clock = Clock()
    b = open_soil(tmp_path / "b.db", B, b_clock)
    service.join(b, service.invite(a, space, did(B)))
    future = Timestamp(clock.now + MAX_CLOCK_DRIFT_MS + 60_000, 0, b"x")
    payload = set_fields("products", "f", {"title": "from the future"}, future).encode()
    env = seal(signer=B.signing_key, space=space, seq=1, prev=None, epoch=state.current_epoch,
               payload=payload, group_key=key)
    r = a.ingest(space, [env.raw])
    assert r.accepted == [env.delta_id]  # stored: the chain is intact
    assert a.get_doc(space, "products", "f") is None
    assert a.metrics()["deferred.clock_drift"] == 1
    assert a.hlc.last.wall_ms < future.wall_ms  # the local clock was not dragged forward
    clock.now += 2 * MAX_CLOCK_DRIFT_MS
    a.ingest(space, [])
    assert a.get_doc(space, "products", "f") == {"_id": "f", "title": "from the future"}
    assert a.metrics()["deferred_now"] == 0
    a.close()
    b.close()


def test_data_ahead_of_control_ops_is_held_then_applied(tmp_path: Path) -> None:
    a = open_soil(tmp_path / "a.db", A)
    space = service.create_space(a, "market")
    a.put_doc(space, "products", "p", {"title": "early"})
    b = open_soil(tmp_path / "b.db", B)
    b.add_space(a.genesis(space))
    everything = a.envelopes_since(space, {}, limit=100, max_bytes=1 << 20)
    controls = set(a.control_envelopes(space))
    data = [e for e in everything if e not in controls]
    r = b.ingest(space, data)  # A's chain starts with control ops: held as a gap
    assert r.pending == len(data)
    service.join(b, service.invite(a, space, did(B)))  # control ops fill the gap
    assert b.get_doc(space, "products", "p") == {"_id": "p", "title": "early"}
    sync(a, b, space)
    assert b.version_vector(space) == a.version_vector(space)
    assert b.pending_count(space) == 0
    a.close()
    b.close()


def test_data_under_an_unknown_epoch_is_deferred_until_the_key_arrives(tmp_path: Path) -> None:
    a = open_soil(tmp_path / "a.db", A)
    space = service.create_space(a, "market")
    b, c = open_soil(tmp_path / "b.db", B), open_soil(tmp_path / "c.db", C)
    service.join(b, service.invite(a, space, did(B)))
    service.join(c, service.invite(a, space, did(C)))
    service.set_role(a, space, did(C), "admin")
    for x, y in ((a, b), (a, c)):
        sync(x, y, space)
    new_epoch = service.rotate(c, space)  # an epoch op in C's chain only
    sync(c, a, space)
    assert a.space_state(space).current_epoch == new_epoch
    env = a.put_doc(space, "products", "p", {"title": "under the new epoch"})
    assert env.epoch == new_epoch
    from_a = a.envelopes_since(space, b.version_vector(space), limit=100, max_bytes=1 << 20)
    only_a = [e for e in from_a if e not in set(c.control_envelopes(space))]
    r = b.ingest(space, only_a)
    assert env.delta_id in r.accepted  # stored, chain advanced ...
    assert b.get_doc(space, "products", "p") is None  # ... but not readable yet
    assert b.metrics()["deferred.no_key"] == 1
    sync(c, b, space)  # the epoch op arrives
    assert b.get_doc(space, "products", "p") == {"_id": "p", "title": "under the new epoch"}
    assert b.metrics()["deferred_now"] == 0
    for s in (a, b, c):
        s.close()


def test_pending_is_bounded(tmp_path: Path, market: Market) -> None:
    from mycelium.store.soil import Soil as SoilClass

    a, s = market.a, market.space
    small = SoilClass.open(tmp_path / "small.db", B, max_pending=3)
    service.join(small, market.code_b)
    sync(a, small, s)
    for i in range(6):
        a.put_doc(s, "products", f"p{i}", {"title": "x"})
    missing = a.envelopes_since(s, small.version_vector(s), limit=100, max_bytes=1 << 20)
    r = small.ingest(s, missing[1:])
    assert r.pending == 3 and [reason for _, reason in r.rejected] == ["pending_full"] * 2
    assert small.metrics()["rejected.pending_full"] == 2
    small.ingest(s, missing)  # the gap is filled: everything lands
    assert small.version_vector(s) == a.version_vector(s) and small.pending_count(s) == 0
    small.close()


def test_documents_stored_in_the_first_layout_still_load_and_update(market: Market,
                                                                     tmp_path: Path) -> None:
    """Rows written before document states became DAG-CBOR with hex stamps (cbor2, byte
    stamps) are read, merged and rewritten in the new layout."""
    import cbor2

    a, s = market.a, market.space
    a.put_doc(s, "products", "p1", TOMATO)
    (body,) = a.conn.execute("SELECT body FROM docs WHERE doc='p1'").fetchone()
    state = cbor2.loads(body)
    for entry in state["f"].values():
        entry[2:4] = [bytes.fromhex(entry[2]), bytes.fromhex(entry[3])]
    state["f"] = dict(reversed(state["f"].items()))
    a.conn.execute("UPDATE docs SET body=? WHERE doc='p1'", (cbor2.dumps(state),))
    a.close()
    market.a = a = open_soil(tmp_path / "a.db", A)
    assert a.get_doc(s, "products", "p1") == {"_id": "p1", **TOMATO}
    a.put_doc(s, "products", "p1", {"status": "sold"})
    assert a.get_doc(s, "products", "p1") == {"_id": "p1", **TOMATO, "status": "sold"}
    (body,) = a.conn.execute("SELECT body FROM docs WHERE doc='p1'").fetchone()
    assert all(type(e[3]) is str for e in cbor2.loads(body)["f"].values())
