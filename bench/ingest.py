"""Soil ingest throughput: verify + decrypt + apply N deltas vs raw SQLite executemany.

Both sides write the same envelope rows to a WAL database with the same ``synchronous``
setting and the same transaction size, so the ratio shows what validation, decryption
and document materialization cost on top of storing bytes. Targets (issue #4):
>= 20k deltas/s and >= 50% of raw.
"""

from __future__ import annotations

import gc
import resource
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from mycelium.crdt.hlc import Timestamp
from mycelium.crdt.payload import set_fields
from mycelium.identity.didkey import did_from_public_key
from mycelium.identity.identity import Identity
from mycelium.log.envelope import Envelope, seal
from mycelium.spaces import service
from mycelium.store.soil import Soil

NAME = "ingest"
FULL_DELTAS = 100_000
QUICK_DELTAS = 10_000
BATCH = 2_000
AUTHORS = 4
DOCS = 20_000
TARGET_RATE = 20_000
TARGET_RATIO = 0.5


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
    soil = Soil.open(path, reader, clock=lambda: 1_700_000_000_000 + 10**7)
    space = soil.add_space(genesis)
    soil.ingest(space, control)
    gc.collect()
    start = time.perf_counter()
    for i in range(0, len(data), BATCH):
        result = soil.ingest(space, data[i:i + BATCH])
        if len(result.accepted) != len(data[i:i + BATCH]):
            raise RuntimeError(f"bench ingest refused deltas: {result.rejected[:3]}")
    return time.perf_counter() - start, soil, space


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
    n = QUICK_DELTAS if quick else FULL_DELTAS
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        genesis, control, data, reader = make_deltas(tmp, n)
        gen_s = time.perf_counter() - t0
        rss_before = _peak_rss_mb()
        soil_s, soil, space = ingest_soil(tmp / "soil.db", genesis, control, data, reader)
        rss_after = _peak_rss_mb()
        rows = [(space, bytes(a), s, bytes(d), k, bytes(e), bytes(r)) for a, s, d, k, e, r in
                soil.conn.execute("SELECT author, seq, delta_id, kind, epoch, raw FROM envelopes "
                                  "WHERE space=? AND kind=0", (space,))]
        docs = soil.conn.execute("SELECT count(*) FROM docs WHERE space=?", (space,)).fetchone()[0]
        soil.close()
        raw_s = ingest_raw(tmp / "raw.db", rows)
    rate, raw_rate = n / soil_s, n / raw_s
    return {
        "name": NAME, "quick": quick, "deltas": n, "authors": AUTHORS, "documents": docs,
        "batch": BATCH, "synchronous": "FULL", "generate_s": round(gen_s, 3),
        "soil_s": round(soil_s, 3), "deltas_per_s": round(rate),
        "raw_s": round(raw_s, 3), "raw_rows_per_s": round(raw_rate),
        "ratio_to_raw": round(rate / raw_rate, 3),
        "peak_rss_mb": round(rss_after, 1), "rss_growth_mb": round(rss_after - rss_before, 1),
        "targets": {"deltas_per_s": TARGET_RATE, "ratio_to_raw": TARGET_RATIO},
        "meets_rate": rate >= TARGET_RATE, "meets_ratio": rate / raw_rate >= TARGET_RATIO,
    }


def _peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def markdown(result: dict[str, Any]) -> str:
    return "\n".join([
        f"### ingest ({result['deltas']} deltas, {result['authors']} authors, "
        f"{result['documents']} documents, batch {result['batch']}, "
        f"synchronous={result['synchronous']})",
        "",
        "| path | seconds | per second |",
        "|---|---|---|",
        f"| Soil ingest (verify + decrypt + apply) | {result['soil_s']} | "
        f"{result['deltas_per_s']} |",
        f"| raw SQLite executemany | {result['raw_s']} | {result['raw_rows_per_s']} |",
        "",
        f"Ratio to raw: **{result['ratio_to_raw']}** (target {TARGET_RATIO}); "
        f"rate target {TARGET_RATE}/s met: {result['meets_rate']}; "
        f"peak RSS {result['peak_rss_mb']} MB (+{result['rss_growth_mb']} MB during ingest).",
    ])


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
