"""Re-deriving Soil's derived tables from the envelopes it holds (issue 17 §2).

The envelopes are the source of truth: every row of ``docs``, ``doc_index`` and ``vv`` is
a function of the stored envelopes (and of the ``deferred`` rows, which say which
envelopes are stored but not applied yet). So a damaged derived row never needs a peer:

* :func:`repair_row` rebuilds one document row that cannot be read, inside the caller's
  transaction (Soil calls it on the fly when a row fails to load, so the batch that
  touched the row is not lost);
* :func:`check` reports what is wrong without changing anything (``mycelium store check``);
* :func:`rebuild` re-derives every ``vv``, ``docs`` and ``doc_index`` row of every space in
  one transaction (``mycelium store rebuild``);
* :func:`salvage` copies every row SQLite can still read out of a file SQLite calls
  corrupt into a fresh file, which :func:`rebuild` then completes; what was lost is synced
  again from peers.

The derivation here is deliberately written against the public building blocks (envelope
decoding, epoch keys, payload decoding, schema checks, ``DocState.apply``) and not against
Soil's ingest pipeline: a test compares its result with what the incremental path wrote,
so a divergence between the two shows up instead of being copied.

Cost: re-deriving one document decrypts every DATA envelope of its space (the envelope
table has no plaintext document column). That is the rare path; ``store rebuild`` makes
the same single pass for all documents at once.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mycelium.crdt import payload as payloads
from mycelium.crdt.doc import DocState
from mycelium.errors import MyceliumError
from mycelium.log import envelope as envelope_mod
from mycelium.log.envelope import Kind
from mycelium.store.atrest import DocCodec
from mycelium.store.schema import DDL

if TYPE_CHECKING:
    from mycelium.store.soil import Soil

log = logging.getLogger(__name__)

#: Called with the number of envelopes just processed (drives a progress bar).
Progress = Callable[[int], None]
#: ``(coll, doc)`` of a document; its row key is ``codec.row_keys(coll, doc)``.
DocKey = tuple[str, str]
_CORRUPT = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})


class StoreDamaged(MyceliumError):
    """The database file itself is damaged (SQLite says so): the way out is a rebuild."""

    reason = "store_damaged"


def is_corruption(exc: BaseException) -> bool:
    """Whether SQLite reports the file itself as damaged (not busy, not full, not a bug)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    name = getattr(exc, "sqlite_errorname", None)
    if name is not None:
        return name in _CORRUPT
    text = str(exc)
    return "malformed" in text or "not a database" in text


def damaged_message(path: Path | str, exc: BaseException) -> str:
    """The one line a user sees for a damaged file, with the way out."""
    return (f"the store {path} is damaged (SQLite: {exc}); run `mycelium store rebuild` to "
            "rebuild it from the envelopes that remain, then sync the rest from peers")


def db_file(conn: sqlite3.Connection) -> str:
    """The file behind ``conn`` (for messages; SQLite answers without reading a page)."""
    try:
        rows = conn.execute("PRAGMA database_list").fetchall()
    except sqlite3.Error:
        return "soil.db"
    return next((str(r[2]) for r in rows if r[1] == "main" and r[2]), "soil.db")


def codec_of(soil: Soil, space: bytes) -> DocCodec:
    """The row layout of ``space`` (sealed under the storage key for the personal space)."""
    personal = soil.space_kind(space) == "personal"
    return DocCodec(space, soil.identity.storage_key if personal else None)


# -- deriving documents from envelopes ---------------------------------------------------
@dataclass
class Derived:
    """The documents of one space as its envelopes define them."""

    docs: dict[DocKey, DocState] = field(default_factory=dict)
    envelopes: int = 0
    applied: int = 0
    #: Envelopes that are stored but carry nothing applicable (undecryptable, schema
    #: violation): the incremental path keeps and counts them too, never materializes them.
    unusable: int = 0


