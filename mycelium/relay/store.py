"""The relay's keyless envelope store (DESIGN.md §6, protocols/relay.md §5).

A relay hosts ciphertext it can never read. It keeps, per hosted space, the genesis, the
per-author chains of envelopes exactly as received, a bounded set of pending envelopes
(ahead of a gap, or from an author not yet known as a member), and the membership that
the space's CONTROL envelopes resolve to (:class:`~mycelium.spaces.state.SpaceState`; control
ops are signed plaintext). It never holds a group key and never decrypts: Soil assumes it
can, so it is not reused here.

Every received envelope is decoded, its signature and chain checked
(:func:`mycelium.log.validate.validate_batch`), its author checked against the control log
by :meth:`SpaceState.admission` (the one writer/admin decision Soil uses too; a removed
member's envelopes only on its pinned chain; what it stored beyond a removal's ``keep``
before the removal came is cut as Soil cuts it, one decision in :mod:`mycelium.spaces.pins`),
and charged to two storage quotas —
the space's and its author's — before it is written. What would exceed a quota is
refused (``over_quota``) and not stored. One ingest is one SQLite transaction.

Implements :class:`mycelium.sync.ports.DeltaStore`, so the unchanged
:class:`~mycelium.sync.session.SyncSession` runs against it: ``member_spaces`` is every
hosted space, and the driver passes :meth:`RelayStore.may_read` as the session's
``authorize`` so a peer is offered (and may match) only the spaces whose control log
lists it as a member.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mycelium.errors import MyceliumError
from mycelium.log import envelope as envelope_mod
from mycelium.log.envelope import Envelope, Kind
from mycelium.log.limits import (
    MAX_INGEST_BATCH,
    MAX_PENDING_PER_AUTHOR,
    MAX_PENDING_PER_SPACE,
    MAX_PENDING_PER_STRANGER,
    MAX_PENDING_STRANGERS,
    PENDING_STRANGER_TTL_MS,
)
from mycelium.log.validate import CHAIN_CONFLICTS, Head, link_pending, validate_batch
from mycelium.relay.errors import BadRequest, Forbidden, Limited, NotFound
from mycelium.spaces import pins
from mycelium.spaces.errors import SpaceError
from mycelium.spaces.genesis import Genesis, parse_genesis
from mycelium.spaces.state import WAITING_FOR_LOG, SpaceState
from mycelium.store import envelope_rows
from mycelium.sync.ports import IngestResult, VersionVector

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spaces (
  space BLOB PRIMARY KEY, genesis BLOB NOT NULL, kind TEXT NOT NULL,
  registered_by BLOB NOT NULL, registered_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS envelopes (
  space BLOB NOT NULL, author BLOB NOT NULL, seq INTEGER NOT NULL, delta_id BLOB NOT NULL,
  kind INTEGER NOT NULL, raw BLOB NOT NULL,
  PRIMARY KEY (space, author, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
  space BLOB NOT NULL, author BLOB NOT NULL, seq INTEGER NOT NULL, delta_id BLOB NOT NULL,
  reason TEXT NOT NULL, raw BLOB NOT NULL,
  PRIMARY KEY (space, author, seq)
) WITHOUT ROWID;
"""

_NO_HEAD: tuple[int, None] = (0, None)


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """Storage quotas (bytes of envelopes as received, pending ones included)."""

    space_bytes: int = 256 * 1024 * 1024
    identity_bytes: int = 64 * 1024 * 1024
    spaces_per_identity: int = 64
    max_pending: int = MAX_PENDING_PER_SPACE


