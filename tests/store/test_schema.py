"""Connection settings of Soil's database that are not visible in its rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mycelium.store import schema


def test_bytes_parameters_skip_adaptation_and_bind_unchanged(tmp_path: Path) -> None:
    assert sqlite3.adapters[(bytes, sqlite3.PrepareProtocol)] is bytes
    blob = bytes(range(256)) * 3
    assert bytes(blob) is blob  # the adapter hands back the same object: no copy
    conn = schema.connect(tmp_path / "s.db")
    conn.execute("CREATE TABLE t (b BLOB, e BLOB)")
    conn.execute("INSERT INTO t VALUES (?, ?)", (blob, b""))
    row = conn.execute("SELECT b, e, typeof(b), typeof(e) FROM t").fetchone()
    assert row == (blob, b"", "blob", "blob")
    conn.close()