def derive(soil: Soil, space: bytes, *, only: set[tuple[str, str]] | None = None,
           progress: Progress | None = None) -> Derived:
    """Replay the stored DATA envelopes of ``space`` into fresh document states.

    ``only`` restricts the result to documents with these row keys (``(coll_key,
    doc_key)``, which is all a sealed row reveals). Envelopes listed in ``deferred`` are
    stored but not applied yet (no key, clock ahead), so they are left out here too. LWW
    merging is commutative and idempotent, so replay order does not matter.
    """
    state = soil.space_state(space)
    codec = codec_of(soil, space)
    kind = state.kind
    deferred = {(bytes(a), s) for a, s in soil.conn.execute(
        "SELECT author, seq FROM deferred WHERE space=?", (space,))}
    keys: dict[int, bytes | None] = {}
    out = Derived()
    for batch in _batches(soil.conn.execute(
            "SELECT author, seq, raw FROM envelopes WHERE space=? AND kind=? "
            "ORDER BY author, seq", (space, int(Kind.DATA)))):
        for author, seq, raw in batch:
            out.envelopes += 1
            if (bytes(author), seq) in deferred:
                continue
            payload = _open(soil, state, keys, bytes(raw), kind)
            if payload is None:
                out.unusable += 1
                continue
            doc_key = (payload.coll, payload.doc)
            if only is not None and codec.row_keys(*doc_key) not in only:
                continue
            doc = out.docs.get(doc_key)
            if doc is None:
                doc = out.docs[doc_key] = DocState()
            doc.apply(payload, bytes(author))
            out.applied += 1
        if progress is not None:
            progress(len(batch))
    return out


def _batches(rows: sqlite3.Cursor, size: int = 500) -> Iterator[list[Any]]:
    while True:
        batch = rows.fetchmany(size)
        if not batch:
            return
        yield batch


def _open(soil: Soil, state: Any, keys: dict[int, bytes | None], raw: bytes,
          kind: Any) -> payloads.Payload | None:
    try:
        env = envelope_mod.decode(raw)
        if env.epoch not in keys:
            keys[env.epoch] = state.epoch_key(env.epoch, soil.identity)
        key = keys[env.epoch]
        if key is None:
            return None
        payload = payloads.decode_payload(env.open(key))
        soil.registry.check(payload, kind)
    except MyceliumError:
        return None
    return payload


def write_docs(soil: Soil, space: bytes, docs: dict[DocKey, DocState]) -> None:
    """Replace the rows (document and index) of ``docs``; the caller holds a transaction."""
    codec = codec_of(soil, space)
    rows, index = [], []
    for (coll, doc), state in docs.items():
        live, body, values = codec.row(coll, doc, state, soil.registry.indexed(coll))
        rows.append((space, *codec.row_keys(coll, doc), int(live), body))
        if values is not None:
            soil.conn.execute("DELETE FROM doc_index WHERE space=? AND coll=? AND doc=?",
                              (space, coll, doc))
            index += [(space, coll, name, value, doc) for name, value in values.items()]
    soil.conn.executemany("INSERT OR REPLACE INTO docs VALUES (?, ?, ?, ?, ?)", rows)
    soil.conn.executemany("INSERT OR IGNORE INTO doc_index VALUES (?, ?, ?, ?, ?)", index)


def repair_row(soil: Soil, space: bytes, coll_key: str,
               doc_key: str) -> tuple[DocKey, DocState] | None:
    """Rebuild the document row with row key ``(coll_key, doc_key)`` from the envelopes,
    in the caller's transaction: ``((coll, doc), state)``, or None (row deleted) if no
    stored envelope applies to it. Logged once per repair; the caller counts it
    (``repaired_docs``) and carries on with the returned state."""
    derived = derive(soil, space, only={(coll_key, doc_key)})
    sealed = soil.space_kind(space) == "personal"
    label = "<sealed>" if sealed else f"{coll_key}/{doc_key}"
    if not derived.docs:
        soil.conn.execute("DELETE FROM docs WHERE space=? AND coll=? AND doc=?",
                          (space, coll_key, doc_key))
        if not sealed:
            soil.conn.execute("DELETE FROM doc_index WHERE space=? AND coll=? AND doc=?",
                              (space, coll_key, doc_key))
        log.warning("document row %s in space %s could not be read and no envelope defines "
                    "it; row removed", label, space.hex()[:16])
        return None
    write_docs(soil, space, derived.docs)
    log.warning("document row %s in space %s could not be read; rebuilt from %d envelopes",
                label, space.hex()[:16], derived.applied)
    key, state = next(iter(derived.docs.items()))
    return key, state


