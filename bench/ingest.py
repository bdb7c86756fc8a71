"""Soil ingest throughput: verify + decrypt + apply N deltas vs raw SQLite executemany.

Two raw baselines run in the same process, on the same kind of database (WAL,
``synchronous=FULL``, same transaction size):

* **same rows** (the ratio the target refers to): every write statement Soil issued
  during an identical ingest — envelope, document, index and version-vector rows, with
  the same transaction boundaries — is recorded, then replayed with ``executemany`` into a
  fresh database with Soil's schema and connection settings. The ratio is then the share
  of ingest time that is storage; the rest is verification, decryption, CBOR and CRDT
  work in Python.
* **envelope rows only**: one ``executemany`` of the envelope rows into a one-table
  database (the baseline of the first measurements; it ignores the document, index and
  vector rows that ingest also writes, so its ratio understates Soil).

Targets (issue #4): >= 20k deltas/s and >= 50% of the raw insert rate.
"""

from __future__ import annotations

import gc
import resource
import sqlite3
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mycelium import accel
from mycelium.crdt.hlc import Timestamp
from mycelium.crdt.payload import set_fields
from mycelium.identity.didkey import did_from_public_key
from mycelium.identity.identity import Identity
from mycelium.log.envelope import Envelope, seal
from mycelium.spaces import service
from mycelium.store.schema import connect
from mycelium.store.soil import Soil

NAME = "ingest"
FULL_DELTAS = 100_000
QUICK_DELTAS = 10_000
BATCH = 2_000
AUTHORS = 4
DOCS = 20_000
TARGET_RATE = 20_000
TARGET_RATIO = 0.5
#: Interleaved (ingest, replay) rounds; the best of each counts (see :func:`run`).
ROUNDS = 3


def make_deltas(tmp: Path, n: int) -> tuple[bytes, list[bytes], list[bytes], Identity]:
    """A community space with AUTHORS writers; returns (genesis, control, data, reader)."""
    writers = [Identity.from_seed(bytes([10 + i]) * 32) for i in range(AUTHORS)]
    reader = Identity.from_seed(b"\x63" * 32)
    admin = Soil.open(tmp / "admin.db", writers[0], synchronous="NORMAL")
    space = service.create_space(admin, "bench", now_ms=1)
    for who in [*writers[1:], reader]:
        service.invite(admin, space, did_from_public_key(who.public_key))
    state = admin.space_state(space)
    epoch = state.current_epoch
    key = state.epoch_key(epoch, writers[0])
    assert key is not None
    control = admin.control_envelopes(space)
    heads: dict[bytes, tuple[int, bytes | None]] = {w.public_key: (0, None) for w in writers}
    heads[writers[0].public_key] = (admin.version_vector(space)[writers[0].public_key],
                                    _head(admin, space, writers[0].public_key))
    data: list[bytes] = []
    for i in range(n):
        w = writers[i % AUTHORS]
        seq, prev = heads[w.public_key]
        payload = set_fields("products", f"p{i % DOCS}",
                             {"title": f"item {i}", "quantity": i % 50, "status": "available",
                              "location": "north" if i % 2 else "south"},
                             Timestamp(1_700_000_000_000 + i, 0, w.public_key[:8])).encode()
        env: Envelope = seal(signer=w.signing_key, space=space, seq=seq + 1, prev=prev,
                             epoch=epoch, payload=payload, group_key=key)
        heads[w.public_key] = (env.seq, env.delta_id)
        data.append(env.raw)
    genesis = admin.genesis(space)
    admin.close()
    return genesis, control, data, reader


def _head(soil: Soil, space: bytes, author: bytes) -> bytes:
    row = soil.conn.execute("SELECT head FROM vv WHERE space=? AND author=?",
                            (space, author)).fetchone()
    return bytes(row[0])


def ingest_soil(path: Path, genesis: bytes, control: list[bytes], data: list[bytes],
                reader: Identity) -> tuple[float, Soil, bytes]:
    soil, space = _prepared_soil(path, genesis, control, reader)
    gc.collect()
    start = time.perf_counter()
    _ingest_batches(soil, space, data)
    return time.perf_counter() - start, soil, space


