"""Soil: the node's SQLite store of envelopes, version vectors and documents (DESIGN.md §4).

Interface: docs/dev/store-spaces-contract.md; implements :class:`mycelium.sync.ports.DeltaStore`.

Every change, local or received, takes one path: validate (``log/validate.py``), append
the envelopes and advance the version vector, apply CONTROL envelopes to the space's
:class:`SpaceState`, decrypt and merge DATA envelopes into documents — all in ONE
transaction, so a crash leaves either all of it or none of it. Change notifications go
out after the commit.

Envelopes are kept (and the chain advances) even when their content cannot be applied
yet — key of their epoch not received (``no_key``) or a clock too far ahead
(``clock_drift``); those are *deferred* and applied when the key arrives or time catches
up. Authentic content that can never apply (undecryptable, bad payload, schema
violation) is kept for the chain's sake and counted in :meth:`Soil.metrics`, never
materialized. Envelopes that cannot be appended yet (gap in the chain, author not yet
known as a member) are *pending*, bounded per space.
"""

from __future__ import annotations

import gc
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from mycelium import accel
from mycelium.codec import cbor
from mycelium.crdt import payload as payloads
from mycelium.crdt.doc import DocState
from mycelium.crdt.hlc import HLC, ClockDrift, Timestamp
from mycelium.crdt.schema import Registry, SpaceKind
from mycelium.errors import MyceliumError
from mycelium.log import envelope as envelope_mod
from mycelium.log.envelope import Envelope, Kind
from mycelium.log.limits import (
    MAX_DEFERRED_PER_AUTHOR,
    MAX_INGEST_BATCH,
    MAX_PAYLOAD_BYTES,
    MAX_PENDING_PER_AUTHOR,
    MAX_PENDING_PER_SPACE,
    MAX_PENDING_PER_STRANGER,
    MAX_PENDING_STRANGERS,
    MAX_RETRY_BATCH,
    MAX_STORED_SEQ,
    PENDING_STRANGER_TTL_MS,
)
from mycelium.log.validate import CHAIN_CONFLICTS, Head, link_pending, validate_batch
from mycelium.market.collections import REGISTRY
from mycelium.spaces import pins
from mycelium.spaces.errors import NoEpochKey, NotMember, RemovedAuthor, SpaceError, UnknownEpoch
from mycelium.spaces.genesis import parse_genesis
from mycelium.spaces.state import WAITING_FOR_LOG, SpaceState
from mycelium.store import envelope_rows
from mycelium.store.atrest import DocCodec
from mycelium.store.schema import Synchronous, connect
from mycelium.store.subscriptions import Change, Hub
from mycelium.sync.ports import IngestResult, VersionVector

log = logging.getLogger(__name__)

WallClock = Callable[[], int]
_ABSENT = object()
_NO_HEAD: tuple[int, None] = (0, None)  # the head of an author with nothing stored
#: An opened DATA envelope: ``(envelope, payload, (coll, doc))``.
_Opened = tuple[Envelope, payloads.Payload, tuple[str, str]]
_NO_VALUES: dict[str, Any] = {}  # read only


class StoreError(MyceliumError):
    reason = "store_error"


class UnknownSpace(StoreError):
    reason = "unknown_space"


class AmbiguousSpace(StoreError):
    reason = "ambiguous_space"


class LocalWriteRefused(StoreError):
    """A local write that validation refused (should not happen for a healthy node)."""

    reason = "local_write_refused"


def wall_ms() -> int:
    return int(time.time() * 1000)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector during one ingest chunk.

    A chunk allocates tens of thousands of short-lived, acyclic objects (decoded
    envelopes, payloads, document states) while thousands stay alive until the commit,
    so generational collections keep re-scanning them: ~5 % of ingest time, measured.
    The pause lasts until the chunk's objects are freed: resumed earlier, the first
    collection would still scan all of them (~3 % more, measured). The chunk is
    synchronous and bounded (MAX_INGEST_BATCH), reference counting still frees
    everything, and any cycles are collected as soon as collection resumes.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@dataclass
class _Work:
    """Everything one transaction writes, accumulated so each table gets one executemany."""

    space: bytes
    envelopes: list[tuple[Any, ...]] = field(default_factory=list)
    heads: set[bytes] = field(default_factory=set)
    data: list[Envelope] = field(default_factory=list)
    control_changed: bool = False
    docs: dict[tuple[str, str], DocState] = field(default_factory=dict)
    dirty: dict[tuple[str, str], bytes] = field(default_factory=dict)  # -> last delta id
    indexed_before: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    deferred: list[tuple[Any, ...]] = field(default_factory=list)
    undeferred: list[tuple[Any, ...]] = field(default_factory=list)
    control_any: bool = False
    truncated: bool = False  # a removal cut a chain: reload the mirrors after the commit
    foreign: set[bytes] = field(default_factory=set)  # removed authors holding another chain
    changes: list[Change] = field(default_factory=list)


@dataclass
class _SpaceMem:
    """In-memory mirror of one space's rows (rebuilt from the database on open)."""

    state: SpaceState
    codec: DocCodec
    heads: dict[bytes, Head] = field(default_factory=dict)
    pending: dict[bytes, dict[int, tuple[str, bytes]]] = field(default_factory=dict)
    pending_count: int = 0
    deferred: Counter[str] = field(default_factory=Counter)
    control_authors: set[bytes] = field(default_factory=set)
    #: Pending rows of authors the control log did not admit when parked, oldest first:
    #: (author, seq) -> wall ms parked (load time after a restart). Bounded and expired.
    strangers: dict[tuple[bytes, int], int] = field(default_factory=dict)
    drift_by_author: Counter[bytes] = field(default_factory=Counter)  # clock_drift rows
    no_key_epochs: Counter[int] = field(default_factory=Counter)  # no_key rows per epoch