def damaged_rows(soil: Soil, space: bytes) -> list[tuple[str, str]]:
    """Row keys of the document rows of ``space`` that cannot be read, or that read but
    hold values of the wrong type (a stamp that is not ints and hex text, a deleted flag
    that is not a bool): loading checks only the layout, so such a row fails later, in
    the middle of a merge. A full scan: Soil runs it only after an ingest failed."""
    codec = codec_of(soil, space)
    colls = {codec.coll_key(name): name for name in soil.registry.indexed_map}
    bad = []
    for coll_key, doc_key, body in soil.conn.execute(
            "SELECT coll, doc, body FROM docs WHERE space=?", (space,)).fetchall():
        try:
            if codec.sealed:
                _, state_bytes = codec.open_sealed(colls[coll_key], None, bytes(body),
                                                   doc_key=doc_key)
                state = DocState.decode(state_bytes)
            else:
                state = DocState.decode(bytes(body))
            sound = _sound(state)
        except Exception:  # any way a row can fail to load counts as damaged
            sound = False
        if not sound:
            bad.append((coll_key, doc_key))
    return bad


def _sound(state: DocState) -> bool:
    stamps = [entry[:4] for entry in state.fields.values()]
    if state.tomb is not None:
        stamps.append(state.tomb)
    return all(len(s) == 4 and type(s[0]) is int and type(s[1]) is int
               and type(s[2]) is str and type(s[3]) is str for s in stamps) and all(
        type(entry[4]) is bool for entry in state.fields.values())


# -- chains and version vectors ----------------------------------------------------------
@dataclass
class Chains:
    """The contiguous prefix of every author's chain in one space."""

    heads: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)
    #: ``(author, seq, reason)`` of stored envelopes that do not continue their chain.
    broken: list[tuple[bytes, int, str]] = field(default_factory=list)


def chains(conn: sqlite3.Connection, space: bytes) -> Chains:
    """Walk every author's stored envelopes from seq 1: the head of the contiguous prefix,
    and every envelope past a break (gap, wrong ``prev``, row not matching its bytes)."""
    out = Chains()
    author: bytes | None = None
    head: tuple[int, bytes | None] = (0, None)
    broken = False
    rows = conn.execute("SELECT author, seq, delta_id, raw FROM envelopes WHERE space=? "
                        "ORDER BY author, seq", (space,))
    for batch in _batches(rows):
        for a, seq, delta_id, raw in batch:
            a = bytes(a)
            if a != author:
                author, head, broken = a, (0, None), False
            problem = None if broken else _link_problem(space, a, seq, bytes(delta_id),
                                                        bytes(raw), head)
            if broken or problem is not None:
                broken = True
                out.broken.append((a, seq, problem or "after_break"))
                continue
            head = (seq, bytes(delta_id))
            out.heads[a] = (seq, bytes(delta_id))
    return out


def _link_problem(space: bytes, author: bytes, seq: int, delta_id: bytes, raw: bytes,
                  head: tuple[int, bytes | None]) -> str | None:
    try:
        env = envelope_mod.decode(raw)
    except MyceliumError:
        return "undecodable"
    if env.space != space or env.author != author or env.seq != seq:
        return "row_mismatch"
    if env.delta_id != delta_id:
        return "delta_id_mismatch"
    if seq != head[0] + 1:
        return "gap"
    if env.prev != head[1]:
        return "prev_mismatch"
    return None


# -- check --------------------------------------------------------------------------------
@dataclass
class Report:
    """What :func:`check` found; ``problems`` holds one dict per finding."""

    integrity: list[str] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.integrity == ["ok"] and not self.problems

    def add(self, kind: str, space: bytes | None, detail: str) -> None:
        self.problems.append({"kind": kind, "space": space.hex() if space else None,
                              "detail": detail})

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "integrity": self.integrity, "problems": self.problems,
                "counts": self.counts}


def integrity(conn: sqlite3.Connection) -> list[str]:
    """SQLite's own verdict on the file: ``["ok"]`` or its messages (at most 100)."""
    return [str(r[0]) for r in conn.execute("PRAGMA integrity_check(100)")]


def check(soil: Soil, progress: Progress | None = None) -> Report:
    """Everything ``store check`` verifies, without changing anything.

    SQLite's ``integrity_check``; per space: every author's chain is contiguous and every
    row matches its bytes; the version vector equals the chain heads; every document row
    can be read and equals what the envelopes define (so a stale or missing row shows up,
    not only an unreadable one); the index rows match the documents.
    """
    report = Report(integrity=integrity(soil.conn))
    counts = report.counts
    for space in soil.space_ids():
        found = chains(soil.conn, space)
        for author, seq, reason in found.broken:
            report.add("chain", space, f"author {author.hex()[:16]} seq {seq}: {reason}")
        stored_vv = {bytes(a): (s, bytes(h)) for a, s, h in soil.conn.execute(
            "SELECT author, seq, head FROM vv WHERE space=?", (space,))}
        for author in sorted(stored_vv.keys() | found.heads.keys()):
            have, want = stored_vv.get(author), found.heads.get(author)
            if have != want:
                report.add("vector", space, f"author {author.hex()[:16]}: table says "
                           f"{_head(have)}, envelopes say {_head(want)}")
        counts["envelopes"] = counts.get("envelopes", 0) + sum(s for s, _ in found.heads.values())
        _check_docs(soil, space, report, progress)
    return report


