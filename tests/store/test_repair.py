"""A store that repairs itself (issue 17 §2): damaged document rows, version vectors and
pages of the file are found by ``repair.check`` and re-derived from the envelopes."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from mycelium.spaces import service
from mycelium.store import repair
from mycelium.store.soil import Soil

from .conftest import A, Clock, Market, open_soil, sync

TOMATO = {"title": "Tomatoes", "quantity": 5, "unit": "kg", "price": 250, "currency": "EUR",
          "location": "North", "status": "available"}


def snapshot(soil: Soil) -> dict[str, Any]:
    """Every visible document of every space, by space name and collection."""
    out: dict[str, Any] = {}
    for space in soil.space_ids():
        name = soil.space_state(space).name
        for coll in ("products", "diary", "health"):
            out[f"{name}/{coll}"] = soil.list_docs(space, coll)
    return out


def fill(soil: Soil, space: bytes, n: int = 30) -> None:
    for i in range(n):
        soil.put_doc(space, "products", f"p{i}", {**TOMATO, "quantity": i})
    for i in range(0, n, 3):
        soil.put_doc(space, "products", f"p{i}", {"status": "sold", "price": None})
    soil.delete_doc(space, "products", "p1")
    personal = soil.resolve_space("personal") if _has_personal(soil) else None
    if personal is not None:
        for i in range(5):
            soil.put_doc(personal, "diary", f"d{i}", {"body": f"day {i}"})


def _has_personal(soil: Soil) -> bool:
    return any(soil.space_kind(s) == "personal" for s in soil.space_ids())


def damage_row(soil: Soil, space: bytes, coll_key: str | None = None) -> None:
    """Overwrite one document body with bytes no decoder accepts."""
    row = soil.conn.execute("SELECT coll, doc FROM docs WHERE space=? "
                            + ("AND coll=? " if coll_key else "") + "ORDER BY doc LIMIT 1",
                            (space, coll_key) if coll_key else (space,)).fetchone()
    soil.conn.execute("UPDATE docs SET body=x'ff00ff' WHERE space=? AND coll=? AND doc=?",
                      (space, *row))


def test_ingest_repairs_an_unreadable_row_and_keeps_the_batch(
        market: Market, caplog: pytest.LogCaptureFixture) -> None:
    a, b, s = market.a, market.b, market.space
    a.put_doc(s, "products", "p1", TOMATO)
    sync(a, b, s)
    b.conn.execute("UPDATE docs SET body=x'ff00ff' WHERE space=? AND doc='p1'", (s,))
    a.put_doc(s, "products", "p1", {"status": "sold"})
    batch = a.envelopes_since(s, b.version_vector(s), limit=100, max_bytes=1 << 20)
    with caplog.at_level(logging.WARNING, logger="mycelium.store.repair"):
        result = b.ingest(s, batch)
    assert result.rejected == [] and len(result.accepted) == 1
    assert b.get_doc(s, "products", "p1") == a.get_doc(s, "products", "p1")
    assert b.list_docs(s, "products", status="sold") == [a.get_doc(s, "products", "p1")]
    assert b.metrics()["repaired_docs"] == 1 and "internal_error" not in b.metrics()
    assert sum("rebuilt from" in r.message for r in caplog.records) == 1
    assert repair.check(b).ok


def test_reads_repair_unreadable_rows(market: Market) -> None:
    a, s = market.a, market.space
    a.put_doc(s, "products", "p1", TOMATO)
    a.put_doc(s, "products", "p2", {"title": "Eggs"})
    want = a.list_docs(s, "products")
    a.conn.execute("UPDATE docs SET body=x'ff00ff' WHERE space=? AND doc='p1'", (s,))
    assert a.get_doc(s, "products", "p1") == want[0]
    a.conn.execute("UPDATE docs SET body=x'ff00ff' WHERE space=? AND doc='p2'", (s,))
    assert a.list_docs(s, "products") == want
    assert a.metrics()["repaired_docs"] == 2


def test_sealed_personal_row_repaired(tmp_path: Path) -> None:
    soil = open_soil(tmp_path / "a.db", A)
    personal = service.ensure_personal_space(soil)
    soil.put_doc(personal, "diary", "d1", {"body": "planted garlic"})
    soil.put_doc(personal, "diary", "d2", {"body": "rain"})
    want = soil.list_docs(personal, "diary")
    damage_row(soil, personal)
    assert not repair.check(soil).ok
    assert soil.list_docs(personal, "diary") == want
    damage_row(soil, personal)
    soil.put_doc(personal, "diary", "d1", {"title": "Tuesday"})
    soil.put_doc(personal, "diary", "d2", {"title": "Wednesday"})
    assert [d["body"] for d in soil.list_docs(personal, "diary")] == ["planted garlic", "rain"]
    assert repair.check(soil).ok
    soil.close()


def test_row_without_envelopes_is_removed(market: Market) -> None:
    a, s = market.a, market.space
    a.put_doc(s, "products", "p1", TOMATO)
    a.conn.execute("INSERT INTO docs SELECT space, coll, 'ghost', live, x'00' FROM docs "
                   "WHERE space=? AND doc='p1'", (s,))
    assert [d["_id"] for d in a.list_docs(s, "products")] == ["p1"]
    assert a.conn.execute("SELECT count(*) FROM docs WHERE doc='ghost'").fetchone()[0] == 0


@pytest.mark.parametrize("damage", ["row", "missing_row", "stale_row", "index", "vector",
                                    "vector_missing"])
def test_check_finds_and_rebuild_repairs(tmp_path: Path, damage: str) -> None:
    soil = open_soil(tmp_path / "a.db", A)
    service.ensure_personal_space(soil)
    space = service.create_space(soil, "market")
    fill(soil, space)
    want = snapshot(soil)
    vv = soil.version_vector(space)
    assert repair.check(soil).ok
    c = soil.conn
    if damage == "row":
        damage_row(soil, space)
    elif damage == "missing_row":
        c.execute("DELETE FROM docs WHERE space=? AND doc='p4'", (space,))
    elif damage == "stale_row":  # a readable row with an older state (an old backup)
        c.execute("UPDATE docs SET body=(SELECT body FROM docs WHERE space=? AND doc='p5') "
                  "WHERE space=? AND doc='p4'", (space, space))
    elif damage == "index":
        c.execute("DELETE FROM doc_index WHERE space=? AND doc='p4'", (space,))
    elif damage == "vector":
        c.execute("UPDATE vv SET seq=seq+7 WHERE space=?", (space,))
    else:
        c.execute("DELETE FROM vv WHERE space=?", (space,))
    report = repair.check(soil)
    assert not report.ok and report.problems, damage
    kinds = {p["kind"] for p in report.problems}
    assert kinds == {"vector" if damage.startswith("vector") else
                     "index" if damage == "index" else "document"}
    done = repair.rebuild(soil)
    assert done.documents == len(want["market/products"]) + 1 + 5  # + deleted p1, + diary
    assert repair.check(soil).ok, repair.check(soil).problems
    assert soil.version_vector(space) == vv
    assert snapshot(soil) == want
    soil.close()
    with open_soil(tmp_path / "a.db", A) as again:
        assert snapshot(again) == want and repair.check(again).ok


def test_rebuild_parks_envelopes_past_a_lost_one(tmp_path: Path) -> None:
    """An envelope row lost from the middle of a chain: the rest goes to pending, and the
    resent envelope brings everything back."""
    a = open_soil(tmp_path / "a.db", A)
    space = service.create_space(a, "market")
    fill(a, space, 6)
    want = snapshot(a)
    me = A.public_key
    head = a.version_vector(space)[me]
    lost = a.conn.execute("SELECT raw FROM envelopes WHERE space=? AND author=? AND seq=?",
                          (space, me, head - 3)).fetchone()[0]
    a.conn.execute("DELETE FROM envelopes WHERE space=? AND author=? AND seq=?",
                   (space, me, head - 3))
    report = repair.check(a)
    assert {p["kind"] for p in report.problems} >= {"chain", "vector"}
    done = repair.rebuild(a)
    assert done.parked == 3
    assert a.version_vector(space)[me] == head - 4 and a.pending_count(space) == 3
    assert repair.check(a).ok
    result = a.ingest(space, [bytes(lost)])
    assert len(result.accepted) == 4
    assert snapshot(a) == want and repair.check(a).ok
    a.close()


def _leaf_pages(path: Path, table: str) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [p for (p,) in conn.execute(
            "SELECT pageno FROM dbstat WHERE name=? AND pagetype='leaf' ORDER BY pageno",
            (table,))]
    finally:
        conn.close()


def _smash_page(path: Path, pageno: int) -> None:
    conn = sqlite3.connect(path)
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(path, "r+b") as fh:
        fh.seek((pageno - 1) * size)
        fh.write(b"\xa5" * size)


@pytest.mark.parametrize("table", ["docs", "envelopes"])
def test_damaged_page_salvaged_then_synced(tmp_path: Path, table: str) -> None:
    """A page of the file overwritten: salvage what SQLite can read, rebuild from it, and
    the envelopes on the lost page come back from a peer; documents end identical."""
    a = open_soil(tmp_path / "a.db", A)
    space = service.create_space(a, "market")
    fill(a, space, 400)
    want = snapshot(a)
    path = tmp_path / "b.db"
    b = Soil.open(path, A, clock=Clock())
    b.add_space(a.genesis(space))
    sync(a, b, space)
    assert snapshot(b) == want
    b.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    b.close()
    pages = _leaf_pages(path, table)
    assert len(pages) > 2
    _smash_page(path, pages[len(pages) // 2])
    column = "body" if table == "docs" else "raw"
    with pytest.raises(sqlite3.DatabaseError) as caught, Soil.open(path, A) as broken:
        repair.check(broken)
        broken.conn.execute(f"SELECT sum(length({column})) FROM {table}").fetchall()
    assert repair.is_corruption(caught.value)
    fresh = tmp_path / "b.salvaged.db"
    found = repair.salvage(path, fresh)
    assert found.lost and found.tables["envelopes"] > 0
    with Soil.open(fresh, A, clock=Clock()) as b2:
        repair.rebuild(b2)
        assert repair.check(b2).ok
        if table == "docs":
            assert snapshot(b2) == want
        sync(a, b2, space)
        assert snapshot(b2) == want and repair.check(b2).ok
    a.close()


def test_row_with_a_damaged_stamp_is_repaired_and_the_batch_kept(market: Market) -> None:
    """A row that loads (its layout is fine) but holds a stamp of the wrong type fails only
    in the middle of a merge: the failed chunk leads to a scan, the row is rebuilt and the
    chunk stored on the retry."""
    from mycelium.codec import cbor

    a, b, s = market.a, market.b, market.space
    a.put_doc(s, "products", "p1", TOMATO)
    a.put_doc(s, "products", "p2", {"title": "Eggs"})
    sync(a, b, s)
    body = bytes(b.conn.execute("SELECT body FROM docs WHERE space=? AND doc='p1'",
                                (s,)).fetchone()[0])
    state = cbor.decode(body)
    state["f"]["title"][0] = "not a wall clock"
    b.conn.execute("UPDATE docs SET body=? WHERE space=? AND doc='p1'", (cbor.encode(state), s))
    assert repair.damaged_rows(b, s) == [("products", "p1")]
    a.put_doc(s, "products", "p1", {"title": "Tomatoes, ripe"})  # compared with the damage
    a.put_doc(s, "products", "p2", {"status": "sold"})
    result = b.ingest(s, a.envelopes_since(s, b.version_vector(s), limit=100,
                                           max_bytes=1 << 20))
    assert result.rejected == [] and len(result.accepted) == 2
    assert b.list_docs(s, "products") == a.list_docs(s, "products")
    assert "internal_error" not in b.metrics() and b.metrics()["repaired_docs"] == 1
    assert repair.check(b).ok


def test_ingest_on_a_damaged_page_never_raises_and_says_the_way_out(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a = open_soil(tmp_path / "a.db", A)
    space = service.create_space(a, "market")
    fill(a, space, 400)
    path = tmp_path / "b.db"
    with Soil.open(path, A, clock=Clock()) as b:
        b.add_space(a.genesis(space))
        sync(a, b, space)
        b.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for page in _leaf_pages(path, "docs"):
        _smash_page(path, page)
    for i in range(400):
        a.put_doc(space, "products", f"p{i}", {"status": "reserved"})
    with Soil.open(path, A, clock=Clock()) as b, caplog.at_level(logging.ERROR):
        result = b.ingest(space, a.envelopes_since(space, b.version_vector(space), limit=50,
                                                   max_bytes=1 << 22))
    assert result.rejected and {r for _, r in result.rejected} == {"internal_error"}
    assert any("store rebuild" in r.message for r in caplog.records)
    a.close()