class Soil:
    """One node's store. Not thread-safe; use from one thread (the trio thread)."""

    def __init__(self, conn: sqlite3.Connection, identity: Any, *, registry: Registry,
                 clock: WallClock, max_pending: int, device_chains: bool = False) -> None:
        self.conn = conn
        self.identity = identity
        self.registry = registry
        self.wall = clock
        self.max_pending = max_pending
        self.hlc = HLC(identity.public_key[:8])
        self._spaces: dict[bytes, _SpaceMem] = {}
        self._metrics: Counter[str] = Counter()
        self._uncommitted: Counter[str] = Counter()
        self._hub = Hub()
        self._device: Any = None
        self.device_chains = device_chains
        self._reload()

    @classmethod
    def open(cls, path: Path, identity: Any, *, registry: Registry = REGISTRY,
             clock: WallClock = wall_ms, synchronous: Synchronous = "FULL",
             max_pending: int = MAX_PENDING_PER_SPACE, device_chains: bool = False) -> Soil:
        """Open or create the store at ``path`` for ``identity``.

        ``device_chains``: local writes are signed by this store's device key
        (:attr:`device`, protocols/delta.md §10) instead of the identity key. Every node
        entry point (``mycelium run``, the CLI's local store) turns it on, so two devices
        of one identity never fork a chain; off, the identity signs (the previous layout,
        which tests of single-writer stores still use)."""
        return cls(connect(Path(path), synchronous), identity, registry=registry, clock=clock,
                   max_pending=max_pending, device_chains=device_chains)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Soil:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- loading --------------------------------------------------------------------
    def _reload(self) -> None:
        """Rebuild every in-memory mirror from the database (on open and after a rollback)."""
        self._spaces = {}
        rows = self.conn.execute("SELECT space, genesis FROM spaces ORDER BY added").fetchall()
        for space, genesis in rows:
            self._load_space(bytes(space), parse_genesis(bytes(genesis)))
        self._metrics = Counter(dict(self.conn.execute("SELECT name, value FROM metrics")))
        self._uncommitted = Counter()
        row = self.conn.execute("SELECT value FROM meta WHERE key='hlc'").fetchone()
        if row is not None:
            self.hlc.last = Timestamp.from_wire(cbor.decode(row[0]))
        self._hlc_saved = self.hlc.last

    def _load_space(self, space: bytes, genesis: Any) -> None:
        state = SpaceState(genesis)
        key = self.identity.storage_key if genesis.kind == "personal" else None
        mem = _SpaceMem(state=state, codec=DocCodec(space, key))
        controls = [envelope_mod.decode(bytes(r)) for (r,) in self.conn.execute(
            "SELECT raw FROM envelopes WHERE space=? AND kind=1 ORDER BY author, seq", (space,))]
        state.apply_many(controls, stored=True)
        mem.control_authors = {e.author for e in controls}
        for author, seq, head in self.conn.execute(
                "SELECT author, seq, head FROM vv WHERE space=?", (space,)):
            mem.heads[bytes(author)] = (seq, bytes(head))
        now = self.wall()
        for author, seq, reason, delta_id in self.conn.execute(
                "SELECT author, seq, reason, delta_id FROM pending WHERE space=?", (space,)):
            author = bytes(author)
            mem.pending.setdefault(author, {})[seq] = (reason, bytes(delta_id))
            mem.pending_count += 1
            if not state.admits(author):
                mem.strangers[(author, seq)] = now
        for reason, n in self.conn.execute(
                "SELECT reason, count(*) FROM deferred WHERE space=? GROUP BY reason", (space,)):
            mem.deferred[reason] = n
        for author, n in self.conn.execute(
                "SELECT author, count(*) FROM deferred WHERE space=? AND reason='clock_drift' "
                "GROUP BY author", (space,)):
            mem.drift_by_author[bytes(author)] = n
        for epoch, n in self.conn.execute(
                "SELECT epoch, count(*) FROM deferred WHERE space=? AND reason='no_key' "
                "GROUP BY epoch", (space,)):
            mem.no_key_epochs[int.from_bytes(bytes(epoch), "big")] = n
        self._spaces[space] = mem

    def reload(self) -> None:
        """Re-read the in-memory mirrors after the tables were rewritten (``store rebuild``)."""
        self._reload()

    # -- transactions ---------------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._flush_metrics()
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            self._reload()
            raise
        self._metrics.update(self._uncommitted)
        self._uncommitted = Counter()

    def _count(self, name: str, n: int = 1) -> None:
        self._uncommitted[name] += n

    def _flush_metrics(self) -> None:
        if self._uncommitted:
            self.conn.executemany(
                "INSERT INTO metrics VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value=value+excluded.value",
                list(self._uncommitted.items()))

    # -- spaces ---------------------------------------------------------------------
    def add_space(self, genesis: bytes) -> bytes:
        """Store a space's genesis (idempotent); returns its id."""
        g = parse_genesis(genesis)
        if g.space_id in self._spaces:
            return g.space_id
        with self._tx():
            self.conn.execute("INSERT INTO spaces VALUES (?, ?, ?, ?, ?)",
                              (g.space_id, g.raw, g.name, g.kind, time.time_ns()))
        self._load_space(g.space_id, g)
        return g.space_id

    def space_ids(self) -> list[bytes]:
        return list(self._spaces)

    def space_state(self, space_id: bytes) -> SpaceState:
        return self._mem(space_id).state

    def space_kind(self, space_id: bytes) -> SpaceKind:
        kind: SpaceKind = self._mem(space_id).state.kind
        return kind

    def genesis(self, space_id: bytes) -> bytes:
        return self._mem(space_id).state.genesis.raw

    def resolve_space(self, name_or_id: str) -> bytes:
        """A space by hex id or unique name; raises UnknownSpace / AmbiguousSpace."""
        try:
            raw = bytes.fromhex(name_or_id)
        except ValueError:
            raw = b""
        if raw in self._spaces:
            return raw
        hits = [s for s, m in self._spaces.items() if m.state.name == name_or_id]
        if not hits:
            raise UnknownSpace(f"no space named or with id {name_or_id!r}")
        if len(hits) > 1:
            raise AmbiguousSpace(f"several spaces are named {name_or_id!r}; use the space id")
        return hits[0]

    def control_envelopes(self, space_id: bytes) -> list[bytes]:
        self._mem(space_id)
        return [bytes(r) for (r,) in self.conn.execute(
            "SELECT raw FROM envelopes WHERE space=? AND kind=1 ORDER BY author, seq", (space_id,))]

    def _mem(self, space_id: bytes) -> _SpaceMem:
        mem = self._spaces.get(space_id)
        if mem is None:
            raise UnknownSpace(f"unknown space {space_id.hex()}")
        return mem

    # -- DeltaStore -----------------------------------------------------------------
    def member_spaces(self) -> list[bytes]:
        """Spaces this node syncs: those it is a member of, and those it holds only the
        genesis of (adopted while restoring, docs/recovery.md): a peer answers their offer
        only if its own control log lists this node, and the log then arrives by sync."""
        me = self.identity.public_key
        return [s for s, m in self._spaces.items() if m.state.is_member(me)
                or (m.state.kind == "community" and m.state.control_count == 0)]

    def version_vector(self, space: bytes) -> VersionVector:
        mem = self._spaces.get(space)
        return {a: s for a, (s, _) in mem.heads.items()} if mem is not None else {}

    def heads(self, space: bytes) -> dict[bytes, tuple[int, bytes]]:
        """author -> ``(seq, delta_id)`` of its newest contiguous envelope: the version
        vector plus which chain it counts (forks hide behind equal vectors, sync.md §6a)."""
        mem = self._spaces.get(space)
        return dict(mem.heads) if mem is not None else {}

    def envelopes_since(self, space: bytes, remote: VersionVector, *, limit: int,
                        max_bytes: int) -> list[bytes]:
        """Per author ascending seq; authors that wrote control ops first (keys, members)."""
        mem = self._spaces.get(space)
        if mem is None:
            return []
        return envelope_rows.envelopes_since(self.conn, space, mem.heads, mem.control_authors,
                                             remote, limit=limit, max_bytes=max_bytes)

    def ingest(self, space: bytes, envelopes: Sequence[bytes]) -> IngestResult:
        """Validate and store envelopes from a peer. Never raises on bad input."""
        result = IngestResult()
        if space not in self._spaces:
            for _ in envelopes:
                self._reject(result, None, "unknown_space")
            self._flush_standalone_metrics()
            return result
        if not envelopes:
            self.retry_deferred(space)
            return result
        for start in range(0, len(envelopes), MAX_INGEST_BATCH):
            chunk = envelopes[start:start + MAX_INGEST_BATCH]
            with _gc_paused():  # until the chunk's work is freed (see _gc_paused)
                result.merge(self._ingest_transaction(space, chunk))
        return result

    def _ingest_transaction(self, space: bytes, chunk: Sequence[bytes], *,
                            scanned: bool = False) -> IngestResult:
        """One chunk in one transaction, then its change notifications.

        If the transaction fails (a bug, a disk error, an envelope no check foresaw), it
        is rolled back and the chunk is split in halves, each retried on its own: an
        envelope that makes a transaction fail costs only itself (``internal_error``),
        the others of its chunk are stored. The failure count is committed on its own,
        so it survives the rollback."""
        part = IngestResult()
        work = _Work(space)
        try:
            with self._tx():
                self._ingest_chunk(work, chunk, part)
                self._retry_deferred(work)
                self._flush(work)
                self._enforce_removals(work)
        except Exception:  # a bug or a disk error must not kill the sync session
            if not scanned and self._repair_damaged_rows(space):  # then worth a retry
                return self._ingest_transaction(space, chunk, scanned=True)
            log.exception("ingest of %d envelopes failed; rolled back", len(chunk))
            self._count_failure()
            if len(chunk) == 1:
                return IngestResult(rejected=[(None, "internal_error")])
            half = len(chunk) // 2
            out = self._ingest_transaction(space, chunk[:half], scanned=True)
            out.merge(self._ingest_transaction(space, chunk[half:], scanned=True))
            return out
        if work.truncated:
            self._reload()
        self._hub.publish(work.changes)
        return part

    # -- removals -------------------------------------------------------------------
    def _enforce_removals(self, work: _Work) -> None:
        """After control ops arrived: cut the chains of removed members back to what their
        removal keeps (spaces.md §4.3). A node that stored a removed member's envelopes
        beyond ``keep`` before it heard of the removal, or a chain other than the pinned
        one, now holds what nodes that knew the removal first hold, so vectors and heads
        converge; sync brings the pinned chain again where it was cut to 0."""
        if not work.control_any and not work.foreign:
            return
        mem = self._spaces[work.space]
        for cut in pins.plan_cuts(mem.state, mem.heads, self._stored_id(work.space),
                                  work.foreign):  # one decision, the relay's too
            self._truncate(work, mem, cut.author, cut.to, keep_pending=not cut.drop_pending)
        for author, keep in pins.stale_pending(mem.state, mem.pending).items():
            n = self.conn.execute("DELETE FROM pending WHERE space=? AND author=? AND seq>?",
                                  (work.space, author, keep)).rowcount
            self._count("pending.dropped_removed", n)
            work.truncated = True  # the mirrors are reloaded after the commit

    @staticmethod
    def _pinned_conflict(work: _Work, mem: _SpaceMem, delta_id: bytes) -> None:
        """A removed member's pinned head was refused as a fork or a broken chain: the
        chain stored for it is another one (stored before the removal was known), which
        is cut after this batch so the pinned chain can come (spaces.md §4.4)."""
        author = pins.pinned_conflict(mem.state, delta_id)
        if author is not None:
            work.foreign.add(author)

    def _truncate(self, work: _Work, mem: _SpaceMem, author: bytes, to: int, *,
                  keep_pending: bool = False) -> None:
        """Delete ``author``'s envelopes above ``to`` and rebuild the documents they wrote
        (in the caller's transaction; the mirrors are reloaded after the commit)."""
        from mycelium.store import repair

        c, space = self.conn, work.space
        args = (space, author, to)
        touched: set[tuple[str, str]] = set()
        n = 0
        for kind, raw in c.execute("SELECT kind, raw FROM envelopes WHERE space=? AND author=? "
                                   "AND seq>?", args).fetchall():
            n += 1
            if kind != int(Kind.DATA):
                continue
            env = envelope_mod.decode(bytes(raw))
            key = mem.state.epoch_key(env.epoch, self.identity)
            try:
                payload = payloads.decode_payload(env.open(key)) if key is not None else None
            except MyceliumError:
                payload = None
            if payload is not None:
                touched.add(mem.codec.row_keys(payload.coll, payload.doc))
        c.execute("DELETE FROM envelopes WHERE space=? AND author=? AND seq>?", args)
        c.execute("DELETE FROM deferred WHERE space=? AND author=? AND seq>?", args)
        if not keep_pending:  # (else: the pinned chain may wait there already)
            c.execute("DELETE FROM pending WHERE space=? AND author=?", (space, author))
        if to == 0:
            c.execute("DELETE FROM vv WHERE space=? AND author=?", (space, author))
        else:
            c.execute("UPDATE vv SET seq=?, head=(SELECT delta_id FROM envelopes WHERE space=? "
                      "AND author=? AND seq=?) WHERE space=? AND author=?",
                      (to, space, author, to, space, author))
        if touched:
            derived = repair.derive(self, space, only=touched)
            repair.write_docs(self, space, derived.docs)
            kept = {mem.codec.row_keys(*k) for k in derived.docs}
            for ck, dk in touched - kept:
                c.execute("DELETE FROM docs WHERE space=? AND coll=? AND doc=?", (space, ck, dk))
                c.execute("DELETE FROM doc_index WHERE space=? AND coll=? AND doc=?",
                          (space, ck, dk))
        log.warning("removed member %s: %d envelopes beyond its removal cut, %d documents "
                    "rebuilt", author.hex()[:16], n, len(touched))
        self._count("truncated_envelopes", n)
        work.truncated = True

    def _repair_damaged_rows(self, space: bytes) -> bool:
        """After a failed ingest: rebuild the document rows that load but hold damaged
        values (they fail only mid-merge; repair.py), in a transaction of their own.
        True if any was, so the chunk is tried once more. One scan per failed chunk."""
        from mycelium.store import repair

        try:
            rows = repair.damaged_rows(self, space)
            if rows:
                with self._tx():
                    for row_key in rows:
                        self._unreadable_row(space, row_key)
        except Exception as exc:  # the file itself is damaged, or the repair failed
            if repair.is_corruption(exc):
                log.error("%s", repair.damaged_message(repair.db_file(self.conn), exc))
            else:
                log.exception("repairing document rows failed")
            return False
        return bool(rows)

    def _count_failure(self) -> None:
        """Count one rolled-back transaction in a transaction of its own."""
        self._uncommitted = Counter({"internal_error": 1})
        try:
            with self._tx():
                pass
        except Exception:  # the disk itself fails: keep the count in memory at least
            log.exception("could not record the failure")
            self._metrics["internal_error"] += 1

    def retry_deferred(self, space: bytes) -> None:
        """Apply deferred deltas whose time has come and drop strangers' pending rows
        that expired (call now and then on a quiet node; every ingest and local write
        also does the first)."""
        mem = self._mem(space)
        now = self.wall()
        due = mem.deferred.get("clock_drift")
        stale = bool(mem.strangers) and next(iter(mem.strangers.values())) <= (
            now - PENDING_STRANGER_TTL_MS)
        if not due and not stale:
            return
        work = _Work(space)
        with self._tx():
            self._expire_strangers(work, mem, now)
            self._retry_deferred(work)
            self._flush(work)
        self._hub.publish(work.changes)

    def _reject(self, result: IngestResult, delta_id: bytes | None, reason: str) -> None:
        result.rejected.append((delta_id, reason))
        self._count(f"rejected.{reason}")

    def _flush_standalone_metrics(self) -> None:
        with self._tx():
            pass

    # -- ingest pipeline ------------------------------------------------------------
    def _ingest_chunk(self, work: _Work, raws: Sequence[bytes], result: IngestResult) -> None:
        mem = self._spaces[work.space]
        verdict = validate_batch(work.space, raws, mem.heads, self._stored_id(work.space),
                                 mem.state.pinned_head if mem.state.has_pins else None)
        result.duplicates += len(verdict.duplicates)
        self._count("duplicates", len(verdict.duplicates))
        for delta_id, reason in verdict.rejected:
            self._reject(result, delta_id, reason)
            if reason in CHAIN_CONFLICTS and delta_id is not None:
                self._pinned_conflict(work, mem, delta_id)
        for env in verdict.pending:
            self._park(work, env, "gap", result)
        self._append(work, verdict.ready, result)
        self._drain(work, result)
        self._materialize(work)
        self._count("accepted", len(result.accepted))

    def _stored_id(self, space: bytes) -> Callable[[bytes, int], bytes | None]:
        def lookup(author: bytes, seq: int) -> bytes | None:
            row = self.conn.execute(
                "SELECT delta_id FROM envelopes WHERE space=? AND author=? AND seq=?",
                (space, author, seq)).fetchone()
            return bytes(row[0]) if row is not None else None
        return lookup

    def _append(self, work: _Work, envs: Sequence[Envelope], result: IngestResult) -> None:
        """Append authenticated envelopes that extend their author's head, in order."""
        mem = self._spaces[work.space]
        heads, pending, space = mem.heads, mem.pending, work.space
        rows, accepted, authors = work.envelopes, result.accepted, work.heads
        epochs: dict[int, bytes] = {}  # the stored form of each epoch id, made once
        pinned = pins.pinned_chains(mem.state, envs)
        for env in envs:  # runs once per received delta: locals, no repeated lookups
            author, seq = env.author, env.seq
            head_seq, head_id = heads.get(author, _NO_HEAD)
            if seq != head_seq + 1 or env.prev != head_id:
                self._park(work, env, "gap", result)
                continue
            if not self._admit(work, mem, env, result, pinned):
                continue
            delta_id = env.delta_id
            slots = pending.get(author) if pending else None
            if slots and seq in slots:  # also arrived earlier ahead of a gap
                self._unpark(work, mem, slots, env)
                if not slots:
                    del pending[author]
            epoch = epochs.get(env.epoch)
            if epoch is None:
                epoch = epochs[env.epoch] = env.epoch.to_bytes(8, "big")
            rows.append((space, author, seq, delta_id, int(env.kind), epoch, env.raw))
            heads[author] = (seq, delta_id)
            authors.add(author)
            accepted.append(delta_id)

    def _admit(self, work: _Work, mem: _SpaceMem, env: Envelope, result: IngestResult,
               pinned: set[bytes] | None = None) -> bool:
        """Membership/epoch gate; False if the envelope was parked or rejected.

        Who may write is decided in one place, :meth:`SpaceState.admission`; ``pinned``
        (when the space has removals with a pinned head) are the envelopes proven to lie
        on a removed member's valid chain."""
        reason = mem.state.admission(env)
        if reason is not None:
            if reason == "removed_author":
                self._reject(result, env.delta_id, reason)
            else:
                self._park(work, env, reason, result)
            return False
        if pinned is not None and env.delta_id not in pinned:
            pin = mem.state.pinned_head(env.author)
            if pin is not None and env.seq <= pin[0]:
                self._park(work, env, "pinned_chain", result)
                return False
        if env.kind is Kind.CONTROL:
            try:
                mem.state.apply(env)
            except SpaceError as exc:
                self._reject(result, env.delta_id, exc.reason)
                return False
            mem.control_authors.add(env.author)
            work.control_changed = work.control_any = True
            work.changes.append(Change(work.space, None, None, env.delta_id))
            return True
        try:
            mem.state.check_data_author(env)
        except RemovedAuthor as exc:
            self._reject(result, env.delta_id, exc.reason)
            return False
        except NotMember:
            self._park(work, env, "not_member", result)
            return False
        except UnknownEpoch:
            pass  # stored now, applied when the epoch op arrives (deferred no_key)
        work.data.append(env)
        return True

    def _park(self, work: _Work, env: Envelope, reason: str, result: IngestResult) -> None:
        """Hold ``env`` pending, within bounds (protocols/delta.md §6.1): per author, and
        for authors the control log does not know ("strangers") a small shared pool with
        expiry, so strangers can never take the room of authors the log admits. Pending
        rows are a cache: what is refused here comes again with the next sync."""
        mem = self._spaces[work.space]
        slots = mem.pending.get(env.author)
        held = slots.get(env.seq) if slots is not None else None
        if held is not None:
            if held[1] == env.delta_id:
                result.duplicates += 1
                if held[0] != reason:
                    slots[env.seq] = (reason, env.delta_id)  # type: ignore[index]
                    self._write_pending(work, env, reason)
            else:
                self._reject(result, env.delta_id, "fork")
            return
        if env.seq > MAX_STORED_SEQ:  # validate_batch refuses these; never store one
            self._reject(result, env.delta_id, "seq_too_large")
            return
        if mem.state.admission(env) == "removed_author":  # beyond keep: refused for good
            self._reject(result, env.delta_id, "removed_author")
            return
        held_now = len(slots) if slots is not None else 0
        stranger = not mem.state.admits(env.author)
        if stranger:
            now = self.wall()
            self._expire_strangers(work, mem, now)
            full = (held_now >= MAX_PENDING_PER_STRANGER
                    or len(mem.strangers) >= min(MAX_PENDING_STRANGERS, self.max_pending // 10))
        else:
            full = held_now >= MAX_PENDING_PER_AUTHOR or mem.pending_count >= self.max_pending
        if full:
            self._reject(result, env.delta_id, "pending_full")
            return
        if slots is None:
            slots = mem.pending[env.author] = {}
        slots[env.seq] = (reason, env.delta_id)
        mem.pending_count += 1
        if stranger:
            mem.strangers[(env.author, env.seq)] = now
        self._write_pending(work, env, reason)
        result.pending += 1
        self._count(f"pending.{reason}")

    def _expire_strangers(self, work: _Work, mem: _SpaceMem, now: int) -> None:
        """Drop strangers' pending rows older than PENDING_STRANGER_TTL_MS (oldest first)."""
        limit = now - PENDING_STRANGER_TTL_MS
        expired = []
        for (author, seq), parked in mem.strangers.items():
            if parked > limit:
                break
            expired.append((author, seq))
        for author, seq in expired:
            slots = mem.pending.get(author, {})
            if slots.pop(seq, None) is not None:
                mem.pending_count -= 1
            if not slots:
                mem.pending.pop(author, None)
            del mem.strangers[(author, seq)]
            self.conn.execute("DELETE FROM pending WHERE space=? AND author=? AND seq=?",
                              (work.space, author, seq))
        if expired:
            self._count("pending_expired", len(expired))

    def _write_pending(self, work: _Work, env: Envelope, reason: str) -> None:
        """Pending rows are written at once (rare path), so reads in this transaction see them."""
        self.conn.execute("INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?, ?, ?)",
                          (work.space, env.author, env.seq, env.delta_id, reason, env.raw))

    def _drain(self, work: _Work, result: IngestResult) -> None:
        """Append pending envelopes that became contiguous (or admissible) this batch."""
        mem = self._spaces[work.space]
        retry_members = work.control_changed
        progress = True
        while progress and mem.pending_count:
            progress, work.control_changed = False, False
            for author in list(mem.pending):
                head = mem.heads.get(author, (0, None))
                slots = mem.pending.get(author, {})
                slot = slots.get(head[0] + 1)
                if slot is None:
                    continue
                if slot[0] in WAITING_FOR_LOG and not retry_members and author not in work.heads:
                    continue
                if slot[0] == "pinned_chain" and not self._pinned_rows(work, mem, author, slots):
                    continue
                progress |= self._drain_author(work, author, head, result)
            retry_members = work.control_changed

    def _drain_author(self, work: _Work, author: bytes, head: tuple[int, bytes | None],
                      result: IngestResult) -> bool:
        mem = self._spaces[work.space]
        slots = mem.pending[author]
        candidates = {}
        for seq, raw in self.conn.execute(
                "SELECT seq, raw FROM pending WHERE space=? AND author=? AND seq>? ORDER BY seq",
                (work.space, author, head[0])):
            candidates[seq] = envelope_mod.decode(bytes(raw))
        ready, broken = link_pending(head, candidates)
        for env in [*ready, *broken]:
            self._unpark(work, mem, slots, env)
        for env in broken:
            self._reject(result, env.delta_id, "broken_chain")
            self._pinned_conflict(work, mem, env.delta_id)
        before = len(result.accepted)
        self._append(work, ready, result)
        if not slots:
            mem.pending.pop(author, None)
        return len(result.accepted) > before or bool(broken)

    def _pinned_rows(self, work: _Work, mem: _SpaceMem, author: bytes,
                     slots: dict[int, tuple[str, bytes]]) -> bool:
        """Whether removed ``author``'s pinned head waits among its pending rows. If so,
        walk back from it through ``prev``: a pending row that is not the envelope its
        successor names belongs to a forged chain and is dropped, so the real one (which
        the next sync brings again) can take its place."""
        def row(seq: int) -> Envelope:
            (raw,) = self.conn.execute("SELECT raw FROM pending WHERE space=? AND author=? "
                                       "AND seq=?", (work.space, author, seq)).fetchone()
            return envelope_mod.decode(bytes(raw))

        waits, drop = pins.pinned_pending(  # one decision, the relay's too
            mem.state, author, mem.heads.get(author, _NO_HEAD)[0],
            {seq: slot[1] for seq, slot in slots.items()}, lambda seq: row(seq).prev)
        if drop is not None:
            self._unpark(work, mem, slots, row(drop))
            self._count("pending.dropped_unpinned")
        return waits

    def _unpark(self, work: _Work, mem: _SpaceMem, slots: dict[int, tuple[str, bytes]],
                env: Envelope) -> None:
        if slots.pop(env.seq, None) is not None:
            mem.pending_count -= 1
            mem.strangers.pop((env.author, env.seq), None)
        self.conn.execute("DELETE FROM pending WHERE space=? AND author=? AND seq=?",
                          (work.space, env.author, env.seq))

    # -- documents ------------------------------------------------------------------
    def _materialize(self, work: _Work) -> None:
        """Decrypt, check and merge the DATA envelopes appended in this transaction."""
        mem = self._spaces[work.space]
        now = self.wall()
        keys = {epoch: mem.state.epoch_key(epoch, self.identity)  # once per epoch and batch
                for epoch in {env.epoch for env in work.data}}
        schema = self.registry.compiled(mem.state.kind)
        max_wall = now + self.hlc.max_drift_ms
        opened_all = accel.open_all  # the whole batch in C when every envelope opens
        done = None
        if opened_all is not None and work.data:
            done = opened_all(work.data, {e: k for e, k in keys.items() if k is not None},
                              schema, max_wall)
        if done is None:
            done = self._open_each(work, mem, keys, now, schema, max_wall)
        opened, newest, doc_keys = done
        work.data = []
        if newest is not None:
            self.hlc.recv(newest, now)  # once per batch: the clock only needs the greatest
        self._prefetch(work, mem, doc_keys)
        merge_all = accel.merge_all
        if merge_all is not None:
            merge_all(opened, work.docs, work.dirty, lambda e, p: self._merge(work, mem, e, p))
        else:
            for env, p, _ in opened:
                self._merge(work, mem, env, p)

    def _open_each(self, work: _Work, mem: _SpaceMem, keys: dict[int, bytes | None], now: int,
                   schema: Any, max_wall: int) -> tuple[list[_Opened], Timestamp | None,
                                                        set[tuple[str, str]]]:
        """Open the batch's envelopes one by one: ``(opened, greatest hlc, (coll, doc) of
        each)``, ``opened`` holding ``(envelope, payload, (coll, doc))``. The compiled twin
        of _open_data's work (decrypt, decode, schema, drift rule) answers for the common
        case; None sends the envelope down the Python path."""
        opened = []
        newest = None
        compiled = accel.open_payload
        for env in work.data:
            key = keys[env.epoch]
            payload = None
            if compiled is not None and key is not None:
                payload = compiled(env.raw, key, schema, max_wall)
            if payload is None:
                payload = self._open_data(work, mem, env, key, now, fresh=True)[0]
                if payload is None:
                    continue
            opened.append((env, payload, payload[:2]))
            if newest is None or payload.hlc > newest:
                newest = payload.hlc
        return opened, newest, {key for _, _, key in opened}

    def _open_data(self, work: _Work, mem: _SpaceMem, env: Envelope, key: bytes | None,
                   now: int, *, fresh: bool) -> tuple[payloads.Payload | None, str | None]:
        """Decrypt and check one DATA envelope with its epoch's group ``key``:
        ``(payload, None)`` if usable, ``(None, reason)`` if deferred, ``(None, None)`` if
        unusable for good (counted). The caller merges the payload's clock into the node's
        HLC (``hlc.recv``)."""
        if key is None:
            return None, self._defer(work, mem, env, "no_key", fresh)
        payload = None
        try:
            payload = payloads.decode_payload(env.open(key))
            self.registry.check(payload, mem.state.kind)
            self.hlc.check(payload.hlc, now)
        except ClockDrift:
            assert payload is not None
            due = min(payload.hlc.wall_ms - self.hlc.max_drift_ms, MAX_STORED_SEQ)
            return None, self._defer(work, mem, env, "clock_drift", fresh, due)
        except MyceliumError as exc:  # authentic but unusable content: kept, counted
            self._count(f"unapplied.{exc.reason}")
            return None, None
        return payload, None

    def _merge(self, work: _Work, mem: _SpaceMem, env: Envelope, payload: payloads.Payload) -> None:
        doc_key = payload[:2]  # (coll, doc)
        state = work.docs.get(doc_key)
        if state is None:
            state = self._doc_state(work, mem, doc_key)
        if state.apply(payload, env.author):
            work.dirty[doc_key] = env.delta_id

    def _prefetch(self, work: _Work, mem: _SpaceMem, keys: set[tuple[str, str]]) -> None:
        """Load the stored state of many documents with a few ``IN`` queries (not one each)."""
        codec = mem.codec
        by_coll: dict[str, dict[str, tuple[str, str]]] = {}
        for key in keys - work.docs.keys():
            ck, dk = codec.row_keys(*key)
            wanted = by_coll.get(ck)
            if wanted is None:
                wanted = by_coll[ck] = {}
            wanted[dk] = key
        fresh_values: dict[str, Any] | None = None if codec.sealed else {}
        load_rows = None if codec.sealed else accel.load_rows  # the loops below, in C
        fill_empty = None if codec.sealed else accel.fill_empty
        for ck, wanted in by_coll.items():
            doc_keys = list(wanted)
            indexed = self.registry.indexed(next(iter(wanted.values()))[0])
            for i in range(0, len(doc_keys), 500):
                chunk = doc_keys[i:i + 500]
                marks = ",".join("?" * len(chunk))
                rows = self.conn.execute(
                    f"SELECT doc, body FROM docs WHERE space=? AND coll=? AND doc IN ({marks})",
                    (work.space, ck, *chunk))
                if load_rows is not None:
                    rows = load_rows(rows, wanted, indexed, work.docs, work.indexed_before)
                for dk, body in rows:
                    key = wanted[dk]
                    self._loaded(work, key, *self._open_row(work.space, codec, key, bytes(body),
                                                            indexed))
            if fill_empty is not None:
                fill_empty(wanted, work.docs, work.indexed_before, fresh_values)
                continue
            for key in wanted.values():
                if key not in work.docs:
                    self._loaded(work, key, DocState(), fresh_values)

    def _loaded(self, work: _Work, key: tuple[str, str], state: DocState,
                values: dict[str, Any] | None) -> None:
        """Register the state of document ``key = (coll, doc)`` read in this transaction
        and its indexed values (None in sealed spaces, which have no plaintext index)."""
        work.docs[key] = state
        if values is not None:
            work.indexed_before[key] = values

    def _defer(self, work: _Work, mem: _SpaceMem, env: Envelope, reason: str,
               fresh: bool, due: int = 0) -> str:
        """File ``env`` as deferred by what can make it apply: ``due`` (clock_drift) or
        its epoch (no_key). ``fresh=False``: a retried row, re-filed with its real due
        time (rows of schema 1 had none). An author's clock_drift rows are capped
        (MAX_DEFERRED_PER_AUTHOR): beyond, the content stays in the chain, unapplied."""
        if fresh and reason == "clock_drift":
            if mem.drift_by_author[env.author] >= MAX_DEFERRED_PER_AUTHOR:
                self._count("unapplied.too_many_deferred")
                return reason
            mem.drift_by_author[env.author] += 1
        row = (work.space, env.author, env.seq, reason, due, env.epoch.to_bytes(8, "big"))
        if fresh:
            mem.deferred[reason] += 1
            if reason == "no_key":
                mem.no_key_epochs[env.epoch] += 1
            self._count(f"deferred.{reason}")
            work.deferred.append(row)
        elif due:
            work.deferred.append(row)
        return reason

    def _retry_deferred(self, work: _Work) -> None:
        """Apply deferred envelopes whose key arrived or whose time has come.

        Only rows that can have changed are read (protocols/delta.md §6.2): clock_drift
        rows whose due time has passed (an index range), and, after a control op, no_key
        rows of the epochs whose key this node now holds (an index lookup per epoch). The
        cost does not grow with the number of rows that still wait."""
        mem = self._spaces[work.space]
        now = self.wall()
        join = ("SELECT d.author, d.seq, d.reason, e.raw FROM deferred d JOIN envelopes e "
                "ON e.space=d.space AND e.author=d.author AND e.seq=d.seq ")
        rows: list[Any] = []
        if mem.deferred.get("clock_drift"):
            rows += self.conn.execute(
                join + "WHERE d.space=? AND d.reason='clock_drift' AND d.due<=? LIMIT ?",
                (work.space, now, MAX_RETRY_BATCH)).fetchall()
        if work.control_any and mem.deferred.get("no_key"):
            for epoch in self._epochs_now_open(mem):
                rows += self.conn.execute(
                    join + "WHERE d.space=? AND d.reason='no_key' AND d.epoch=? LIMIT ?",
                    (work.space, epoch.to_bytes(8, "big"), MAX_RETRY_BATCH)).fetchall()
        for author, seq, reason, raw in rows:
            env = envelope_mod.decode(bytes(raw))
            key = mem.state.epoch_key(env.epoch, self.identity)
            payload, again = self._open_data(work, mem, env, key, now, fresh=False)
            if again != reason:
                if again is None:
                    work.undeferred.append((work.space, bytes(author), seq))
                else:  # a key arrived, the clock says wait: re-filed above
                    mem.deferred[again] += 1
                mem.deferred[reason] -= 1
                if reason == "clock_drift":
                    mem.drift_by_author[env.author] -= 1
                elif reason == "no_key":
                    mem.no_key_epochs[env.epoch] -= 1
            if payload is not None:
                self.hlc.recv(payload.hlc, now)
                self._merge(work, mem, env, payload)

    def _epochs_now_open(self, mem: _SpaceMem) -> list[int]:
        """Epochs that no_key rows wait for and whose key this node now holds."""
        waiting = +mem.no_key_epochs  # drops counts at zero
        mem.no_key_epochs = waiting
        known = mem.state.epochs
        pool = known if len(known) < len(waiting) else waiting
        return [e for e in pool if e in waiting and e in known
                and mem.state.epoch_key(e, self.identity) is not None]

    def _doc_state(self, work: _Work, mem: _SpaceMem, key: tuple[str, str]) -> DocState:
        """The state of document ``key`` not loaded in this transaction yet (from its row)."""
        codec = mem.codec
        row = self.conn.execute("SELECT body FROM docs WHERE space=? AND coll=? AND doc=?",
                                (work.space, *codec.row_keys(*key))).fetchone()
        values: dict[str, Any] | None
        if row is None:
            state, values = DocState(), (None if codec.sealed else {})
        else:
            state, values = self._open_row(work.space, codec, key, bytes(row[0]),
                                           self.registry.indexed(key[0]))
        self._loaded(work, key, state, values)
        return state

    def _open_row(self, space: bytes, codec: DocCodec, key: tuple[str, str], body: bytes,
                  indexed: frozenset[str]) -> tuple[DocState, dict[str, Any] | None]:
        """``codec.open_indexed`` of a stored row, or, if the row cannot be read, the
        document rebuilt from the envelopes in this transaction (so the batch goes on)."""
        try:
            return codec.open_indexed(*key, body, indexed)
        except Exception:  # any unreadable row is rebuilt (repair.py)
            state = self._unreadable_row(space, codec.row_keys(*key))
            return state, None if codec.sealed else state.values_of(indexed)

    def _unreadable_row(self, space: bytes, row_key: tuple[str, str], *,
                        found_id: bool = False) -> Any:
        """Rebuild a document row that cannot be read from the envelopes (inside the
        caller's transaction; logged and counted as ``repaired_docs``, see repair.py):
        its state, or with ``found_id`` ``(doc id, state)`` / None if nothing applies."""
        from mycelium.store import repair

        self._count("repaired_docs")
        found = repair.repair_row(self, space, *row_key)
        if found_id:
            return None if found is None else (found[0][1], found[1])
        return DocState() if found is None else found[1]

    # -- writing a transaction ------------------------------------------------------
    def _flush(self, work: _Work) -> None:
        c = self.conn
        mem = self._spaces[work.space]
        if work.envelopes:
            c.executemany("INSERT INTO envelopes VALUES (?, ?, ?, ?, ?, ?, ?)", work.envelopes)
        if work.heads:
            c.executemany("INSERT OR REPLACE INTO vv VALUES (?, ?, ?, ?)",
                          [(work.space, a, *mem.heads[a]) for a in work.heads])
        if work.undeferred:
            c.executemany("DELETE FROM deferred WHERE space=? AND author=? AND seq=?",
                          work.undeferred)
        if work.deferred:
            c.executemany("INSERT OR REPLACE INTO deferred (space, author, seq, reason, due, epoch)"
                          " VALUES (?, ?, ?, ?, ?, ?)", work.deferred)
        if work.dirty:
            self._write_docs(work, mem)
        if self.hlc.last != self._hlc_saved:
            c.execute("INSERT OR REPLACE INTO meta VALUES ('hlc', ?)",
                      (cbor.encode(self.hlc.last.to_wire()),))
            self._hlc_saved = self.hlc.last

    def _write_docs(self, work: _Work, mem: _SpaceMem) -> None:
        """One row per changed document, index rows only where an indexed value changed."""
        compiled = None if mem.codec.sealed else accel.doc_rows
        done = None if compiled is None else compiled(
            work.space, work.dirty, work.docs, work.indexed_before, self.registry.indexed_map,
            Change)
        if done is None:
            rows, stale, fresh = self._doc_rows(work, mem)
        else:  # the same rows, built in C
            rows, changes, stale, fresh = done
            work.changes += changes
        self.conn.executemany("INSERT OR REPLACE INTO docs VALUES (?, ?, ?, ?, ?)", rows)
        if stale:
            self.conn.executemany("DELETE FROM doc_index WHERE space=? AND coll=? AND field=? "
                                  "AND value=? AND doc=?", stale)
        if fresh:
            self.conn.executemany("INSERT OR IGNORE INTO doc_index VALUES (?, ?, ?, ?, ?)", fresh)

    def _doc_rows(self, work: _Work, mem: _SpaceMem) -> tuple[list[tuple[Any, ...]], ...]:
        """Rows of the docs table, index rows to delete and to insert, for the dirty
        documents (their changes go to ``work.changes``)."""
        codec, space, docs, before = mem.codec, work.space, work.docs, work.indexed_before
        rows: list[tuple[Any, ...]] = []
        stale: list[tuple[Any, ...]] = []
        fresh: list[tuple[Any, ...]] = []
        indexed = self.registry.indexed
        for key, delta_id in work.dirty.items():
            coll, doc = key
            live, body, new = codec.row(coll, doc, docs[key], indexed(coll))
            rows.append((space, *codec.row_keys(coll, doc), int(live), body))
            work.changes.append(Change(space, coll, doc, delta_id, not live))
            if new is None:  # personal spaces have no plaintext index
                continue
            old = before.get(key, _NO_VALUES)
            if new != old:
                stale += [(space, coll, k, v, doc) for k, v in old.items()
                          if new.get(k, _ABSENT) != v]
                fresh += [(space, coll, k, v, doc) for k, v in new.items()
                          if old.get(k, _ABSENT) != v]
                before[key] = new
        return rows, stale, fresh

    # -- local writes ---------------------------------------------------------------
    def append(self, space_id: bytes, kind: Kind, payload: bytes, *,
               signer: Any = None) -> Envelope:
        """Seal ``payload`` as this identity's next envelope in the space and apply it.

        ``signer``: another identity this node holds (a delegated writer,
        protocols/delegation.md) signs instead; the group key is still this node's.
        """
        mem = self._mem(space_id)
        me = self.identity
        epoch, key = 0, None
        if kind is Kind.DATA:
            epoch = mem.state.current_epoch
            key = mem.state.epoch_key(epoch, me) if epoch else None
            if key is None:
                raise NoEpochKey("no usable group key yet: waiting for an admin to rotate or grant")
        if signer is not None:
            author = signer
        elif self.device_chains:
            author = self._device_writer(space_id)
        else:
            author = me
        seq, prev = mem.heads.get(author.public_key, (0, None))
        env = envelope_mod.seal(signer=author.signing_key, space=space_id, seq=seq + 1, prev=prev,
                                epoch=epoch, payload=payload, group_key=key, kind=kind)
        work, result = _Work(space_id), IngestResult()
        with self._tx():
            self._append(work, [env], result)
            if not result.accepted:
                raise LocalWriteRefused(f"local {kind.name} write refused: {result.rejected}")
            self._drain(work, result)
            self._materialize(work)
            self._retry_deferred(work)
            self._count("local_writes")
            self._flush(work)
            self._enforce_removals(work)
        if work.truncated:
            self._reload()
        self._hub.publish(work.changes)
        return env

    @property
    def device(self) -> Any:
        """The key this store writes with when ``device_chains`` is on (protocols/delta.md
        §10), or the identity itself for identities without a seed. Its device id is drawn
        on first use and kept in ``meta``: a new store is a new device, so it never
        continues another's chain."""
        if self._device is None:
            from mycelium.identity import devices

            if not isinstance(getattr(self.identity, "seed", None), bytes):
                return self.identity
            row = self.conn.execute("SELECT value FROM meta WHERE key='device_id'").fetchone()
            device_id = bytes(row[0]) if row is not None else devices.new_device_id()
            if row is None:
                with self._tx():
                    self.conn.execute("INSERT INTO meta VALUES ('device_id', ?)", (device_id,))
            self._device = devices.device_identity(self.identity, device_id)
        return self._device

    def _device_writer(self, space_id: bytes) -> Any:
        """This device's key, its chain in the space opened with a ``device`` certificate
        signed by the identity first (seq 1, protocols/delegation.md)."""
        device = self.device
        mem = self._mem(space_id)
        if device is self.identity or device.public_key in mem.heads:
            return device
        if not mem.state.is_member(self.identity.public_key):
            return device  # no certificate for a write that will be refused anyway
        from mycelium.spaces import delegation

        cert = delegation.issue(self.identity.signing_key, kind="device", space=space_id,
                                subject=device.public_key, issued_ms=self.wall())
        self.append(space_id, Kind.CONTROL, cert.payload(), signer=device)
        return device

    def put_doc(self, space_id: bytes, coll: str, doc_id: str, fields: dict[str, Any], *,
                signer: Any = None) -> Envelope:
        """Set fields of a document (``None`` deletes a field); schema-checked first."""
        if not isinstance(fields, dict) or not fields:
            raise payloads.PayloadError("a document write needs at least one field",
                                        reason="no_ops")
        body = payloads.set_fields(coll, doc_id, fields, self.hlc.now(self.wall()))
        return self._write_payload(space_id, body, signer=signer)

    def delete_doc(self, space_id: bytes, coll: str, doc_id: str) -> Envelope:
        return self._write_payload(space_id,
                                   payloads.delete_doc(coll, doc_id, self.hlc.now(self.wall())))

    def _write_payload(self, space_id: bytes, body: payloads.Payload, *,
                       signer: Any = None) -> Envelope:
        self.registry.check(body, self._mem(space_id).state.kind)
        data = body.encode()
        if len(data) > MAX_PAYLOAD_BYTES:
            raise payloads.PayloadError(f"document write of {len(data)} bytes exceeds "
                                        f"{MAX_PAYLOAD_BYTES}", reason="oversized")
        return self.append(space_id, Kind.DATA, data, signer=signer)

    # -- reads ----------------------------------------------------------------------
    def get_doc(self, space_id: bytes, coll: str, doc_id: str) -> dict[str, Any] | None:
        """Visible fields of a document plus ``_id``, or None."""
        mem = self._mem(space_id)
        codec = mem.codec
        row = self.conn.execute(
            "SELECT body FROM docs WHERE space=? AND coll=? AND doc=? AND live=1",
            (space_id, codec.coll_key(coll), codec.doc_key(coll, doc_id))).fetchone()
        if row is None:
            return None
        try:
            state = codec.open(coll, doc_id, bytes(row[0]))
        except Exception:  # any unreadable row is rebuilt (repair.py)
            with self._tx():
                state = self._unreadable_row(space_id, codec.row_keys(coll, doc_id))
        visible = state.visible()
        return None if visible is None else {"_id": doc_id, **visible}

    def list_docs(self, space_id: bytes, coll: str, **equals: Any) -> list[dict[str, Any]]:
        """Live documents of a collection whose fields equal ``equals``, sorted by id.

        Indexed fields of community spaces are filtered in SQL; the rest in memory.
        """
        mem = self._mem(space_id)
        codec = mem.codec
        indexed = self.registry.get(coll).indexed if coll in self.registry else frozenset()
        sql_filters = {} if codec.sealed else {k: v for k, v in equals.items() if k in indexed}
        query = "SELECT doc, body FROM docs WHERE space=? AND coll=? AND live=1"
        args: list[Any] = [space_id, codec.coll_key(coll)]
        for name, value in sql_filters.items():
            query += (" AND doc IN (SELECT doc FROM doc_index WHERE space=? AND coll=? "
                      "AND field=? AND value=?)")
            args += [space_id, coll, name, value]
        out = []
        for doc_key, body in self.conn.execute(query, args).fetchall():  # repair writes
            try:
                if codec.sealed:
                    doc, state_bytes = codec.open_sealed(coll, None, bytes(body),
                                                         doc_key=doc_key)
                    state = DocState.decode(state_bytes)
                else:
                    doc, state = doc_key, DocState.decode(bytes(body))
            except Exception:  # any unreadable row is rebuilt (repair.py)
                with self._tx():
                    found = self._unreadable_row(space_id, (codec.coll_key(coll), doc_key),
                                                 found_id=True)
                if found is None:
                    continue
                doc, state = found
            visible = state.visible()
            if visible is not None and all(visible.get(k) == v for k, v in equals.items()):
                out.append({"_id": doc, **visible})
        return sorted(out, key=lambda d: d["_id"])

    # -- observation ----------------------------------------------------------------
    def subscribe(self, buffer: int = 256) -> trio.MemoryReceiveChannel[Change]:
        """Changes after each commit; a full buffer loses changes (counted), never blocks."""
        return self._hub.subscribe(buffer)

    def metrics(self) -> dict[str, int]:
        """Counters: accepted, duplicates, ``rejected.<reason>``, ``pending.<reason>``,
        ``deferred.<reason>``, ``unapplied.<reason>``, subscriber_lagged, gauges."""
        out = dict(self._metrics)
        out["subscriber_lagged"] = self._hub.lagged
        out["pending_now"] = sum(m.pending_count for m in self._spaces.values())
        out["deferred_now"] = sum(sum(m.deferred.values()) for m in self._spaces.values())
        return out

    def record_fork(self, space: bytes, author: bytes, seq: int) -> None:
        """A peer holds another chain of ``author`` behind the same ``seq`` (sync.md §6a):
        logged and counted (``forks_detected``); this node keeps the chain it holds."""
        log.warning("fork: author %s signed two chains in space %s (seq %d)",
                    author.hex()[:16], space.hex()[:16], seq)
        self._uncommitted["forks_detected"] += 1
        self._flush_standalone_metrics()

    def pending_count(self, space_id: bytes) -> int:
        return self._mem(space_id).pending_count