def _head(head: tuple[int, bytes] | None) -> str:
    return "nothing" if head is None else f"seq {head[0]}"


def _check_docs(soil: Soil, space: bytes, report: Report, progress: Progress | None) -> None:
    codec = codec_of(soil, space)
    derived = derive(soil, space, progress=progress)
    want = {codec.row_keys(*k): (k, s) for k, s in derived.docs.items()}
    seen: set[tuple[str, str]] = set()
    counts = report.counts
    index_want: set[tuple[Any, ...]] = set()
    for coll_key, doc_key, body in soil.conn.execute(
            "SELECT coll, doc, body FROM docs WHERE space=?", (space,)):
        counts["documents"] = counts.get("documents", 0) + 1
        row_key = (coll_key, doc_key)
        seen.add(row_key)
        expected = want.get(row_key)
        label = doc_key if codec.storage_key is None else "<sealed>"
        if expected is None:
            report.add("document", space, f"row {coll_key}/{label} has no envelopes")
            continue
        (coll, doc), state = expected
        try:
            stored = codec.open(coll, doc, bytes(body))
        except Exception as exc:  # any way a row can fail to load counts as unreadable
            report.add("document", space, f"row {coll}/{label} cannot be read: {exc}")
            continue
        if stored != state:
            report.add("document", space, f"row {coll}/{label} differs from its envelopes")
    for row_key, ((coll, doc), _state) in want.items():
        if row_key not in seen:
            label = doc if codec.storage_key is None else "<sealed>"
            report.add("document", space, f"row {coll}/{label} is missing")
    if codec.storage_key is not None:
        return
    for (coll, doc), state in derived.docs.items():
        for name, value in state.values_of(soil.registry.indexed(coll)).items():
            index_want.add((coll, name, value, doc))
    index_have = {tuple(r) for r in soil.conn.execute(
        "SELECT coll, field, value, doc FROM doc_index WHERE space=?", (space,))}
    if index_have != index_want:
        report.add("index", space, f"{len(index_have - index_want)} stale and "
                   f"{len(index_want - index_have)} missing index rows")


# -- rebuild ------------------------------------------------------------------------------
@dataclass
class Rebuilt:
    spaces: int = 0
    envelopes: int = 0
    documents: int = 0
    #: Envelopes moved out of the chain into ``pending`` (a gap before them): they are
    #: appended again as soon as a peer resends what is missing.
    parked: int = 0

    def to_json(self) -> dict[str, int]:
        return {"spaces": self.spaces, "envelopes": self.envelopes,
                "documents": self.documents, "parked": self.parked}


def count_envelopes(conn: sqlite3.Connection, *, chains_too: bool = True) -> int:
    """Progress-bar total: the DATA envelopes :func:`derive` replays, plus every envelope
    when chains are walked as well (:func:`rebuild`)."""
    total, data = conn.execute("SELECT count(*), coalesce(sum(kind=?), 0) FROM envelopes",
                               (int(Kind.DATA),)).fetchone()
    return int(data) + (int(total) if chains_too else 0)


def rebuild(soil: Soil, progress: Progress | None = None) -> Rebuilt:
    """Re-derive ``vv``, ``docs`` and ``doc_index`` of every space, in ONE transaction.

    Envelopes past a break in their author's chain are moved to ``pending`` (reason
    ``gap``), as if they had arrived ahead of the missing ones; ``deferred`` rows whose
    envelope is gone are dropped. The Soil object is reloaded afterwards, so it can be used
    on; a crash or an error leaves the store exactly as it was.
    """
    out = Rebuilt()
    conn = soil.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        for space in soil.space_ids():
            out.spaces += 1
            found = chains(conn, space)
            if progress is not None:
                progress(sum(s for s, _ in found.heads.values()) + len(found.broken))
            out.parked += _park_broken(conn, space, found)
            conn.execute("DELETE FROM vv WHERE space=?", (space,))
            conn.executemany("INSERT INTO vv VALUES (?, ?, ?, ?)",
                             [(space, a, s, h) for a, (s, h) in found.heads.items()])
            conn.execute("DELETE FROM deferred WHERE space=? AND NOT EXISTS (SELECT 1 FROM "
                         "envelopes e WHERE e.space=deferred.space AND e.author=deferred.author"
                         " AND e.seq=deferred.seq)", (space,))
            conn.execute("DELETE FROM docs WHERE space=?", (space,))
            conn.execute("DELETE FROM doc_index WHERE space=?", (space,))
            derived = derive(soil, space, progress=progress)
            write_docs(soil, space, derived.docs)
            out.envelopes += sum(s for s, _ in found.heads.values())
            out.documents += len(derived.docs)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    soil.reload()
    return out