@dataclass(slots=True)
class _Hosted:
    """In-memory view of one hosted space (rebuilt from the database on open)."""

    genesis: Genesis
    state: SpaceState
    heads: dict[bytes, Head] = field(default_factory=dict)
    control_authors: set[bytes] = field(default_factory=set)
    #: author -> {seq: (reason, delta_id, size)}
    pending: dict[bytes, dict[int, tuple[str, bytes, int]]] = field(default_factory=dict)
    pending_count: int = 0
    #: (author, seq) -> wall ms parked, for authors the control log does not know
    strangers: dict[tuple[bytes, int], int] = field(default_factory=dict)
    #: CONTROL envelopes stored since loading (a change may call for cuts, pins.py)
    controls_stored: int = 0
    #: authors whose chains grew in the chunk being ingested (reset per chunk)
    appended: set[bytes] = field(default_factory=set)
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class HostedSpace:
    """What the relay tells a member about a space it hosts (``list_spaces``)."""

    space: bytes
    genesis: bytes
    kind: str
    role: str


class RelayStore:
    """Keyless SQLite store of one relay (see module docstring). Not thread-safe: one
    trio thread uses it; every method is synchronous and bounded."""

    def __init__(self, conn: sqlite3.Connection, *, limits: StoreLimits | None = None,
                 wall_ms: Callable[[], int] | None = None) -> None:
        self.conn = conn
        self.limits = limits if limits is not None else StoreLimits()
        self._wall_ms = wall_ms if wall_ms is not None else (lambda: int(time.time() * 1000))
        self._spaces: dict[bytes, _Hosted] = {}
        self._author_bytes: dict[bytes, int] = {}
        self._registered: dict[bytes, int] = {}  # registrant -> spaces registered
        #: rejection reason -> count (status and tests)
        self.rejections: dict[str, int] = {}
        #: envelopes deleted by cuts of removed authors' chains (status and tests)
        self.cut_envelopes = 0
        self._load()

    @classmethod
    def open(cls, path: Path, *, limits: StoreLimits | None = None) -> RelayStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # an accepted envelope is acknowledged
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(DDL)
        if conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone() is None:
            conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        return cls(conn, limits=limits)

    def close(self) -> None:
        self.conn.close()

    # -- loading --------------------------------------------------------------------
    def _load(self) -> None:
        self._spaces.clear()
        self._author_bytes.clear()
        self._registered.clear()
        for space, genesis_raw, registrant in self.conn.execute(
                "SELECT space, genesis, registered_by FROM spaces"):
            space, registrant = bytes(space), bytes(registrant)
            genesis = parse_genesis(bytes(genesis_raw))
            hosted = _Hosted(genesis=genesis, state=SpaceState(genesis))
            controls = [envelope_mod.decode(bytes(r)) for (r,) in self.conn.execute(
                "SELECT raw FROM envelopes WHERE space=? AND kind=1", (space,))]
            hosted.state.apply_many(controls, stored=True)  # verified when they arrived
            hosted.control_authors = {e.author for e in controls}
            for author, seq, delta_id in self.conn.execute(
                    "SELECT e.author, e.seq, e.delta_id FROM (SELECT author, MAX(seq) AS top "
                    "FROM envelopes WHERE space=?1 GROUP BY author) h JOIN envelopes e "
                    "ON e.space=?1 AND e.author=h.author AND e.seq=h.top", (space,)):
                hosted.heads[bytes(author)] = (seq, bytes(delta_id))
            for author, seq, delta_id, reason, size in self.conn.execute(
                    "SELECT author, seq, delta_id, reason, length(raw) FROM pending "
                    "WHERE space=?", (space,)):
                hosted.pending.setdefault(bytes(author), {})[seq] = (reason, bytes(delta_id),
                                                                     size)
                hosted.pending_count += 1
                if not hosted.state.admits(bytes(author)):
                    hosted.strangers[(bytes(author), seq)] = self._wall_ms()
            self._spaces[space] = hosted
            self._registered[registrant] = self._registered.get(registrant, 0) + 1
        for table in ("envelopes", "pending"):
            for space, author, total in self.conn.execute(
                    f"SELECT space, author, SUM(length(raw)) FROM {table} "
                    "GROUP BY space, author"):
                owner = self._spaces.get(bytes(space))
                who = bytes(author)
                if owner is not None:
                    owner.bytes += total
                    who = owner.state.principal(who)
                self._author_bytes[who] = self._author_bytes.get(who, 0) + total

    @contextmanager
    def _tx(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            self._load()  # in-memory state may be ahead of what was rolled back
            raise
        self.conn.execute("COMMIT")

    # -- hosting --------------------------------------------------------------------
    def register(self, genesis_raw: bytes, envelopes: Sequence[bytes], registrant: bytes,
                 *, replica: bool = False) -> tuple[bytes, bool]:
        """Host a space: ``(space id, newly registered)``.

        ``genesis_raw`` must verify; ``envelopes`` (its control log with the chain
        prefixes it needs) are ingested like any batch. The registrant must be a member of
        the space afterwards, or nothing is kept (:class:`Forbidden`), unless it is a
        ``replica``: a peer relay this relay trusts to copy what it hosts. Registering a
        space already hosted ingests the envelopes only. Raises :class:`BadRequest`
        (``bad_genesis``), :class:`Forbidden` (``not_member``) or :class:`Limited`
        (``too_many_spaces``, ``over_quota``).
        """
        try:
            genesis = parse_genesis(genesis_raw)
        except SpaceError as exc:
            raise BadRequest(f"genesis does not verify: {exc}", reason="bad_genesis") from exc
        space = genesis.space_id
        if space in self._spaces:
            self.ingest(space, envelopes)
            if not replica and not self.may_read(space, registrant):
                raise Forbidden("registrant is not a member of this space")
            return space, False
        if not replica and self._registered.get(registrant, 0) >= self.limits.spaces_per_identity:
            raise Limited(f"an identity registers at most {self.limits.spaces_per_identity} "
                          "spaces here", reason="too_many_spaces", retry_after=3600)
        with self._tx():
            self.conn.execute("INSERT INTO spaces VALUES (?, ?, ?, ?, ?)",
                              (space, genesis.raw, genesis.kind, registrant, self._wall_ms()))
            self._spaces[space] = _Hosted(genesis=genesis, state=SpaceState(genesis))
            self._registered[registrant] = self._registered.get(registrant, 0) + 1
            result = IngestResult()
            for start in range(0, len(envelopes), MAX_INGEST_BATCH):
                self._ingest_chunk(space, envelopes[start:start + MAX_INGEST_BATCH], result)
            if not replica and not self._spaces[space].state.is_member(registrant):
                raise Forbidden("registrant is not a member of this space (by its control log)")
            if any(r == "over_quota" for _, r in result.rejected):
                raise Limited("the space's control log exceeds the storage quota",
                              reason="over_quota", retry_after=3600)
        log.info("hosting space %s (%s)", space.hex()[:12], genesis.kind)
        return space, True

    def hosts(self, space: bytes) -> bool:
        return space in self._spaces

    def space_ids(self) -> list[bytes]:
        return list(self._spaces)

    def add_space(self, genesis_raw: bytes) -> bytes:
        """Host a space as a replica from its verified genesis alone (what a relay does
        with the list a trusted peer relay returns); its control log comes by sync."""
        space, _ = self.register(genesis_raw, [], b"", replica=True)
        return space

    def control_envelopes(self, space: bytes) -> list[bytes]:
        """The space's CONTROL envelopes (what a registration carries, with prefixes)."""
        return [bytes(r) for (r,) in self.conn.execute(
            "SELECT raw FROM envelopes WHERE space=? AND kind=1 ORDER BY author, seq", (space,))]

    def genesis(self, space: bytes) -> bytes:
        return self._hosted(space).genesis.raw

    def space_state(self, space: bytes) -> SpaceState:
        """The membership and key epochs the space's control log resolves to (the relay's
        archiver seals archives to these members; relay/archiver.py)."""
        return self._hosted(space).state

    def may_read(self, space: bytes, member: bytes) -> bool:
        """May ``member`` (Ed25519 public key) sync ``space``: a current member, or a key a
        member delegated (``SpaceState.may_sync``, the nodes' own authorize rule)? Removed
        members are refused at once: membership is re-read on every call."""
        hosted = self._spaces.get(space)
        return hosted is not None and hosted.state.may_sync(member)

    def check_access(self, space: bytes, member: bytes) -> None:
        """Raise :class:`NotFound` / :class:`Forbidden` unless ``member`` may use ``space``."""
        if space not in self._spaces:
            raise NotFound("this relay does not host that space")
        if not self.may_read(space, member):
            raise Forbidden("not a member of this space")

    def list_spaces(self, member: bytes) -> list[HostedSpace]:
        """Every hosted space whose control log lists ``member`` (personal spaces: only
        their owner), with its genesis, so a recovering node can rejoin them."""
        out = []
        for space, hosted in sorted(self._spaces.items()):
            role = hosted.state.members.get(member)
            if role is not None:
                out.append(HostedSpace(space, hosted.genesis.raw, hosted.genesis.kind, role))
        return out

    def usage(self) -> dict[str, int]:
        return {"spaces": len(self._spaces),
                "envelopes": sum(s for h in self._spaces.values() for s, _ in h.heads.values()),
                "bytes": sum(h.bytes for h in self._spaces.values()),
                "pending": sum(h.pending_count for h in self._spaces.values())}

    def space_bytes(self, space: bytes) -> int:
        return self._hosted(space).bytes

    def author_bytes(self, identity: bytes) -> int:
        """Bytes charged to an identity (its own chains and its device keys')."""
        return self._author_bytes.get(identity, 0)

    def _hosted(self, space: bytes) -> _Hosted:
        hosted = self._spaces.get(space)
        if hosted is None:
            raise NotFound("this relay does not host that space")
        return hosted

    # -- DeltaStore -------------------------------------------------------------------
    def member_spaces(self) -> list[bytes]:
        """Every hosted space: the session's ``authorize`` narrows it per peer."""
        return list(self._spaces)

    def version_vector(self, space: bytes) -> VersionVector:
        hosted = self._spaces.get(space)
        return {a: s for a, (s, _) in hosted.heads.items()} if hosted is not None else {}

    def envelopes_since(self, space: bytes, remote: VersionVector, *, limit: int,
                        max_bytes: int) -> list[bytes]:
        """Per author ascending seq; authors that wrote control ops first."""
        hosted = self._spaces.get(space)
        if hosted is None:
            return []
        return envelope_rows.envelopes_since(self.conn, space, hosted.heads, hosted.control_authors,
                                             remote, limit=limit, max_bytes=max_bytes)

    def ingest(self, space: bytes, envelopes: Sequence[bytes]) -> IngestResult:
        """Validate and store envelopes (see module docstring). Never raises on bad input."""
        result = IngestResult()
        if space not in self._spaces:
            for _ in envelopes:
                self._reject(result, None, "unknown_space")
            return result
        for start in range(0, len(envelopes), MAX_INGEST_BATCH):
            chunk = envelopes[start:start + MAX_INGEST_BATCH]
            part = IngestResult()
            try:
                with self._tx():
                    self._ingest_chunk(space, chunk, part)
            except MyceliumError as exc:  # pragma: no cover - validation never raises these
                log.warning("ingest refused: %s", exc)
                part = IngestResult(rejected=[(None, exc.reason)] * len(chunk))
            except sqlite3.Error:
                log.exception("relay ingest failed; batch rolled back")
                part = IngestResult(rejected=[(None, "internal_error")] * len(chunk))
            result.merge(part)
        return result

    # -- ingest pipeline ----------------------------------------------------------------
    def _ingest_chunk(self, space: bytes, raws: Sequence[bytes], result: IngestResult) -> None:
        hosted = self._spaces[space]
        controls_before = hosted.controls_stored
        hosted.appended.clear()
        verdict = validate_batch(space, raws, hosted.heads, self._stored_id(space),
                                 hosted.state.pinned_head if hosted.state.has_pins else None)
        result.duplicates += len(verdict.duplicates)
        foreign: set[bytes] = set()  # removed authors whose stored chain is another one
        for delta_id, reason in verdict.rejected:
            self._reject(result, delta_id, reason)
            if reason in CHAIN_CONFLICTS and delta_id is not None:
                self._pinned_conflict(hosted, delta_id, foreign)
        over: set[bytes] = set()  # authors that hit a quota in this chunk
        for env in verdict.pending:
            self._park(space, hosted, env, "gap", result, over)
        pinned = pins.pinned_chains(hosted.state, verdict.ready)
        for env in verdict.ready:
            self._append(space, hosted, env, result, over, pinned)
        self._drain(space, hosted, result, over, foreign, controls_before)
        if hosted.controls_stored != controls_before or foreign:
            self._enforce_removals(space, hosted, foreign)

    def _enforce_removals(self, space: bytes, hosted: _Hosted, foreign: set[bytes]) -> None:
        """Cut removed members' and revoked or stopped delegates' chains back to what the
        control log keeps, exactly as Soil does (one decision: :func:`pins.plan_cuts`):
        a relay that stored envelopes beyond ``keep`` before the removal came must not
        keep serving them, or its vectors differ from every node's for good. Called in
        the chunk's transaction; the in-memory view is rebuilt from the tables after."""
        cuts = pins.plan_cuts(hosted.state, hosted.heads, self._stored_id(space), foreign)
        for cut in cuts:
            args = (space, cut.author, cut.to)
            n = self.conn.execute("DELETE FROM envelopes WHERE space=? AND author=? AND seq>?",
                                  args).rowcount
            if cut.drop_pending:
                self.conn.execute("DELETE FROM pending WHERE space=? AND author=?",
                                  (space, cut.author))
            log.warning("space %s: chain of removed author %s cut to seq %d (%d envelopes)",
                        space.hex()[:12], cut.author.hex()[:16], cut.to, n)
            self.cut_envelopes += n
        stale = pins.stale_pending(hosted.state, hosted.pending)
        for author, keep in stale.items():
            self.conn.execute("DELETE FROM pending WHERE space=? AND author=? AND seq>?",
                              (space, author, keep))
        if cuts or stale:
            self._load()  # heads, control state, pending and quotas as the tables say

    @staticmethod
    def _pinned_conflict(hosted: _Hosted, delta_id: bytes, foreign: set[bytes]) -> None:
        """A removed author's pinned head was refused as a fork or broken chain: the chain
        stored for it is another one, cut after this chunk (pins.pinned_conflict)."""
        author = pins.pinned_conflict(hosted.state, delta_id)
        if author is not None:
            foreign.add(author)

    def _stored_id(self, space: bytes) -> Callable[[bytes, int], bytes | None]:
        def lookup(author: bytes, seq: int) -> bytes | None:
            row = self.conn.execute(
                "SELECT delta_id FROM envelopes WHERE space=? AND author=? AND seq=?",
                (space, author, seq)).fetchone()
            return bytes(row[0]) if row is not None else None
        return lookup

    def _charge(self, hosted: _Hosted, env: Envelope, over: set[bytes]) -> bool:
        """Count ``env``'s bytes against both quotas; False (and nothing counted) if that
        would exceed one. An author over quota stays refused for the rest of the batch.
        The identity quota is charged to the author's principal (a device key counts for
        the identity that certified it)."""
        size = len(env.raw)
        lim = self.limits
        who = hosted.state.principal(env.author)
        if (env.author in over or hosted.bytes + size > lim.space_bytes
                or self._author_bytes.get(who, 0) + size > lim.identity_bytes):
            over.add(env.author)
            return False
        hosted.bytes += size
        self._author_bytes[who] = self._author_bytes.get(who, 0) + size
        return True

    def _uncharge(self, hosted: _Hosted, author: bytes, size: int) -> None:
        hosted.bytes -= size
        who = hosted.state.principal(author)
        self._author_bytes[who] = self._author_bytes.get(who, 0) - size

    def _append(self, space: bytes, hosted: _Hosted, env: Envelope, result: IngestResult,
                over: set[bytes], pinned: set[bytes] | None) -> bool:
        head_seq, head_id = hosted.heads.get(env.author, _NO_HEAD)
        if env.seq != head_seq + 1 or env.prev != head_id:
            self._park(space, hosted, env, "gap", result, over)
            return False
        # Who may write is decided in one place, SpaceState.admission (spaces.md §4.5),
        # exactly as Soil decides it; the relay only lacks the keys to check epochs.
        problem = hosted.state.admission(env)
        if problem == "removed_author":
            self._reject(result, env.delta_id, problem)
            return False
        if problem is not None:  # not_admin / not_member: the op naming it may come later
            self._park(space, hosted, env, problem, result, over)
            return False
        if pinned is not None and env.delta_id not in pinned:
            pin = hosted.state.pinned_head(env.author)
            if pin is not None and env.seq <= pin[0]:  # not proven on the pinned chain yet
                self._park(space, hosted, env, "pinned_chain", result, over)
                return False
        slot = hosted.pending.get(env.author, {}).get(env.seq)
        if slot is not None:  # it was held pending: already charged
            self._unpark(space, hosted, env.author, env.seq, uncharge=slot[1] != env.delta_id)
            if slot[1] != env.delta_id and not self._charge(hosted, env, over):
                self._reject(result, env.delta_id, "over_quota")
                return False
        elif not self._charge(hosted, env, over):
            self._reject(result, env.delta_id, "over_quota")
            return False
        if env.kind is Kind.CONTROL:
            try:
                hosted.state.apply(env)
            except SpaceError as exc:
                self._uncharge(hosted, env.author, len(env.raw))
                self._reject(result, env.delta_id, exc.reason)
                return False
            hosted.control_authors.add(env.author)
            hosted.controls_stored += 1
        self.conn.execute("INSERT INTO envelopes VALUES (?, ?, ?, ?, ?, ?)",
                          (space, env.author, env.seq, env.delta_id, int(env.kind), env.raw))
        hosted.heads[env.author] = (env.seq, env.delta_id)
        hosted.appended.add(env.author)
        result.accepted.append(env.delta_id)
        return True

    def _park(self, space: bytes, hosted: _Hosted, env: Envelope, reason: str,
              result: IngestResult, over: set[bytes]) -> None:
        slots = hosted.pending.setdefault(env.author, {})
        held = slots.get(env.seq)
        if held is not None:
            if held[1] == env.delta_id:
                result.duplicates += 1
                if held[0] != reason:
                    slots[env.seq] = (reason, held[1], held[2])
                    self.conn.execute("UPDATE pending SET reason=? WHERE space=? AND author=? "
                                      "AND seq=?", (reason, space, env.author, env.seq))
            else:
                self._reject(result, env.delta_id, "fork")
            return
        if hosted.state.admission(env) == "removed_author":  # beyond keep: refused for good
            if not slots:
                hosted.pending.pop(env.author, None)
            self._reject(result, env.delta_id, "removed_author")
            return
        # Bounds as Soil's (delta.md §6.1): per author, and a small pool with expiry for
        # authors the control log does not know, so strangers never take the room of
        # authors it admits.
        stranger = not hosted.state.admits(env.author)
        if stranger:
            now = self._wall_ms()
            self._expire_strangers(space, hosted, now)
            full = (len(slots) >= MAX_PENDING_PER_STRANGER or len(hosted.strangers) >= min(
                MAX_PENDING_STRANGERS, self.limits.max_pending // 10))
        else:
            full = (len(slots) >= MAX_PENDING_PER_AUTHOR
                    or hosted.pending_count >= self.limits.max_pending)
        if full:
            if not slots:
                hosted.pending.pop(env.author, None)
            self._reject(result, env.delta_id, "pending_full")
            return
        if not self._charge(hosted, env, over):
            if not slots:
                hosted.pending.pop(env.author, None)
            self._reject(result, env.delta_id, "over_quota")
            return
        slots[env.seq] = (reason, env.delta_id, len(env.raw))
        hosted.pending_count += 1
        if stranger:
            hosted.strangers[(env.author, env.seq)] = now
        self.conn.execute("INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?, ?, ?)",
                          (space, env.author, env.seq, env.delta_id, reason, env.raw))
        result.pending += 1

    def _unpark(self, space: bytes, hosted: _Hosted, author: bytes, seq: int, *,
                uncharge: bool) -> None:
        slots = hosted.pending.get(author)
        slot = slots.pop(seq, None) if slots else None
        if slot is None:
            return
        hosted.pending_count -= 1
        hosted.strangers.pop((author, seq), None)
        if uncharge:
            self._uncharge(hosted, author, slot[2])
        if not slots:
            hosted.pending.pop(author, None)
        self.conn.execute("DELETE FROM pending WHERE space=? AND author=? AND seq=?",
                          (space, author, seq))

    def _expire_strangers(self, space: bytes, hosted: _Hosted, now: int) -> None:
        """Drop strangers' pending envelopes parked longer than the TTL (oldest first)."""
        limit = now - PENDING_STRANGER_TTL_MS
        for (author, seq), parked in list(hosted.strangers.items()):
            if parked > limit:
                break
            self._unpark(space, hosted, author, seq, uncharge=True)

    def _drain(self, space: bytes, hosted: _Hosted, result: IngestResult,
               over: set[bytes], foreign: set[bytes], controls_seen: int) -> None:
        """Append pending envelopes that became contiguous or admissible; repeat while
        something moved (a control op may admit another author's envelopes). The same
        walk as Soil's: an author waiting for the control log is retried only after a
        control op was stored or its own chain grew."""
        progress = True
        rounds = 0
        while progress and hosted.pending_count and rounds < 1000:
            progress = False
            rounds += 1
            retry_members = hosted.controls_stored != controls_seen
            controls_seen = hosted.controls_stored
            for author in list(hosted.pending):
                head = hosted.heads.get(author, _NO_HEAD)
                slot = hosted.pending.get(author, {}).get(head[0] + 1)
                if slot is None:
                    continue
                if (slot[0] in WAITING_FOR_LOG and not retry_members
                        and author not in hosted.appended):
                    continue
                if slot[0] == "pinned_chain" and not self._pinned_rows(space, hosted, author,
                                                                       head[0]):
                    continue
                candidates = {seq: envelope_mod.decode(bytes(raw)) for seq, raw in
                              self.conn.execute(
                                  "SELECT seq, raw FROM pending WHERE space=? AND author=? "
                                  "AND seq>? ORDER BY seq", (space, author, head[0]))}
                ready, broken = link_pending(head, candidates)
                for env in [*ready, *broken]:  # as Soil: out of pending, then each decided
                    self._unpark(space, hosted, author, env.seq, uncharge=True)
                for env in broken:
                    self._reject(result, env.delta_id, "broken_chain")
                    self._pinned_conflict(hosted, env.delta_id, foreign)
                progress |= bool(broken)
                pinned = pins.pinned_chains(hosted.state, ready)
                for env in ready:
                    progress |= self._append(space, hosted, env, result, over, pinned)

    def _pinned_rows(self, space: bytes, hosted: _Hosted, author: bytes, head_seq: int) -> bool:
        """Whether removed ``author``'s pinned head waits among its pending rows; drops a
        pending row of a forged chain in its way (:func:`pins.pinned_pending`, as Soil)."""
        def prev_of(seq: int) -> bytes | None:
            (raw,) = self.conn.execute("SELECT raw FROM pending WHERE space=? AND author=? "
                                       "AND seq=?", (space, author, seq)).fetchone()
            return envelope_mod.decode(bytes(raw)).prev

        slots = hosted.pending.get(author, {})
        waits, drop = pins.pinned_pending(hosted.state, author, head_seq,
                                          {seq: slot[1] for seq, slot in slots.items()},
                                          prev_of)
        if drop is not None:
            self._unpark(space, hosted, author, drop, uncharge=True)
            log.info("space %s: pending envelope of %s off its pinned chain dropped",
                     space.hex()[:12], author.hex()[:16])
        return waits

    def _reject(self, result: IngestResult, delta_id: bytes | None, reason: str) -> None:
        result.rejected.append((delta_id, reason))
        self.rejections[reason] = self.rejections.get(reason, 0) + 1

