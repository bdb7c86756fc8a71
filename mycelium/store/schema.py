"""Soil's SQLite schema and connection settings (DESIGN.md §4).

Durability choice: WAL with ``synchronous=FULL``. In WAL mode ``NORMAL`` already survives
a crash of the *process* (SIGKILL) with a consistent database, but a power loss can undo
the last transactions — and a transaction here is an acknowledgement (to a user who saw
"saved", or to a peer whose delta we accepted). ``FULL`` fsyncs the WAL at every commit,
so what was acknowledged survives power loss too; batching many envelopes per transaction
keeps the cost to one fsync per batch. Callers that accept the weaker guarantee (bulk
imports, benchmarks of the CPU path) may pass ``synchronous="NORMAL"``.

``envelopes.epoch`` is the uint64 epoch id as 8 big-endian bytes (SQLite integers are
signed 64-bit); the raw envelope bytes are kept exactly as received.

``deferred`` rows are found by what can make them applicable, never by a scan: ``due``
(wall-clock ms from which a ``clock_drift`` row may apply) and ``epoch`` (the epoch whose
key a ``no_key`` row waits for), each behind an index. Schema 2 added both columns;
:func:`connect` adds them to a schema-1 database (old rows get ``due = 0``, so they are
retried once and then re-filed with their real due time and epoch).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Literal

SCHEMA_VERSION = 2
Synchronous = Literal["FULL", "NORMAL"]

DDL = """
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY, value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spaces (
  space BLOB PRIMARY KEY, genesis BLOB NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,
  added INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS envelopes (
  space BLOB NOT NULL, author BLOB NOT NULL, seq INTEGER NOT NULL, delta_id BLOB NOT NULL,
  kind INTEGER NOT NULL, epoch BLOB NOT NULL, raw BLOB NOT NULL,
  PRIMARY KEY (space, author, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vv (
  space BLOB NOT NULL, author BLOB NOT NULL, seq INTEGER NOT NULL, head BLOB NOT NULL,
  PRIMARY KEY (space, author)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
  space BLOB NOT NULL, author BLOB NOT NULL, seq INTEGER NOT NULL, delta_id BLOB NOT NULL,
  reason TEXT NOT NULL, raw BLOB NOT NULL,
  PRIMARY KEY (space, author, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deferred (
  space BLOB NOT NULL, author BLOB NOT NULL, seq INTEGER NOT NULL, reason TEXT NOT NULL,
  due INTEGER NOT NULL DEFAULT 0, epoch BLOB NOT NULL DEFAULT x'',
  PRIMARY KEY (space, author, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS docs (
  space BLOB NOT NULL, coll TEXT NOT NULL, doc TEXT NOT NULL, live INTEGER NOT NULL,
  body BLOB NOT NULL,
  PRIMARY KEY (space, coll, doc)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS doc_index (
  space BLOB NOT NULL, coll TEXT NOT NULL, field TEXT NOT NULL, value ANY, doc TEXT NOT NULL,
  PRIMARY KEY (space, coll, field, value, doc)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS metrics (
  name TEXT PRIMARY KEY, value INTEGER NOT NULL
) WITHOUT ROWID;
"""


def _bind_bytes_without_adapting() -> None:
    """Let ``bytes`` parameters skip CPython's adaptation protocol.

    The ``sqlite3`` module binds int, float, str and bytearray directly but runs the
    PEP 246 adaptation for every ``bytes`` parameter: two attribute lookups that fail and
    build an ``AttributeError`` message each time, ~0.2 µs per parameter. Every envelope,
    document and index row binds several blobs, so that was ~4 % of ingest. With ``bytes``
    registered as its own adapter the lookup hits at once, and ``bytes(b)`` returns ``b``
    itself (no copy). Process-wide, and harmless to any other sqlite3 user: values are
    bound exactly as before (tested)."""
    sqlite3.register_adapter(bytes, bytes)


_bind_bytes_without_adapting()


def connect(path: Path, synchronous: Synchronous = "FULL") -> sqlite3.Connection:
    """Open (creating if needed) a Soil database with our pragmas and schema."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=5000")
    _enable_wal(conn)
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA cache_size=-32768")  # 32 MiB: documents are updated in place
    conn.executescript(DDL)  # CREATE ... IF NOT EXISTS: each statement atomic on its own
    # Migrations and the schema row under one write lock: a node and a CLI command opening
    # a new store together must not both add a column or insert the row (busy_timeout
    # makes the second wait, then it sees the first one's work).
    conn.execute("BEGIN IMMEDIATE")
    try:
        _migrate(conn)
        row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        elif row[0] != SCHEMA_VERSION:
            conn.execute("UPDATE meta SET value=? WHERE key='schema'", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return conn


def _enable_wal(conn: sqlite3.Connection, deadline_s: float = 5.0) -> None:
    """``PRAGMA journal_mode=WAL``, retried while another process switches a new file.

    SQLite answers "database is locked" at once, without calling the busy handler, when
    two connections switch a fresh database's journal mode together (seen when a node
    and a CLI command create one store at the same moment): retry, bounded in time.
    """
    deadline = time.monotonic() + deadline_s
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring an older database to :data:`SCHEMA_VERSION` (idempotent)."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(deferred)")}
    if "due" not in columns:
        conn.execute("ALTER TABLE deferred ADD COLUMN due INTEGER NOT NULL DEFAULT 0")
    if "epoch" not in columns:
        conn.execute("ALTER TABLE deferred ADD COLUMN epoch BLOB NOT NULL DEFAULT x''")
        conn.execute("UPDATE deferred SET epoch=(SELECT e.epoch FROM envelopes e WHERE "
                     "e.space=deferred.space AND e.author=deferred.author AND e.seq=deferred.seq)"
                     " WHERE epoch=x''")
    conn.execute("CREATE INDEX IF NOT EXISTS deferred_due ON deferred (space, reason, due)")
    conn.execute("CREATE INDEX IF NOT EXISTS deferred_epoch ON deferred (space, reason, epoch)")