def _park_broken(conn: sqlite3.Connection, space: bytes, found: Chains) -> int:
    parked = 0
    for author, seq, _reason in found.broken:
        row = conn.execute("SELECT delta_id, raw FROM envelopes WHERE space=? AND author=? "
                           "AND seq=?", (space, author, seq)).fetchone()
        conn.execute("DELETE FROM envelopes WHERE space=? AND author=? AND seq=?",
                     (space, author, seq))
        conn.execute("DELETE FROM deferred WHERE space=? AND author=? AND seq=?",
                     (space, author, seq))
        try:
            env = envelope_mod.decode(bytes(row[1]))
        except MyceliumError:
            continue  # not even an envelope: dropped, a peer will send the real one
        if env.space != space or env.author != author or env.seq != seq:
            continue
        conn.execute("INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?, ?, ?)",
                     (space, author, seq, env.delta_id, "gap", env.raw))
        parked += 1
    return parked


# -- salvage ------------------------------------------------------------------------------
@dataclass
class Salvaged:
    tables: dict[str, int] = field(default_factory=dict)
    #: Tables (or parts of them) SQLite could not read.
    lost: list[str] = field(default_factory=list)


def salvage(damaged: Path, fresh: Path) -> Salvaged:
    """Copy every row SQLite can still read from ``damaged`` into a new file ``fresh``.

    Whole tables are copied in one scan when they can be; a table whose scan hits a
    damaged page is copied by probing its primary key ranges instead (envelopes per
    space and author, from the version vector if it survived). Nothing is written to
    ``damaged``.
    """
    out = Salvaged()
    src = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True, isolation_level=None)
    dst = sqlite3.connect(str(fresh), isolation_level=None)
    try:
        dst.executescript(DDL)
        dst.execute("BEGIN")
        for name, sql in _tables(src, out):
            if dst.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                           (name,)).fetchone() is None:
                dst.execute(sql)
            out.tables[name] = _copy_table(src, dst, name, out)
        dst.execute("COMMIT")
    finally:
        src.close()
        dst.close()
    return out


def _tables(src: sqlite3.Connection, out: Salvaged) -> list[tuple[str, str]]:
    try:
        return [(n, s) for n, s in src.execute(
            "SELECT name, sql FROM sqlite_master WHERE type='table' AND sql IS NOT NULL "
            "AND name NOT LIKE 'sqlite_%'")]
    except sqlite3.DatabaseError:
        out.lost.append("sqlite_master")
        return []  # the schema page itself is gone: only the DDL's empty tables remain


def _copy_table(src: sqlite3.Connection, dst: sqlite3.Connection, name: str,
                out: Salvaged) -> int:
    quoted = '"' + name.replace('"', '""') + '"'
    try:
        rows = src.execute(f"SELECT * FROM {quoted}").fetchall()
    except sqlite3.DatabaseError:
        rows = _probe_envelopes(src) if name == "envelopes" else []
        out.lost.append(name if name != "envelopes" else "envelopes (partly)")
    if not rows:
        return 0
    marks = ",".join("?" * len(rows[0]))
    dst.executemany(f"INSERT OR IGNORE INTO {quoted} VALUES ({marks})", rows)
    return len(rows)


def _probe_envelopes(src: sqlite3.Connection) -> list[Any]:
    """Envelopes read one key at a time, skipping the ones on damaged pages."""
    try:
        heads = src.execute("SELECT space, author, seq FROM vv").fetchall()
    except sqlite3.DatabaseError:
        return []
    rows = []
    for space, author, head in heads:
        for seq in range(1, int(head) + 1):
            try:
                row = src.execute("SELECT * FROM envelopes WHERE space=? AND author=? AND seq=?",
                                  (space, author, seq)).fetchone()
            except sqlite3.DatabaseError:
                continue
            if row is not None:
                rows.append(row)
    return rows