def _prepared_soil(path: Path, genesis: bytes, control: list[bytes],
                   reader: Identity) -> tuple[Soil, bytes]:
    """A reader's store that knows the space and its membership (not timed)."""
    soil = Soil.open(path, reader, clock=lambda: 1_700_000_000_000 + 10**7)
    space = soil.add_space(genesis)
    soil.ingest(space, control)
    return soil, space


def _ingest_batches(soil: Soil, space: bytes, data: list[bytes]) -> None:
    for i in range(0, len(data), BATCH):
        result = soil.ingest(space, data[i:i + BATCH])
        if len(result.accepted) != len(data[i:i + BATCH]):
            raise RuntimeError(f"bench ingest refused deltas: {result.rejected[:3]}")


class _RecordingConnection:
    """Passes every call to the real connection and records the write statements with
    their rows (reads are Soil's own work, not storage)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.writes: list[tuple[str, list[tuple[Any, ...]]]] = []

    def execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        if not sql.lstrip().upper().startswith("SELECT"):
            self.writes.append((sql, [tuple(params)]))
        return self._conn.execute(sql, tuple(params))

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> sqlite3.Cursor:
        listed = [tuple(r) for r in rows]
        self.writes.append((sql, listed))
        return self._conn.executemany(sql, listed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def record_writes(tmp: Path, genesis: bytes, control: list[bytes], data: list[bytes],
                  reader: Identity) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The write statements of an ingest identical to the timed one (untimed)."""
    soil, space = _prepared_soil(tmp / "recorded.db", genesis, control, reader)
    recorder = _RecordingConnection(soil.conn)
    soil.conn = recorder  # type: ignore[assignment]
    try:
        _ingest_batches(soil, space, data)
    finally:
        soil.conn = recorder._conn
        soil.close()
    return recorder.writes


def replay_writes(tmp: Path, genesis: bytes, control: list[bytes], reader: Identity,
                  writes: list[tuple[str, list[tuple[Any, ...]]]]) -> float:
    """Seconds to execute ``writes`` (same statements, rows and transactions) into a
    database prepared exactly like the timed one, on Soil's own connection settings."""
    path = tmp / "replay.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    _prepared_soil(path, genesis, control, reader)[0].close()
    conn = connect(path)
    gc.collect()
    start = time.perf_counter()
    for sql, rows in writes:
        if len(rows) == 1:
            conn.execute(sql, rows[0])
        else:
            conn.executemany(sql, rows)
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def ingest_raw(path: Path, rows: list[tuple[Any, ...]]) -> float:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE envelopes (space BLOB, author BLOB, seq INTEGER, delta_id BLOB, "
                 "kind INTEGER, epoch BLOB, raw BLOB, PRIMARY KEY (space, author, seq)) "
                 "WITHOUT ROWID")
    gc.collect()
    start = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO envelopes VALUES (?, ?, ?, ?, ?, ?, ?)", rows[i:i + BATCH])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def run(quick: bool = False) -> dict[str, Any]:
    """ROUNDS rounds of (Soil ingest, same-rows replay), interleaved so both meet the same
    machine weather; the best of each is reported (like ``timeit``: noise only ever adds
    time), and every round's ratio too."""
    n = QUICK_DELTAS if quick else FULL_DELTAS
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        genesis, control, data, reader = make_deltas(tmp, n)
        gen_s = time.perf_counter() - t0
        soil_runs: list[float] = []
        same_runs: list[float] = []
        for i in range(ROUNDS):
            if i == 0:  # memory is measured on the first ingest, before anything else grows
                rss_before = _peak_rss_mb()
            soil_s, soil, space = ingest_soil(tmp / f"soil{i}.db", genesis, control, data, reader)
            if i == 0:
                rss_after = _peak_rss_mb()
                rows = _envelope_rows(soil, space)
                docs = soil.conn.execute("SELECT count(*) FROM docs WHERE space=?",
                                         (space,)).fetchone()[0]
                writes = record_writes(tmp, genesis, control, data, reader)
            soil.close()
            soil_runs.append(soil_s)
            same_runs.append(replay_writes(tmp / f"replay{i}", genesis, control, reader, writes))
        raw_s = ingest_raw(tmp / "raw.db", rows)
    soil_s, same_s = min(soil_runs), min(same_runs)
    rate, same_rate, raw_rate = n / soil_s, n / same_s, n / raw_s
    same_rows = sum(len(r) for sql, r in writes
                    if sql.lstrip().upper().startswith(("INSERT", "DELETE")))
    return {
        "name": NAME, "quick": quick, "deltas": n, "authors": AUTHORS, "documents": docs,
        "batch": BATCH, "synchronous": "FULL", "generate_s": round(gen_s, 3), "rounds": ROUNDS,
        "soil_s": round(soil_s, 3), "deltas_per_s": round(rate),
        "soil_runs_s": [round(t, 3) for t in soil_runs],
        "same_rows": same_rows, "same_rows_s": round(same_s, 3),
        "same_rows_deltas_per_s": round(same_rate),
        "same_rows_runs_s": [round(t, 3) for t in same_runs],
        "ratio_to_raw": round(rate / same_rate, 3),
        "ratio_per_round": [round(b / a, 3) for a, b in zip(soil_runs, same_runs, strict=True)],
        "raw_s": round(raw_s, 3), "raw_rows_per_s": round(raw_rate),
        "ratio_to_envelope_rows_only": round(rate / raw_rate, 3),
        "peak_rss_mb": round(rss_after, 1), "rss_growth_mb": round(rss_after - rss_before, 1),
        "compiled_path": accel.active(), "compiled_path_off_because": accel.disabled_reason,
        "targets": {"deltas_per_s": TARGET_RATE, "ratio_to_raw": TARGET_RATIO},
        "meets_rate": rate >= TARGET_RATE, "meets_ratio": rate / same_rate >= TARGET_RATIO,
    }


def _envelope_rows(soil: Soil, space: bytes) -> list[tuple[Any, ...]]:
    return [(space, bytes(a), s, bytes(d), k, bytes(e), bytes(r)) for a, s, d, k, e, r in
            soil.conn.execute("SELECT author, seq, delta_id, kind, epoch, raw FROM envelopes "
                              "WHERE space=? AND kind=0", (space,))]


def _peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def markdown(result: dict[str, Any]) -> str:
    return "\n".join([
        f"### ingest ({result['deltas']} deltas, {result['authors']} authors, "
        f"{result['documents']} documents, batch {result['batch']}, "
        f"synchronous={result['synchronous']})",
        "",
        "| path | seconds | deltas per second |",
        "|---|---|---|",
        f"| Soil ingest (verify + decrypt + apply) | {result['soil_s']} | "
        f"{result['deltas_per_s']} |",
        f"| raw SQLite executemany, same rows ({result['same_rows']} rows: envelopes, "
        f"documents, index, vectors) | {result['same_rows_s']} | "
        f"{result['same_rows_deltas_per_s']} |",
        f"| raw SQLite executemany, envelope rows only | {result['raw_s']} | "
        f"{result['raw_rows_per_s']} |",
        "",
        f"Best of {result['rounds']} interleaved rounds (Soil runs {result['soil_runs_s']} s, "
        f"same-rows replays {result['same_rows_runs_s']} s; ratio per round "
        f"{result['ratio_per_round']}).",
        "",
        f"Ratio to raw (same rows): **{result['ratio_to_raw']}** (target {TARGET_RATIO}; "
        f"envelope rows only: {result['ratio_to_envelope_rows_only']}); "
        f"rate target {TARGET_RATE}/s met: {result['meets_rate']}; "
        f"peak RSS {result['peak_rss_mb']} MB (+{result['rss_growth_mb']} MB during ingest).",
        "",
        "Compiled ingest path (docs/accel.md): "
        + ("on" if result.get("compiled_path") else
           f"**off** ({result.get('compiled_path_off_because')})") + ".",
    ])


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
